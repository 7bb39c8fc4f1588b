"""Open an HTML report in headless Chromium (Selenium + chromedriver) and report what the
first screen shows. Tests skip when Chromium, chromedriver or Selenium is missing."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: the first screen: a laptop browser window
WIDTH, HEIGHT = 1280, 900

_FIRST_SCREEN = """
const h = window.innerHeight;
const seen = (el) => { if (!el) return false; const r = el.getBoundingClientRect();
  return r.height > 0 && r.top >= 0 && r.bottom <= h; };
const pic = document.querySelector('section.item img.trusted');
const rows = document.querySelectorAll('table.summary tr');
return {
  summary: seen(document.querySelector('table.summary')), summary_rows: rows.length - 1,
  decision: seen(document.querySelector('section.item .decision')),
  decision_text: (document.querySelector('section.item .decision') || {}).textContent,
  sentence: seen(document.querySelector('section.item .sentence')),
  sentence_text: (document.querySelector('section.item .sentence') || {}).textContent,
  picture: seen(pic), outline: pic ? pic.dataset.outline : null,
  picture_box: pic ? [pic.getBoundingClientRect().left, pic.getBoundingClientRect().top,
                      pic.getBoundingClientRect().width, pic.getBoundingClientRect().height]
                   : null,
  engineers_open: Array.from(document.querySelectorAll('details.engineers')).some(d => d.open),
};
"""


def driver(window: tuple[int, int] = (WIDTH, HEIGHT), downloads: Path | None = None) -> Any:
    """A headless Chromium WebDriver (files it downloads go to ``downloads``), or skip."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("headless Chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={window[0]},{window[1]}"):
        opts.add_argument(arg)
    if downloads is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    return webdriver.Chrome(options=opts, service=Service(chromedriver))


def first_screen(report: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """What lies fully inside the first ``WIDTH x HEIGHT`` screen of ``report``; the
    screenshot (PNG) of that screen is written to ``screenshot`` if given."""
    d = driver()
    try:
        d.set_window_size(WIDTH, HEIGHT)
        d.get(report.resolve().as_uri())
        out = d.execute_script(_FIRST_SCREEN)
        out["inner"] = d.execute_script("return [window.innerWidth, window.innerHeight]")
        if screenshot is not None:
            d.save_screenshot(str(screenshot))
        return out
    finally:
        d.quit()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a free loopback port in a thread; yields the
    base URL and stops the server afterwards."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(10)
