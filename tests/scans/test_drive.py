"""The scan's writer: results written in order while the next batch is explained, one
write in flight, failures on either side stop the scan with the write in flight done."""

from __future__ import annotations

import threading
import time

import pytest

from mindlens.scans.batch import BatchResult
from mindlens.scans.engines import ScanStatus, drive


def results(n: int, fail_at: int | None = None, log: list | None = None):
    for k in range(n):
        if k == fail_at:
            raise RuntimeError("the model failed")
        if log is not None:
            log.append(("explained", k))
        yield BatchResult(k * 2, {}, [{"position": k * 2}, {"position": k * 2 + 1}])


def test_writes_in_order_overlapping_the_next_batch():
    log: list = []
    seen: list[ScanStatus] = []

    def write(r: BatchResult) -> None:
        time.sleep(0.05)  # a slow store: the next batch is explained meanwhile
        log.append(("written", r.start // 2, threading.current_thread().name))

    new = drive(results(3, log=log), write, 4, 10, seen.append, lambda: [1])
    assert new == 6
    assert [e[1] for e in log if e[0] == "written"] == [0, 1, 2]
    assert all(e[2].startswith("mindlens-store") for e in log if e[0] == "written")
    # batch 1 was explained before batch 0 was written
    assert log.index(("explained", 1)) < next(i for i, e in enumerate(log)
                                               if e[0] == "written")
    assert [s.done for s in seen] == [6, 8, 10]


def test_a_failing_model_leaves_the_write_in_flight_finished():
    written: list[int] = []

    def write(r: BatchResult) -> None:
        time.sleep(0.05)
        written.append(r.start)

    with pytest.raises(RuntimeError, match="model failed"):
        drive(results(5, fail_at=2), write, 0, 10, None, lambda: [])
    assert written == [0, 2]


def test_a_failing_store_stops_the_scan():
    written: list[int] = []

    def write(r: BatchResult) -> None:
        if r.start == 2:
            raise OSError("disk full")
        written.append(r.start)

    with pytest.raises(OSError, match="disk full"):
        drive(results(5), write, 0, 10, None, lambda: [])
    assert written == [0]
