"""`mindlens demo` writes a report that shows every method on every demo case."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from mindlens import methods
from mindlens.cli import app


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "report.html"


def test_every_method_has_a_panel_for_every_case(demo_report):
    html = demo_report.read_text()
    cases = html.count('<section class="item">')
    assert cases == 4
    shown = re.findall(r'<figure class="panel" data-method="([a-z_]+)"', html)
    for name in methods.names():
        if name == "mace":  # a unit for the retina model only; both classes on a wrong call
            assert shown.count(name) in (3, 4)
        else:
            assert shown.count(name) == 4, name
    assert "Expert marks" in html and "no concept unit is bundled" in html


def test_screenshot_shows_the_panels(demo_report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,3000", f"--screenshot={shot}",
                    demo_report.as_uri()], check=True, capture_output=True, timeout=120)
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    # the fundus images are red-orange: a rendered page has many strongly red pixels (an
    # unrendered one: none). How many depends on the maps over the images: 3.7 % with the
    # localising retina model, whose maps leave most of each fundus dark, above 5 % before
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 120) & (pixels[..., 2] < 90)
    assert red.mean() > 0.02
