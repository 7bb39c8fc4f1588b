"""``--engine ray``: two actors on a local Ray instance give the local engine's store bit
for bit (CPU, one thread each), and a worker SIGKILLed by its process id mid-run is
restarted, its batch retried, and nothing is lost or written twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from mindlens import scan
from mindlens.scans import read_index, read_maps

from .data import SHORTCUT_CARD, write_images
from .test_scan import comparable

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("one_thread")
METHODS = ["gradcam", "lrp"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_equals_local_and_survives_a_killed_worker(local_ray, tmp_path: Path) -> None:
    flags = write_images(tmp_path / "data", 12)
    images = tmp_path / "data" / "images"
    local = scan(SHORTCUT_CARD, images, METHODS, tmp_path / "local", batch_size=2)
    killed: list[int] = []
    seen: list[list[int]] = []

    def kill_one(status) -> None:
        seen.append(status.worker_pids)
        if not killed:  # after the first batch: SIGKILL a worker mid-run
            killed.append(status.worker_pids[0])
            os.kill(status.worker_pids[0], signal.SIGKILL)

    remote = scan(SHORTCUT_CARD, images, METHODS, tmp_path / "ray", batch_size=2,
                  engine="ray", workers=2, progress=kill_one)
    assert len(seen[0]) == 2 and killed and remote.computed == local.computed == len(flags)
    lines = (tmp_path / "ray" / "index.jsonl").read_text().splitlines()
    assert len(lines) == len(flags)  # nothing lost, nothing twice
    assert comparable(tmp_path / "ray") == comparable(tmp_path / "local")
    for m in METHODS:
        assert np.array_equal(read_maps(tmp_path / "ray", m), read_maps(tmp_path / "local", m))
    assert {r["id"] for r in read_index(tmp_path / "ray")} == set(flags)
