"""`mindlens demo` writes a report that shows every method on every demo case."""

from __future__ import annotations

import re

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
    cases = html.count('<section class="item"')
    assert cases == 4
    shown = re.findall(r'<figure class="panel" data-method="([a-z_]+)"', html)
    for name in methods.names():
        if name == "mace":  # a unit for the retina model only; both classes on a wrong call
            assert shown.count(name) in (3, 4)
        else:
            assert shown.count(name) == 4, name
    assert "Expert marks" in html and "no concept unit is bundled" in html


def test_first_screen_shows_the_verdict(demo_report, tmp_path):
    """Read as the physician: the first screen holds the summary table and the first
    case's verdict, with the lesion outline on the trusted picture."""
    from ..test_report_browser import check_first_screen

    seen = check_first_screen(demo_report, tmp_path / "first.png")
    assert seen["summary_rows"] == 4
    assert "lesion" in seen["sentence_text"]


def test_the_shortcut_case_says_where_the_evidence_lies(demo_report):
    html = demo_report.read_text()
    last = html.split('<section class="item"')[4].split("<details")[0]
    assert "The model was wrong" in last
    # the verdict sentence speaks of the corner marker, with a measured share
    assert re.search(r"\d+% of the evidence lies on the corner marker, which covers", last)
