"""``evaluate`` resumes only the same run: another model, other data or other settings in
the same folder are refused in one line (API and CLI); kills at random instants (SIGKILL
by the process's own id) and a full disk lose no finished row and duplicate none: the
final files equal an uninterrupted run's, the measured times aside. The 20-kill version
is ``benchmarks/kills.py``."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mindlens.cli import app
from mindlens.evaluate import evaluate
from mindlens.runs import RunConflictError, RunWriteError
from mindlens.runs import atomic as atomic_module
from mindlens.runs import journal as journal_module

from ..test_concurrency import train_mode_classifier
from .killable import METHODS, SETTINGS, comparable_files, inputs, kill_loop, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def timed_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], float]:
    """The final files of one uninterrupted run, and how long its work took."""
    out = tmp_path_factory.mktemp("uninterrupted")
    start = time.perf_counter()
    run(out)
    return comparable_files(out), time.perf_counter() - start


@pytest.fixture(scope="module")
def reference(timed_reference) -> dict[str, str]:
    return timed_reference[0]


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "--overwrite" in text
    return text


def test_another_model_data_or_settings_is_refused(tmp_path: Path) -> None:
    clf, x, masks = inputs()
    small = {**SETTINGS, "sensitivity_samples": 0, "sanity_layers": 0}
    evaluate(clf, x[:3], masks[:3], ["saliency"], tmp_path, **small)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = train_mode_classifier()
    with torch.no_grad():
        other.module.head[2].bias += 1
    cases = {
        "another model (weights": lambda: evaluate(other, x[:3], masks[:3], ["saliency"],
                                                   tmp_path, **small),
        "other data (3 inputs in the folder's run, 2 now)": lambda: evaluate(
            clf, x[:2], masks[:2], ["saliency"], tmp_path, **small),
        "other data (input 3, 'image_00002': its content differs)": lambda: evaluate(
            clf, x[[0, 1, 3]], masks[:3], ["saliency"], tmp_path, **small),
        "other settings (methods.gradcam is new)": lambda: evaluate(
            clf, x[:3], masks[:3], ["saliency", "gradcam"], tmp_path, **small),
        "other settings (steps was 4, now 5)": lambda: evaluate(
            clf, x[:3], masks[:3], ["saliency"], tmp_path, **{**small, "steps": 5}),
        "other settings (methods.saliency.times_input was false, now true)": lambda: evaluate(
            clf, x[:3], masks[:3], ["saliency"], tmp_path,
            params={"saliency": {"times_input": True}}, **small),
    }
    for expected, call in cases.items():
        with pytest.raises(RunConflictError) as err:
            call()
        assert expected in one_line(err.value), (expected, str(err.value))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched
    again = evaluate(clf, x[:3], masks[:3], ["saliency"], tmp_path, **small)  # same: resumes
    assert again.rows[0]["figures"]["images"] == 3
    evaluate(clf, x[:2], masks[:2], ["saliency"], tmp_path, overwrite=True, **small)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(r)["image"] for r in lines] == ["image_00000", "image_00001"]


def test_cli_demo_n_then_other_n_is_refused_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["evaluate", "--demo", "retina", "--methods", "saliency", "--steps", "2",
            "--no-colour-check", "--out", str(tmp_path)]
    first = runner.invoke(app, [*base, "--n", "2"])
    assert first.exit_code == 0, first.output
    for extra, expected in ((["--n", "1"], "other data (2 inputs in the folder's run, 1 now)"),
                            (["--n", "2", "--steps", "3"], "other settings (steps was 2, now 3)")):
        args = [*base, *extra]
        args[args.index("--steps") + 1] = extra[-1] if "--steps" in extra else "2"
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "--overwrite" in lines[0], lines
    res = runner.invoke(app, [*base, "--n", "1", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 1


def test_random_kills_lose_and_duplicate_nothing(tmp_path: Path, timed_reference) -> None:
    reference, seconds = timed_reference
    out = tmp_path / "killed"
    # kills within the first half of a whole run's time: each lands while it works
    counts = kill_loop(out, kills=2, seed=1, max_delay=seconds / 2)
    assert counts["kills"] == 2
    assert comparable_files(out) == reference


def test_full_disk_loses_no_finished_row(tmp_path: Path, monkeypatch, reference) -> None:
    clf, x, masks = inputs()
    journal = tmp_path / "results.jsonl"
    calls = {"n": 0, "full": False}
    real_write = journal_module.os.write

    def fills_up(fd: int, data) -> int:
        if not journal.exists() or os.fstat(fd).st_ino != journal.stat().st_ino:
            return real_write(fd, data)  # someone else's file
        calls["n"] += 1
        if calls["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        if calls["n"] == 3:  # the third batch: half its bytes, then the disk is full
            calls["full"] = True
            return real_write(fd, bytes(data[: len(data) // 2]))
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", fills_up)
    with pytest.raises(RunWriteError, match="No space left on device; the 4 rows finished"):
        evaluate(clf, x, masks, METHODS, tmp_path, **SETTINGS)
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 4
    monkeypatch.setattr(journal_module.os, "write", real_write)

    real_replace = atomic_module.os.replace

    def no_room(*_: object) -> None:  # the disk fills while the final CSV is written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "replace", no_room)
    with pytest.raises(RunWriteError, match=r"results\.csv: No space left on device"):
        evaluate(clf, x, masks, METHODS, tmp_path, **SETTINGS)
    assert not (tmp_path / "results.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(atomic_module.os, "replace", real_replace)
    evaluate(clf, x, masks, METHODS, tmp_path, **SETTINGS)
    assert comparable_files(tmp_path) == reference
