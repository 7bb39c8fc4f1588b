"""The append-only record of finished work: one JSON object per line, each line written
whole with one ``write`` call, flushed and fsync'd before the work counts as done.

Every row identifies itself (its key fields, e.g. method, input id and the input's content
hash), so a row is never attributed to the wrong input. Reading repairs what a kill or a
full disk can leave: a torn last line (no newline, or not JSON) is cut off the file and its
work is done again; a row whose key was already seen is ignored. A failed append is rolled
back to the previous end of the file, and the error says how many rows were kept.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import RunWriteError

Row = dict[str, Any]


class Journal:
    """``Journal(path, key=("method", "input"))``: :meth:`load` the finished rows, then
    :meth:`append` batches of new ones. With ``path=None`` the rows stay in memory (a run
    without an output folder)."""

    def __init__(self, path: str | Path | None, key: Sequence[str]) -> None:
        self.path = Path(path) if path is not None else None
        self.key = tuple(key)
        self.rows: list[Row] = []
        self._keys: set[tuple[Any, ...]] = set()

    def key_of(self, row: Row) -> tuple[Any, ...]:
        return tuple(row.get(k) for k in self.key)

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self._keys

    def load(self) -> list[Row]:
        """The complete rows on disk (first of each key, in file order); a torn tail is
        truncated away so the next append starts on a fresh line."""
        self.rows, self._keys = [], set()
        if self.path is None or not self.path.exists():
            return self.rows
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # everything after the last newline is torn
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a damaged line: its work is redone
            if isinstance(row, dict):
                self._take(row)
        if end < len(data):
            try:
                with self.path.open("r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            except OSError as e:
                raise RunWriteError(self.path, e, "its torn last line could not be cut "
                                    "off") from None
        return self.rows

    def _take(self, row: Row) -> bool:
        k = self.key_of(row)
        if k in self._keys:
            return False
        self._keys.add(k)
        self.rows.append(row)
        return True

    def append(self, rows: Iterable[Row]) -> None:
        """Add ``rows`` durably: one write of whole lines, then fsync. Rows whose key is
        already recorded are skipped. On failure the file is cut back to where it was."""
        new = [r for r in rows if self.key_of(r) not in self._keys]
        if not new:
            return
        if self.path is None:
            for r in new:
                self._take(r)
            return
        data = "".join(json.dumps(r) + "\n" for r in new).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:
                with contextlib.suppress(OSError):  # else the next load() drops the tail
                    os.ftruncate(fd, start)
                raise RunWriteError(self.path, e, f"the {len(self.rows)} rows finished "
                                    f"before are kept") from None
        finally:
            os.close(fd)
        for r in new:
            self._take(r)
