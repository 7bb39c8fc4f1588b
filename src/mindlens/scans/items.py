"""What a scan reads: the image list (a folder, optionally one sub-folder per class, or a
CSV list) and, per image, its label, its mask and its content hash."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..evaluate import IMAGE_SUFFIXES
from ..runs import file_hash


@dataclass(frozen=True)
class Item:
    """One image of a scan: ``id`` (its path relative to the data folder or as the CSV
    gives it), the file, its label (folder name or CSV column; ``None`` when unknown), its
    mask file (or ``None``) and the SHA-256 of the image file."""

    id: str
    path: str
    label: str | None
    mask: str | None
    sha256: str


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower()
                  in IMAGE_SUFFIXES)


def _masks(masks: Path | None) -> dict[str, Path]:
    if masks is None:
        return {}
    if not masks.is_dir():
        raise InputError(f"{masks} is not a folder of masks")
    found = {}
    for p in sorted(masks.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(p.stem, p)
    return found


def collect(data: str | Path, masks: str | Path | None = None, threads: int = 4
            ) -> list[Item]:
    """The items of ``data``: a folder (its images, unlabelled, then each sub-folder's
    images labelled by the sub-folder's name), or a CSV file with a ``path`` column and
    optional ``label`` and ``mask`` columns (relative paths are relative to the CSV). Masks
    from ``masks`` are matched by file stem. Files are hashed in ``threads`` threads."""
    data = Path(data)
    by_stem = _masks(Path(masks) if masks is not None else None)
    entries: list[tuple[str, Path, str | None, Path | None]] = []
    if data.is_dir():
        for p in _images(data):
            entries.append((p.name, p, None, by_stem.get(p.stem)))
        for sub in sorted(d for d in data.iterdir() if d.is_dir()):
            for p in _images(sub):
                entries.append((f"{sub.name}/{p.name}", p, sub.name, by_stem.get(p.stem)))
    elif data.is_file() and data.suffix.lower() == ".csv":
        with data.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise InputError(f"{data} needs a 'path' column (and optionally 'label', "
                                 f"'mask'); it has {reader.fieldnames}")
            for n, row in enumerate(reader, start=2):
                if not row.get("path"):
                    raise InputError(f"{data} line {n}: the path is empty")
                p = Path(row["path"])
                p = p if p.is_absolute() else data.parent / p
                m = row.get("mask") or None
                mp = (Path(m) if Path(m).is_absolute() else data.parent / m) if m else \
                    by_stem.get(p.stem)
                entries.append((row["path"], p, row.get("label") or None, mp))
    else:
        raise InputError(f"--data must be a folder of images or a .csv list, got {data}")
    if not entries:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {data}")
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{data} lists {dup!r} twice: every image must appear once")
    for _, p, _, m in entries:
        if not p.is_file():
            raise InputError(f"{p} does not exist (listed in {data})")
        if m is not None and not Path(m).is_file():
            raise InputError(f"the mask {m} does not exist (listed in {data})")
    with ThreadPoolExecutor(threads) as pool:
        hashes = list(pool.map(file_hash, [e[1] for e in entries]))
    return [Item(i, str(p), label, str(m) if m is not None else None, h)
            for (i, p, label, m), h in zip(entries, hashes, strict=True)]
