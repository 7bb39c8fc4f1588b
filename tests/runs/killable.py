"""A small evaluation that a test kills at random instants and starts again.

``python -m tests.runs.killable OUT`` evaluates a fixed tiny train-mode model (BatchNorm,
Dropout, spectral norm) on 8 fixed random images into OUT; :func:`kill_loop` runs it as a
subprocess, SIGKILLs it by its own process id at random moments, restarts it until one
run finishes, and :func:`comparable_files` reads the final files without the measured
times (the only fields that differ between two runs on purpose).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["saliency", "gradcam"]
SETTINGS: dict[str, Any] = {"steps": 4, "sensitivity_samples": 2, "sanity_layers": 1,
                            "batch_size": 2}
TIMING = ("ms_per_image",)


def inputs(n: int = 8) -> tuple[Any, torch.Tensor, list[torch.Tensor]]:
    from tests.test_concurrency import train_mode_classifier

    clf = train_mode_classifier()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 3, 16, 16, generator=g)
    masks = [torch.rand(16, 16, generator=g) > 0.7 for _ in range(n)]
    return clf, x, masks


def run(out: Path, n: int = 8, announce: bool = False) -> None:
    from mindlens.evaluate import evaluate

    torch.set_num_threads(1)
    clf, x, masks = inputs(n)
    if announce:
        print("running", flush=True)
    evaluate(clf, x, masks, METHODS, out, **SETTINGS)


def kill_loop(out: Path, kills: int, n: int = 8, seed: int = 0, max_delay: float = 2.0,
              timeout: float = 600.0) -> dict[str, Any]:
    """Start the run, SIGKILL it ``kills`` times at a random moment up to ``max_delay``
    seconds after it has started working, then let it finish; return the counts."""
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done_kills, rows_at_kill, starts = 0, [], 0
    while True:
        starts += 1
        proc = subprocess.Popen([sys.executable, "-m", "tests.runs.killable", str(out),
                                 str(n)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if done_kills < kills:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"running":  # imports done, inputs made
                _, stderr = proc.communicate(timeout=timeout)
                raise RuntimeError(f"the run failed: {stderr.decode()[-2000:]}")
            time.sleep(rng.uniform(0, max_delay))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()  # type: ignore[union-attr]
                done_kills += 1
                journal = out / "results.jsonl"
                rows_at_kill.append(journal.read_bytes().count(b"\n")
                                    if journal.exists() else 0)
                continue
        _, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the run failed: {stderr.decode()[-2000:]}")
        return {"kills": done_kills, "starts": starts, "rows_at_kill": rows_at_kill}


def comparable_files(out: Path) -> dict[str, str]:
    """The journal, the CSV and the criteria table with the measured times taken out."""
    lines = []
    for line in (out / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        for k in TIMING:
            row.pop(k)
        lines.append(json.dumps(row))
    rows = list(csv.reader(io.StringIO((out / "results.csv").read_text())))
    keep = [i for i, c in enumerate(rows[0]) if c not in TIMING]
    table = json.loads((out / "criteria.json").read_text())
    for row in table["rows"]:
        for k in TIMING:
            row["figures"].pop(k, None)
        for part in ("measured", "grades"):
            row[part].pop("real-time capability", None)
    return {"results.jsonl": "\n".join(lines),
            "results.csv": "\n".join(",".join(r[i] for i in keep) for r in rows),
            "criteria.json": json.dumps(table, sort_keys=True)}


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 8, announce=True)
