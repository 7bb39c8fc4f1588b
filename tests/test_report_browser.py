"""The report in a real browser: the first screen holds the summary table and the first
case's verdict (decision, sentence, the trusted picture with the expert's outline on it);
the section for engineers starts closed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mindlens import cases, load_model
from mindlens.render.evidence import PALETTE

from .browser import first_screen
from .tinynet import write_card


def check_first_screen(report, shot) -> dict:
    seen = first_screen(report, shot)
    assert seen["summary"] and seen["summary_rows"] >= 1, seen
    assert seen["decision"] and seen["decision_text"].startswith("The model says"), seen
    assert seen["sentence"] and seen["picture"], seen
    assert seen["outline"] == "yes", seen
    assert not seen["engineers_open"]
    return seen


def outline_pixels(shot, box, colour: str) -> int:
    """Pixels of ``colour`` inside the picture's box on the screenshot."""
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    scale = pixels.shape[1] / 1280  # device pixels per CSS pixel
    x, y, w, h = (round(v * scale) for v in box)
    crop = pixels[y:y + h, x:x + w]
    return int((np.abs(crop - np.asarray(PALETTE[colour])).sum(axis=-1) < 40).sum())


def test_first_screen_holds_summary_verdict_and_outlined_picture(tmp_path):
    clf = load_model(write_card(tmp_path))
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), bool)
    mask[3:9, 3:9] = True
    inputs = [cases.Input(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), name=f"im{i}",
                          label=i % 3, mask=mask) for i in range(3)]
    found = cases.run(clf, inputs, cases.Request(methods=["gradcam", "saliency"]))
    paths = cases.write_outputs(found, tmp_path / "out")
    shot = tmp_path / "first.png"
    seen = check_first_screen(paths["report"], shot)
    assert seen["summary_rows"] == 3
    # the expert's outline is drawn ON the trusted picture, in the colour its legend names
    from mindlens.cases import trusted_picture

    marks = trusted_picture(found[0]).marks_colour
    assert marks is not None and outline_pixels(shot, seen["picture_box"], marks) > 100


def test_printing_gives_one_page_per_case(tmp_path):
    """Print to PDF in headless Chromium: the summary page, then one page per case."""
    import re
    import shutil
    import subprocess

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    clf = load_model(write_card(tmp_path))
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    found = cases.run(clf, inputs, cases.Request(methods=["gradcam", "saliency", "cam"],
                                                 top_k=3))
    report = cases.write_outputs(found, tmp_path / "out")["report"]
    pdf = tmp_path / "report.pdf"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-pdf-header-footer", f"--print-to-pdf={pdf}", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pages = re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes())
    assert len(pages) == 1 + len(found)
