"""A tiny scanned store and its audit for tests of the audit's readers and views: 20
diseased demo retina images (5 of them with the clinic's marker), Grad-CAM maps of the
shortcut model at 32x32, with lesion masks. About 3 s on one core."""

from __future__ import annotations

from pathlib import Path

from mindlens import audit, scan

from ..scans.data import SHORTCUT_CARD, write_images


def tiny_audit(root: Path) -> tuple[Path, Path, dict]:
    """Write ``root/store`` and ``root/audit``; return both and the audit result."""
    write_images(root, 40, diseased_only=True)
    scan(SHORTCUT_CARD, root / "images", ["gradcam"], root / "store", masks=root / "masks",
         target="label", size=32, batch_size=20)
    result = audit(root / "store", root / "audit", region="lesion")
    return root / "store", root / "audit", result
