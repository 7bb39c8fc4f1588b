"""The pieces of :mod:`mindlens.runs`: the journal (torn tails, duplicates, a full disk),
atomic files, and the one-line difference between two manifests."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import mindlens
from mindlens.runs import (
    Journal,
    RunConflictError,
    RunWriteError,
    difference,
    input_hash,
    make_manifest,
    model_fingerprint,
    open_run,
    weights_hash,
    write_atomic,
)
from mindlens.runs import journal as journal_module

KEY = ("method", "image")


def rows(n: int, method: str = "m") -> list[dict]:
    return [{"method": method, "image": f"i{k}", "value": k / 3} for k in range(n)]


def test_journal_appends_and_reloads_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path / "r.jsonl", KEY)
    assert j.load() == []
    j.append(rows(3))
    j.append(rows(2) + rows(1, "other"))  # the two already recorded are skipped
    again = Journal(tmp_path / "r.jsonl", KEY).load()
    assert again == rows(3) + rows(1, "other")
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 4


def test_torn_last_row_is_cut_off_and_redone(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    j = Journal(path, KEY)
    j.append(rows(2))
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"method": "m", "image": "i2", "val')  # a kill in the middle of a write
    j = Journal(path, KEY)
    assert j.load() == rows(2)
    assert path.read_bytes() == good  # cut back, so the next append starts a fresh line
    j.append(rows(3))
    assert Journal(path, KEY).load() == rows(3)


def test_complete_json_without_newline_is_also_torn(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rows(1)[0]) + "\n" + json.dumps(rows(2)[1]))
    assert Journal(path, KEY).load() == rows(1)


def test_full_disk_keeps_every_finished_row(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "r.jsonl"
    j = Journal(path, KEY)
    j.append(rows(2))
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd: int, data) -> int:  # writes part of the line, then the disk fills
        monkeypatch.setattr(journal_module.os, "write", full)
        return real(fd, bytes(data[: len(data) // 2]))

    def full(fd: int, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full)
    with pytest.raises(RunWriteError, match="No space left on device; the 2 rows finished"):
        j.append(rows(4)[2:])
    assert path.read_bytes() == before  # the half-written rows are rolled back
    monkeypatch.setattr(journal_module.os, "write", real)
    j.append(rows(4)[2:])
    assert Journal(path, KEY).load() == rows(4)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "table.csv"
    write_atomic(target, "old\n")
    assert oct(target.stat().st_mode & 0o777) != "0o600"  # the umask, not mkstemp's 0600

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunWriteError, match=r"could not write .*table\.csv: No space left"):
        write_atomic(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no temp left


def test_fingerprints_follow_content() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert weights_hash(a) != weights_hash(b)
    b.load_state_dict(a.state_dict())
    assert weights_hash(a) == weights_hash(b)
    t = torch.arange(6.0)
    assert input_hash(t) == input_hash(t.clone()) != input_hash(t.reshape(2, 3))
    assert input_hash(None) == "none"


def test_black_box_fingerprint_names_its_source() -> None:
    def scores(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]

    clf = mindlens.Classifier(mindlens.BlackBox(scores), (2, 2), 1, name="bb")
    fp = model_fingerprint(clf)
    assert fp["source"] == {"callable": "fn=scores, outputs=logits"}
    assert model_fingerprint(mindlens.Classifier(nn.Linear(4, 2), (2, 2), 1))["source"] is None


def manifest(model: nn.Module, n: int = 3, steps: int = 5) -> dict:
    clf = mindlens.Classifier(model, (2, 2), 1, name="m")
    data = [{"id": f"i{k}", "sha256": input_hash(torch.full((2,), float(k)))}
            for k in range(n)]
    return make_manifest("evaluate", model_fingerprint(clf), data, {"steps": steps})


def test_difference_names_model_data_and_settings() -> None:
    net = nn.Linear(4, 2)
    base = manifest(net)
    assert difference(base, manifest(net)) is None
    assert difference(base, manifest(nn.Linear(4, 2))).startswith("another model (weights ")
    assert difference(base, manifest(net, n=2)) == \
        "other data (3 inputs in the folder's run, 2 now)"
    assert difference(base, manifest(net, steps=9)) == "other settings (steps was 5, now 9)"
    other = manifest(net)
    other["data"][1]["sha256"] = "0" * 64
    assert difference(base, other) == "other data (input 2, 'i1': its content differs)"


def test_open_run_resumes_refuses_or_overwrites(tmp_path: Path) -> None:
    net = nn.Linear(4, 2)
    run = open_run(tmp_path, manifest(net), "r.jsonl", KEY, ["final.csv"])
    assert not run.resumed
    run.journal.append(rows(2))
    (tmp_path / "final.csv").write_text("x")
    (tmp_path / "mine.txt").write_text("user file")
    run = open_run(tmp_path, manifest(net), "r.jsonl", KEY, ["final.csv"])
    assert run.resumed and run.journal.rows == rows(2)
    with pytest.raises(RunConflictError) as err:
        open_run(tmp_path, manifest(net, steps=6), "r.jsonl", KEY, ["final.csv"])
    assert str(err.value) == (f"{tmp_path} holds a run with other settings (steps was 5, now "
                              f"6): give --overwrite to replace it, or another --out folder")
    run = open_run(tmp_path, manifest(net, steps=6), "r.jsonl", KEY, ["final.csv"],
                   overwrite=True)
    assert not run.resumed and run.journal.rows == []
    assert not (tmp_path / "final.csv").exists() and (tmp_path / "mine.txt").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"]["steps"] == 6


def test_results_without_manifest_are_not_adopted(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text(json.dumps(rows(1)[0]) + "\n")
    with pytest.raises(RunConflictError, match="results but no manifest"):
        open_run(tmp_path, manifest(nn.Linear(4, 2)), "r.jsonl", KEY)
    with pytest.raises(mindlens.InputError, match="is a file, not a folder"):
        open_run(tmp_path / "r.jsonl", manifest(nn.Linear(4, 2)), "r.jsonl", KEY)
