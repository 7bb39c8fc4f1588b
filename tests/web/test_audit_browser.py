"""The audit view in headless Chromium: log in with the token link, wait for the store to
be audited, see the scatter, click a point (its image with the map, its index row), hide
the map, click a strategy (its mean map and a grid of typical images), open one of them,
and reload the shared link. Skips when Chromium, chromedriver or Selenium is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..browser import driver, served
from .test_browser import _until

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytestmark = pytest.mark.usefixtures("one_thread")
TOKEN = "browser-t0ken"


@pytest.fixture(scope="module")
def server(tiny_audit: tuple[Path, Path, dict]):
    from mindlens.web import create_app

    store, _, result = tiny_audit
    app = create_app({}, audits=[store], token=TOKEN)  # audited by the server as it starts
    with served(app) as url:
        yield url, result


def _loaded(d: Any, css: str, width: int | None) -> bool:
    """Whether every image matching ``css`` has loaded (at ``width`` pixels if given)."""
    return bool(d.execute_script(
        "const a = [...document.querySelectorAll(arguments[0])];"
        "return a.length > 0 && a.every((i) => i.complete && i.naturalWidth > 0"
        " && (arguments[1] === null || i.naturalWidth === arguments[1]));", css, width))


def test_audit_view_end_to_end(server) -> None:
    from selenium.webdriver.common.by import By

    url, result = server
    cls, c = next(iter(result["classes"].items()))
    d = driver((1280, 1000))
    try:
        d.get(f"{url}login?token={TOKEN}")  # sets the cookie; / leads to /audit
        _until(d, lambda: "/audit" in d.current_url, "the audit page")
        _until(d, lambda: d.find_elements(By.CSS_SELECTOR, "#scatter circle"), "the scatter")
        dots = d.find_elements(By.CSS_SELECTOR, "#scatter circle")
        assert len(dots) == len(c["embedding_2d"]["positions"])
        assert {x.get_attribute("data-cluster") for x in dots} == {str(i) for i in range(c["k"])}
        assert _attr(d, "#classes button.sel", "data-cls") == cls
        assert _text(d, "#flags")  # the flags in words, or that there are none
        # click a point: its image with the map, its index row
        dot = dots[len(dots) // 2]
        dot.click()
        _until(d, lambda: "point=" in d.current_url, "the point in the URL")
        pos = d.current_url.split("point=")[1].split("&")[0]
        row = next(r for r in c["rows"] if str(r["position"]) == pos)
        _until(d, lambda: _text(d, "#detail h2") == row["id"], "the point's detail")
        _until(d, lambda: _loaded(d, "#picture", 320), "its image with the map")
        assert _attr(d, "#scatter circle.sel", "data-position") == pos
        detail = _text(d, "#detail")
        assert row["predicted_name"] in detail and "the model says" in detail
        assert "Grad-CAM" in detail and "the expert's marks" in detail  # map and marks legend
        # hide the map
        d.find_element(By.ID, "overlay").click()
        _until(d, lambda: _attr(d, "#picture", "data-overlay") == "0",
               "the image without the map")
        assert "overlay=0" in d.current_url
        # click a strategy: its mean map and a grid of its most typical images
        k = max(range(c["k"]), key=lambda i: c["clusters"][i]["size"])
        d.find_element(By.CSS_SELECTOR, f"#strategies button[data-cluster='{k}']").click()
        _until(d, lambda: f"Strategy {k + 1}:" in _text(d, "#detail h2"), "the strategy")
        want = min(8, c["clusters"][k]["size"])
        _until(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "#typical img")) == want
               and _loaded(d, "#typical img", 112), "its typical images")
        _until(d, lambda: _loaded(d, "#strategy-mean", None), "its mean map")
        assert f"{c['clusters'][k]['size']} images" in _text(d, "#detail h2")
        if c["k"] > 1:
            assert d.find_elements(By.CSS_SELECTOR, "#scatter circle.faded")
        # open a typical image from the grid
        target = _attr(d, "#typical button", "data-position")
        d.find_element(By.CSS_SELECTOR, f"#typical button[data-position='{target}']").click()
        _until(d, lambda: f"point={target}" in d.current_url, "the typical image opened")
        _until(d, lambda: _loaded(d, "#picture", 320), "its picture")
        # the shared link reproduces the view
        link = d.current_url
        d.get("about:blank")
        d.get(link)
        _until(d, lambda: _loaded(d, "#picture", 320), "the same image again")
        assert _attr(d, "#scatter circle.sel", "data-position") == target
        assert not _text(d, "#status")
    finally:
        d.quit()


def _text(d: Any, css: str) -> str:
    """The text of the first element matching ``css`` (read in one step in the page: the
    view re-renders while the test waits, so a found element may be gone a moment later)."""
    return d.execute_script("const e = document.querySelector(arguments[0]);"
                            "return e ? e.innerText : '';", css)


def _attr(d: Any, css: str, name: str) -> str | None:
    """An attribute of the first element matching ``css``, read in one step."""
    return d.execute_script("const e = document.querySelector(arguments[0]);"
                            "return e ? e.getAttribute(arguments[1]) : null;", css, name)
