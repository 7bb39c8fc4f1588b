"""`mindlens serve --demo` in headless Chromium: upload an image, see the verdict, click the
second class, switch and compare methods, move the slider, download the report, reload the
shared link; the MACE concept panel and a slow method's time estimate. Skips when
Chromium, chromedriver or Selenium is missing."""

from __future__ import annotations

from typing import Any

import pytest

from ..browser import driver, served

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

WAIT_S = 30


@pytest.fixture(scope="module")
def server():
    from mindlens.demo import demo_unit_path, load_demo_model
    from mindlens.demo.cases import WORDS
    from mindlens.web import create_app
    from mindlens.web.pictures import demo_pictures

    app = create_app({"retina": load_demo_model("retina")}, pictures=demo_pictures(n=4),
                     unit=demo_unit_path("retina"), words=WORDS, target=1,
                     title="mindlens demo")  # as `mindlens serve --demo`
    with served(app) as url:
        yield url


def _until(d: Any, check: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, WAIT_S).until(lambda _d: check(), message=what)


def _settled(d: Any, action: Any, what: str) -> None:
    """Do ``action`` and wait until the page has shown its result (body[data-ready])."""
    from selenium.webdriver.common.by import By

    body = d.find_element(By.TAG_NAME, "body")
    before = body.get_attribute("data-ready")
    action()
    _until(d, lambda: body.get_attribute("data-ready") not in (None, before), what)


def _text(d: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def test_page_end_to_end(server, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from mindlens.demo import retina

    pixels, labels, _ = retina.generate(2, 99)
    upload = tmp_path / "eye.png"
    Image.fromarray(pixels[int(labels.argmax())]).save(upload)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d = driver((1280, 1000), downloads)
    try:
        d.get(server)
        _until(d, lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"),
               "the page loads")
        assert len(d.find_elements(By.CSS_SELECTOR, "#thumbs button")) == 4
        # upload: the decision and the verdict come first, with the trusted picture
        _settled(d, lambda: d.find_element(By.ID, "file").send_keys(str(upload)), "upload")
        _until(d, lambda: "The model says" in _text(d, "#col-0 .decision"), "the decision")
        _until(d, lambda: _text(d, "#col-0 .verdict"), "the verdict")
        assert d.find_element(By.CSS_SELECTOR, "#col-0 .trusted img").get_attribute("src"
                                                                                   ).startswith(
            "data:image/png")
        _until(d, lambda: "Grad-CAM" in _text(d, "#panel-a .caption"), "the first map")
        # the expert's marks drawn on the page give the verdict against them
        assert "No lesions" in _text(d, "#col-0 .verdict")
        d.find_element(By.ID, "draw").click()
        canvas = d.find_element(By.ID, "marks")
        ActionChains(d).move_to_element_with_offset(canvas, -40, -40).click_and_hold(
            ).move_by_offset(60, 20).move_by_offset(20, 60).release().perform()
        _settled(d, d.find_element(By.ID, "use-marks").click, "the drawn marks")
        _until(d, lambda: "No lesions" not in _text(d, "#col-0 .verdict"), "verdict on marks")
        assert "drawn marks" in _text(d, "#maskname")
        # a served image with its lesion mask, then the second class
        _settled(d, d.find_element(By.CSS_SELECTOR, "#thumbs button[data-id='0']").click,
                 "a served image")
        assert "image=0" in d.current_url
        buttons = d.find_elements(By.CSS_SELECTOR, "#col-0 .classes button")
        second_label = buttons[1].find_element(By.TAG_NAME, "span").text
        second_index = buttons[1].get_attribute("data-index")
        _settled(d, buttons[1].click, "the second class")
        _until(d, lambda: f"for “{second_label}”" in _text(d, "#panel-a .caption"),
               "the second class explained")
        # compare: saliency beside, then switch the first panel to LRP
        Select(d.find_element(By.ID, "method-b")).select_by_value("saliency")
        _until(d, lambda: "saliency" in _text(d, "#panel-b .caption").lower(), "saliency beside")
        Select(d.find_element(By.ID, "method-a")).select_by_value("lrp")
        _until(d, lambda: "LRP" in _text(d, "#panel-a .caption"), "LRP in the first panel")
        # the opacity slider and the most-relevant control repaint the maps
        slider = d.find_element(By.ID, "opacity")
        slider.send_keys(*[Keys.ARROW_LEFT] * 40)  # from 80%
        _until(d, lambda: d.find_element(By.CSS_SELECTOR, "#panel-a canvas").value_of_css_property(
            "opacity") == "0.4", "opacity 40%")
        top = d.find_element(By.ID, "toppct")
        top.send_keys(*[Keys.ARROW_LEFT] * 90)
        _until(d, lambda: d.find_element(By.CSS_SELECTOR, "#panel-a canvas").get_attribute(
            "data-painted") == "40:10", "only the most relevant 10%")
        # download the case's report
        d.find_element(By.ID, "download").click()
        _until(d, lambda: (downloads / "mindlens-report.html").exists(), "the report file")
        _until(d, lambda: (downloads / "mindlens-report.html").stat().st_size > 1000, "written")
        assert "LRP" in (downloads / "mindlens-report.html").read_text()
        # the shared link reproduces the view
        link = d.current_url
        for part in ("image=0", "a=lrp", "b=saliency", "opacity=40", "top=10",
                     f"target={second_index}"):
            assert part in link, part
        d.get("about:blank")
        d.get(link)
        _until(d, lambda: "LRP" in _text(d, "#panel-a .caption")
               and "saliency" in _text(d, "#panel-b .caption").lower(), "both maps again")
        assert Select(d.find_element(By.ID, "method-b")).first_selected_option.get_attribute(
            "value") == "saliency"
        assert d.find_element(By.ID, "opacity").get_attribute("value") == "40"
        assert f"for “{second_label}”" in _text(d, "#panel-a .caption")
        assert not _text(d, "#status")
    finally:
        d.quit()


def test_concepts_and_slow_job_estimate(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = driver((1280, 1000))
    try:
        d.get(server + "#image=1")
        _until(d, lambda: "The model says" in _text(d, "#col-0 .decision"), "the decision")
        # the served unit: a button shows the learnt concepts beside the first map
        d.find_element(By.CSS_SELECTOR, "#col-0 .show-concepts").click()
        _until(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "#panel-b .concept")) == 3,
               "three concepts")
        head = _text(d, "#panel-b .concepts p")
        assert head.startswith("Concepts behind “diseased”:") and "learnt concept" in head
        assert "b=mace" in d.current_url
        assert d.find_element(By.CSS_SELECTOR, "#panel-b .concept img.region").get_attribute(
            "src").startswith("data:image/")
        assert d.find_elements(By.CSS_SELECTOR, "#panel-b .concept .share")[0].text.endswith("%")
        assert "of the evidence" in _text(d, "#panel-b .concept")
        assert not d.find_elements(By.CSS_SELECTOR, "#panel-a .concept")  # Grad-CAM: none
        # a slow method: its second run says how long it will take
        Select(d.find_element(By.ID, "method-b")).select_by_value("occlusion")
        _until(d, lambda: "Occlusion" in _text(d, "#panel-b .caption"), "occlusion, first run")
        _settled(d, lambda: d.execute_script(
            "location.hash = location.hash.replace('image=1', 'image=2')"), "another image")
        _until(d, lambda: "Occlusion" in _text(d, "#panel-b .caption"), "occlusion, second run")
        text = d.execute_script("return document.querySelector('#panel-b .ptext').textContent")
        assert "expected to take about" in text and " s" in text, text
        assert not d.find_elements(By.CSS_SELECTOR, "#panel-b .concept")  # gone with MACE
        assert not _text(d, "#status")
    finally:
        d.quit()
