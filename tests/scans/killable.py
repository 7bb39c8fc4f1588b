"""A scan that a test kills at random instants and starts again.

``python -m tests.scans.killable DATA OUT`` scans DATA (a folder written by
:func:`tests.scans.data.write_images`) with the demo shortcut model, two methods and
batches of two, into OUT; it prints ``running`` once the store is open.
"""

from __future__ import annotations

import sys
from pathlib import Path

METHODS = ["gradcam", "lrp"]
BATCH = 2


def run(data: Path, out: Path, announce: bool = False) -> None:
    import torch

    from mindlens import scan

    from .data import SHORTCUT_CARD

    torch.set_num_threads(1)
    said = []

    def progress(_status: object) -> None:
        if announce and not said:
            print("running", flush=True)
            said.append(1)

    scan(SHORTCUT_CARD, data / "images", METHODS, out, masks=data / "masks",
         batch_size=BATCH, progress=progress)


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), announce=True)
