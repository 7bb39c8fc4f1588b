#!/usr/bin/env python3
"""Kill an evaluation 20 times at random instants (SIGKILL by its own process id), let it
finish, and compare its final files with an uninterrupted run's (issue #11, "Must show:
resume"); then the same with a full disk injected into the journal's writes.

    PYTHONPATH=src:. python benchmarks/kills.py [--kills 20] [--images 40] [--json OUT.json]

The run is ``tests/runs/killable.py`` (a train-mode model with BatchNorm, Dropout and
spectral norm; 40 images; saliency and Grad-CAM with every metric). Compared: the journal
``results.jsonl``, ``results.csv`` and ``criteria.json``, each without the measured
milliseconds per image (the one field that differs between any two runs). Exit code 0
when all are equal, with no row lost or duplicated.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.runs.killable import comparable_files, kill_loop, run  # noqa: E402

from mindlens.runs import RunWriteError  # noqa: E402
from mindlens.runs import journal as journal_module  # noqa: E402


def full_disk_run(out: Path, n: int, fail_at: int) -> int:
    """Run until the ``fail_at``-th journal write hits a full disk (half its bytes
    written), then run again on a healthy disk; return the rows kept after the failure."""
    real = os.write
    journal = out / "results.jsonl"
    seen = {"n": 0, "full": False}

    def write(fd: int, data: bytes) -> int:
        if not journal.exists() or os.fstat(fd).st_ino != journal.stat().st_ino:
            return real(fd, data)
        seen["n"] += 1
        if seen["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        if seen["n"] == fail_at:
            seen["full"] = True
            return real(fd, bytes(data[: len(data) // 2]))
        return real(fd, data)

    journal_module.os.write = write  # type: ignore[assignment]
    try:
        run(out, n)
        raise AssertionError("the injected full disk was not reported")
    except RunWriteError:
        pass
    finally:
        journal_module.os.write = real  # type: ignore[assignment]
    kept = journal.read_bytes().count(b"\n")
    run(out, n)
    return kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=40, help="images (batches of 2)")
    ap.add_argument("--max-delay", type=float, default=1.5,
                    help="longest wait after the run starts working before a kill (s)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mindlens-kills-"))
    run(work / "reference", args.images)
    reference = comparable_files(work / "reference")
    counts = kill_loop(work / "killed", args.kills, args.images, seed=args.seed,
                       max_delay=args.max_delay)
    killed_equal = comparable_files(work / "killed") == reference
    kept = full_disk_run(work / "full", args.images, fail_at=3)
    full_equal = comparable_files(work / "full") == reference
    rows = reference["results.jsonl"].count("\n") + 1
    report = {**counts, "rows": rows, "killed_equal": killed_equal,
              "full_disk_rows_kept": kept, "full_disk_equal": full_equal}
    print(f"{counts['kills']} SIGKILLs over {counts['starts']} starts (rows on disk at each "
          f"kill: {counts['rows_at_kill']}); final files equal to the uninterrupted run "
          f"(times aside): {killed_equal}")
    print(f"full disk at the 3rd journal write: {kept} rows kept, after the rerun equal to "
          f"the uninterrupted run: {full_equal} ({rows} rows)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if killed_equal and full_equal else 1


if __name__ == "__main__":
    sys.exit(main())
