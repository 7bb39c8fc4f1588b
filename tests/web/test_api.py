"""The JSON API of `mindlens serve` with FastAPI's test client, on a tiny model: answers,
presentation from cases.run, limits, token, traversal, concurrency, jobs."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from mindlens import cases
from mindlens.io import as_image_array, pil_to_array
from mindlens.model_card import load_model
from mindlens.render.colors import colorize, to_display
from mindlens.render.evidence import as_rgb
from mindlens.web import create_app
from mindlens.web.limits import decode_image
from mindlens.web.service import Busy, Service

from ..conftest import assert_untouched, fingerprint
from ..tinynet import write_card

TOKEN = "s3cret-token"


def png(shape=(20, 24, 3), seed=0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (its data is not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    return write_card(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    (d / "a.png").write_bytes(png(seed=1))
    (d / "b.png").write_bytes(png(seed=2))
    masks = tmp_path_factory.mktemp("masks")
    m = np.zeros((20, 24), np.uint8)
    m[4:10, 5:12] = 255
    Image.fromarray(m).save(masks / "a.png")
    return d, masks


@pytest.fixture(scope="module")
def clf(card):
    return load_model(card)


@pytest.fixture(scope="module")
def client(clf, folder):
    app = create_app({"tiny": clf}, folder[0], folder[1], max_bytes=200_000,
                     max_pixels=1_000_000)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def locked(clf, folder):
    app = create_app({"tiny": clf}, folder[0], token=TOKEN)
    with TestClient(app) as c:
        yield c


def explain(client, **fields):
    files = {"image": ("x.png", fields.pop("image"), "image/png")} if "image" in fields else None
    return client.post("/api/explain", data=fields, files=files)


def test_catalogue(client):
    assert client.get("/api/health").json()["status"] == "ok"
    models = client.get("/api/models").json()
    assert models[0]["name"] == "tiny" and models[0]["labels"] == ["cat", "dog", "bird"]
    names = {m["name"]: m for m in client.get("/api/methods").json()}
    assert "gradcam" in names and names["occlusion"]["slow"] and not names["gradcam"]["slow"]
    images = client.get("/api/images").json()
    assert [(i["id"], i["name"], i["has_mask"]) for i in images] == [
        ("0", "a.png", True), ("1", "b.png", False)]
    thumb = client.get(images[0]["thumb"])
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")


def test_explain_is_the_case_of_cases_run(client, clf):
    data = png()
    r = explain(client, image=data, method="gradcam", top_k=2)
    assert r.status_code == 200, r.text
    got = r.json()
    case = cases.run(clf, [cases.Input(np.asarray(Image.open(io.BytesIO(data))), name="image")],
                     cases.Request(methods=["gradcam"], top_k=2))[0]
    want = case.to_dict()
    for key in ("decision", "verdict", "trusted", "trusted_why", "model_card_sha256"):
        assert got[key] == want[key], key
    assert [m["target"] for m in got["maps"]] == [m.target for m in case.maps]
    assert got["maps"][0]["provenance"] == case.maps[0].provenance
    m = got["maps"][0]
    values = np.frombuffer(base64.b64decode(m["values"]), "<f4").reshape(m["shape"])
    np.testing.assert_allclose(values, case.explanations["gradcam"].maps[0, 0].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert m["png"].startswith("data:image/png;base64,")
    assert got["classes"][0]["index"] == got["decision"]["index"]
    assert got["trusted_picture"]["png"].startswith("data:image/png;base64,")
    # the pictures are the presentation's pixels, losslessly
    def pixels(uri: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    e = case.explanations["gradcam"]
    np.testing.assert_array_equal(pixels(m["png"]), colorize(to_display(
        e.maps[0, 0].numpy(), e.signed, 99.5 if e.raw is not None else None)))
    np.testing.assert_array_equal(pixels(got["trusted_picture"]["png"]),
                                  cases.trusted_picture(case).pixels)
    np.testing.assert_array_equal(pixels(got["image"]), as_rgb(case.pixels))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16", "P"])
def test_uploads_decode_to_the_pixels_pil_to_array_gives(mode):
    a = np.random.default_rng(3).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    img = Image.fromarray(a).convert("RGBA" if mode == "LA" else "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    got = decode_image(buf.getvalue())
    want = pil_to_array(Image.open(io.BytesIO(buf.getvalue())))
    assert got.ndim == 3 and got.shape[2] == want.shape[2]
    np.testing.assert_array_equal(as_image_array(got), want)


def test_target_by_name_mask_gives_verdict_and_cache(client):
    data = png(seed=3)
    mask = np.zeros((20, 24), np.uint8)
    mask[2:8, 2:8] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    files = {"image": ("x.png", data, "image/png"), "mask": ("m.png", buf.getvalue(), "image/png")}
    r = client.post("/api/explain", data={"method": "saliency", "target": "dog"}, files=files)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["maps"][0]["label"] == "dog" and j["verdict"]["regions_total"] == 1
    assert not j["cached"]
    again = client.post("/api/explain", data={"method": "saliency", "target": "dog"},
                        files=files).json()
    assert again["cached"] and again["maps"] == j["maps"]
    other = client.post("/api/explain", data={"method": "saliency", "target": "cat"},
                        files=files).json()
    assert not other["cached"] and other["maps"][0]["label"] == "cat"


def test_served_image_by_id_with_its_mask(client):
    r = client.post("/api/explain", data={"image_id": "0", "method": "gradcam"})
    assert r.status_code == 200 and r.json()["verdict"]["regions_total"] == 1
    assert client.post("/api/explain", data={"image_id": "1"}).json()["verdict"][
        "regions_total"] is None


@pytest.mark.parametrize("image_id", ["../a.png", "/etc/passwd", "0/../../x", "..%2F..%2Fetc",
                                      "a.png"])
def test_traversal_is_refused(client, image_id):
    r = client.post("/api/explain", data={"image_id": image_id})
    assert r.status_code == 422 and "no served image" in r.json()["detail"]
    assert client.get(f"/api/images/{image_id}/thumb").status_code == 404


def test_bad_input(client):
    assert explain(client, image=b"not an image at all", method="gradcam").status_code == 422
    assert explain(client, image=png(), method="nope").status_code == 422
    assert explain(client, image=png(), target="zebra").status_code == 422
    r = client.post("/api/explain", data={"method": "gradcam"})
    assert r.status_code == 422 and "either an image" in r.json()["detail"]


def test_content_type_is_not_trusted(client):
    # a PNG sent as text/plain is decoded; a text file sent as image/png is refused
    files = {"image": ("x.txt", png(), "text/plain")}
    assert client.post("/api/explain", data={}, files=files).status_code == 200
    files = {"image": ("x.png", b"<script>alert(1)</script>", "image/png")}
    assert client.post("/api/explain", data={}, files=files).status_code == 422


def test_oversize_upload_413(client):
    big = b"\0" * 600_000
    r = explain(client, image=big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_bomb_header_refused_without_decoding(client):
    r = explain(client, image=bomb_png())
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = explain(client, image=bomb_png(1100, 1000))  # just over this app's 1e6 limit
    assert r.status_code == 413


def test_token(locked):
    assert locked.get("/api/health").status_code == 200
    assert locked.get("/api/models").status_code == 401
    assert locked.get("/api/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert locked.get("/api/models", headers={"Authorization": f"Bearer {TOKEN}x"}
                      ).status_code == 401
    assert locked.get("/api/models", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 200
    assert locked.post("/api/explain", data={"image_id": "0"}).status_code == 401
    assert locked.get("/login?token=wrong", follow_redirects=False).status_code == 401
    r = locked.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert locked.get("/api/models").status_code == 200  # the cookie now
    locked.cookies.clear()


def test_security_headers(client):
    for path in ("/", "/api/health", "/static/app.js", "/docs"):
        h = client.get(path).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "unsafe-inline" not in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert "<script src=" in page and "<script>" not in page and "http" not in page


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/explain", "/api/models", "/api/methods", "/api/health", "/api/jobs"):
        assert path in spec["paths"]


def test_concurrent_requests_equal_sequential_model_untouched(clf, folder):
    app = create_app({"tiny": clf}, folder[0], workers=4, queue=40)
    images = [png(seed=s) for s in range(6)]
    jobs = [(images[i % 6], m) for i, m in enumerate(["gradcam", "saliency", "lrp"] * 10)]
    before = fingerprint(clf.module)
    with TestClient(app) as c:
        # sequential reference on a fresh app, so no answer comes from the cache
        ref_app = create_app({"tiny": clf}, folder[0])
        with TestClient(ref_app) as ref:
            want = [explain(ref, image=im, method=m).json() for im, m in jobs]
        with ThreadPoolExecutor(30) as pool:
            got = list(pool.map(lambda job: explain(c, image=job[0], method=job[1]), jobs))
    assert all(r.status_code == 200 for r in got), [r.text for r in got if r.status_code != 200]
    for r, w in zip(got, want, strict=True):
        j = r.json()
        assert j["decision"] == w["decision"]
        assert [m["values"] for m in j["maps"]] == [m["values"] for m in w["maps"]]
    assert_untouched(before, clf.module)


def test_full_queue_is_503_with_retry_after(clf, folder):
    app = create_app({"tiny": clf}, folder[0], workers=1, queue=0)
    service: Service = app.state.service
    service._slots.acquire()  # the one worker is taken
    try:
        with TestClient(app) as c:
            r = explain(c, image=png())
        assert r.status_code == 503 and r.headers["retry-after"]
        with pytest.raises(Busy):
            service.submit(service.ask(model=None, method="gradcam", image=png()))
    finally:
        service._slots.release()


def test_slow_job_progress_and_cancel(client, clf):
    data = png(shape=(16, 16, 3), seed=9)
    fields = {"method": "occlusion"}
    files = {"image": ("x.png", data, "image/png")}
    r = client.post("/api/jobs", data=fields, files=files)
    assert r.status_code == 202
    job = r.json()
    for _ in range(400):
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "done" and job["forward_passes"] > 1
    assert job["planned_passes"] >= 1 and job["progress"] == 1.0 and job["eta_s"] is None
    assert job["result"]["maps"][0]["method"] == "occlusion"
    # a second run knows how many forward passes to expect and how long it will take
    # before it starts; cancel it at once
    files = {"image": ("y.png", png(shape=(16, 16, 3), seed=10), "image/png")}
    job = client.post("/api/jobs", data=fields, files=files).json()
    assert job["estimate_s"] is not None and job["estimate_s"] > 0
    assert client.delete(f"/api/jobs/{job['id']}").json()["id"] == job["id"]
    for _ in range(400):
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "cancelled"
    assert client.get("/api/jobs/nope").status_code == 404
    # occlusion through /api/explain waits for its job
    assert explain(client, image=data, method="occlusion").json()["maps"][0]["shape"] == [16, 16]


def test_report_download(client):
    r = client.post("/api/report", data={"image_id": "0", "methods": "gradcam,saliency"})
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    assert "Grad-CAM" in r.text and "Gradient saliency" in r.text and "<html" in r.text.lower()


def test_two_models(clf, card):
    other = load_model(card)
    app = create_app({"first": clf, "second": other})
    with TestClient(app) as c:
        assert [m["name"] for m in c.get("/api/models").json()] == ["first", "second"]
        a = explain(c, image=png(), method="gradcam", model="first").json()
        b = explain(c, image=png(), method="gradcam", model="second").json()
        assert (a["model"], b["model"]) == ("first", "second")
        assert a["maps"][0]["values"] == b["maps"][0]["values"]  # the same weights
        r = explain(c, image=png(), model="third")
        assert r.status_code == 422 and "first, second" in r.json()["detail"]


def test_a_running_slow_job_does_not_block_fast_methods(clf, folder):
    app = create_app({"tiny": clf}, folder[0])
    served = app.state.service.models["tiny"]
    assert served.slow.clf is not served.fast.clf  # a private copy for slow methods
    with TestClient(app) as c:
        with served.slow.lock:  # as while an occlusion job runs
            job = c.post("/api/jobs", data={"image_id": "0", "method": "occlusion"}).json()
            r = c.post("/api/explain", data={"image_id": "0", "method": "gradcam"})
            assert r.status_code == 200
            assert c.get(f"/api/jobs/{job['id']}").json()["state"] in ("queued", "running")
        for _ in range(400):
            state = c.get(f"/api/jobs/{job['id']}").json()["state"]
            if state == "done":
                break
            time.sleep(0.05)
        assert state == "done"


def test_job_time_estimate_before_and_while_it_runs():
    from mindlens.progress import Estimate
    from mindlens.web.service import Ask, Job

    job = Job("j", Ask("m", "occlusion", np.zeros((4, 4, 3), np.uint8), "k"), per_image_s=0.5)
    d = job.to_dict()
    assert d["estimate_s"] is None and d["eta_s"] is None  # nothing known yet: no guess
    job.report("occlusion", 0, 8)  # the method's plan: 8 passes at 0.5 s an image
    assert job.to_dict()["estimate_s"] == 4.0 and job.to_dict()["planned_passes"] == 8
    job.take_estimate(Estimate("occlusion", 1000, 0.01))  # its own timed estimate wins
    job.state, job.started = "running", time.monotonic() - 2.0
    d = job.to_dict()
    assert d["estimate_s"] == 10.0 and 7.5 < d["eta_s"] < 8.1 and d["progress"] is None
    job.report("occlusion", 250, 1000)  # a quarter done in ~2 s: ~6 s left
    d = job.to_dict()
    assert d["progress"] == 0.25 and 5.5 < d["eta_s"] < 6.5


def test_progress_hands_the_timed_estimate_to_its_sink(clf, monkeypatch):
    from mindlens import progress
    from mindlens.api import explain as explain_api

    monkeypatch.setattr(progress, "MIN_PASSES", 1)
    got: list = []
    with progress.estimating(got.append):
        explain_api(clf, np.zeros((16, 16, 3), np.float32), "occlusion")
    assert len(got) == 1 and got[0].method == "occlusion" and got[0].passes >= 1
    assert got[0].seconds > 0


def test_mace_maps_carry_the_reports_concept_panel():
    from mindlens.demo import demo_unit_path, load_demo_model
    from mindlens.report import concept_panel
    from mindlens.web.pictures import demo_pictures

    retina = load_demo_model("retina")
    unit = demo_unit_path("retina")
    app = create_app({"retina": retina}, unit=unit, pictures=demo_pictures(n=2), target=1)
    with TestClient(app) as c:
        assert "mace" in {m["name"] for m in c.get("/api/methods").json()}
        got = c.post("/api/explain", data={"image_id": "1", "method": "mace"}).json()
        assert c.post("/api/explain", data={"image_id": "1", "method": "gradcam"}
                      ).json()["maps"][0]["concepts"] is None
    cp = got["maps"][0]["concepts"]
    pic = demo_pictures(n=2)[1]
    case = cases.run(retina, [cases.Input(pic.load(), name="image", mask=pic.mask())],
                     cases.Request(methods=["mace"], target=1,
                                   params={"mace": {"unit": str(unit)}}))[0]
    want = concept_panel("mace", case.explanations["mace"], 0, 0, as_rgb(case.pixels),
                         case.maps[0].label)
    assert cp["summary"] == want.summary and cp["label"] == want.label
    assert [(k["rank"], k["share"], k["found"]) for k in cp["concepts"]] == [
        (k.rank, k.share, k.found) for k in want.concepts]
    assert cp["concepts"][0]["region"].startswith("data:image/")


def test_pictures_false_leaves_out_the_pngs_only(client):
    data = png(seed=21)
    full = explain(client, image=data, method="saliency").json()
    bare = explain(client, image=data, method="saliency", pictures="false").json()
    assert bare["image"] is None and bare["trusted_picture"] is None
    assert bare["maps"][0]["png"] is None and full["maps"][0]["png"].startswith("data:")
    assert bare["maps"][0]["values"] == full["maps"][0]["values"]
    assert bare["decision"] == full["decision"] and bare["classes"] == full["classes"]
    assert not bare["cached"]  # its own cache entry, not the full answer's
