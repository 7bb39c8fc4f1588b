"""The audit view's API (``mindlens serve --audit``) with FastAPI's test client on a tiny
scanned store: the numbers are mindlens.spray's (a store audited by the server equals its
``mindlens audit`` folder), images and maps by index position only, the token, unknown ids
and traversal attempts, and ``serve --audit`` without a model."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mindlens.cli import app as cli
from mindlens.errors import InputError
from mindlens.scans import read_index
from mindlens.web import create_app

pytestmark = pytest.mark.usefixtures("one_thread")
TOKEN = "audit-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def tiny(tiny_audit: tuple[Path, Path, dict]) -> tuple[Path, Path, dict]:
    return tiny_audit


def ready(c: TestClient, name: str, headers: dict | None = None, wait_s: float = 60) -> dict:
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        r = c.get(f"/api/audits/{name}", headers=headers or {})
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202 and r.json()["state"] in ("queued", "computing")
        time.sleep(0.1)
    raise AssertionError(f"the audit {name} was not ready in {wait_s} s")


@pytest.fixture(scope="module")
def client(tiny):
    store, folder, _ = tiny
    with TestClient(create_app({}, audits=[folder, store], token=TOKEN,
                                audit_region="lesion")) as c:
        c.headers.update(AUTH)
        yield c


def test_served_audits_are_the_spray_numbers(client, tiny) -> None:
    _, folder, result = tiny
    listed = client.get("/api/audits").json()
    assert [a["name"] for a in listed] == ["audit", "store"]
    assert [a["kind"] for a in listed] == ["audit", "store"]
    written = json.loads((folder / "audit.json").read_text())
    for name in ("audit", "store"):  # read back, and audited by the server: the same
        summary = ready(client, name)
        assert summary["state"] == "ready" and summary["method"] == "gradcam"
        assert summary["images"] == written["images"]
        for cls, c in written["classes"].items():
            v = client.get(f"/api/audits/{name}/classes/{cls}").json()
            assert v["k"] == c["k"] and v["flags"] == c["flags"]
            assert v["eigenvalues"] == pytest.approx(c["eigenvalues"], abs=1e-9)
            rows = result["classes"][cls]["rows"]
            assert [p["position"] for p in v["points"]] == [
                rows[j]["position"] for j in c["embedding_2d"]["positions"]]
            assert [p["cluster"] for p in v["points"]] == [
                c["labels"][j] for j in c["embedding_2d"]["positions"]]
            np.testing.assert_allclose([[p["x"], p["y"]] for p in v["points"]],
                                       c["embedding_2d"]["xy"], atol=1e-3)
            for k, cl in enumerate(c["clusters"]):
                got = client.get(f"/api/audits/{name}/classes/{cls}/clusters/{k}").json()
                assert got["size"] == cl["size"] and got["flags"] == cl["flags"]
                assert [m["id"] for m in got["members"]] == [m["id"] for m in cl["members"]]
                assert [t["position"] for t in got["typical"]] == [
                    rows[j]["position"] for j in cl["typical"]]
                assert v["clusters"][k]["where"] == cl["where"]


def test_image_row_and_pictures(client, tiny) -> None:
    store, _, result = tiny
    cls, c = next(iter(result["classes"].items()))
    index = {r["position"]: r for r in read_index(store)}
    for j in (0, len(c["rows"]) - 1):
        pos = c["rows"][j]["position"]
        row = client.get(f"/api/audits/audit/images/{pos}").json()
        assert row["id"] == index[pos]["id"] and row["cluster"] == c["labels"][j]
        assert row["predicted_name"] == index[pos]["predicted_name"]
        assert [t["probability"] for t in row["top"]] == pytest.approx(index[pos]["top_probs"])
        assert row["top"][0]["label"] in ("healthy", "diseased")
        assert row["in_mask"] == pytest.approx(index[pos]["in_mask_gradcam"])
        assert "path" not in row  # the server's file system stays its own
    pos = c["rows"][0]["position"]
    over = client.get(f"/api/audits/audit/images/{pos}.png")
    plain = client.get(f"/api/audits/audit/images/{pos}.png?overlay=false&size=64")
    assert over.headers["content-type"] == "image/png" and "x-marks-colour" in over.headers
    a = np.asarray(Image.open(io.BytesIO(over.content)))
    b = np.asarray(Image.open(io.BytesIO(plain.content)))
    assert a.shape == (320, 320, 3) and b.shape == (64, 64, 3)
    small_over = np.asarray(Image.open(io.BytesIO(client.get(
        f"/api/audits/audit/images/{pos}.png?size=64").content)))
    assert np.abs(small_over.astype(int) - b).mean() > 1  # the map is laid over
    for url in (f"/api/audits/audit/classes/{cls}/mean.png",
                f"/api/audits/audit/classes/{cls}/mean.png?cluster=0"):
        r = client.get(url)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] >= 128


def test_token_unknown_ids_and_traversal(client, tiny) -> None:
    _, _, result = tiny
    cls = next(iter(result["classes"]))
    pos = result["classes"][cls]["rows"][0]["position"]
    anon = TestClient(client.app)
    for url in ("/api/audits", "/api/audits/audit", f"/api/audits/audit/classes/{cls}",
                f"/api/audits/audit/images/{pos}.png", f"/api/audits/audit/images/{pos}"):
        assert anon.get(url).status_code == 401, url
        assert anon.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anon.get("/audit").status_code == 200  # the page itself; its data needs the token
    assert anon.get("/api/health").status_code == 200
    missing = {
        "/api/audits/nope": "no served audit is named 'nope'",
        f"/api/audits/audit/classes/{cls}x": "has no class",
        f"/api/audits/audit/classes/{cls}/clusters/99": "has strategies",
        f"/api/audits/audit/classes/{cls}/mean.png?cluster=99": "has strategies",
        "/api/audits/audit/images/99999.png": "no image at position 99999",
        "/api/audits/audit/images/-1": "no image at position -1",
    }
    for url, words in missing.items():
        r = client.get(url)
        assert r.status_code == 404 and words in r.json()["detail"], (url, r.text)
    for url in ("/api/audits/audit/images/..%2F..%2F..%2Fetc%2Fpasswd.png",
                "/api/audits/audit/images/../../../etc/passwd",
                "/api/audits/audit/images/%2Fetc%2Fpasswd",
                "/api/audits/..%2F..%2Fstore/images/0.png",
                "/api/audits/audit/classes/..%2F..%2F..%2Fetc%2Fpasswd"):
        r = client.get(url)
        assert r.status_code in (404, 422), (url, r.status_code)
        assert b"root:" not in r.content
    assert client.get(f"/api/audits/audit/images/{pos}.png?size=100000").status_code == 422


def test_page_headers_and_openapi(client) -> None:
    page = client.get("/audit")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script
    assert not re.search(r"\son[a-z]+=", html)  # no inline handlers
    assert client.get("/static/audit.js").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/audit"
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/audits", "/api/audits/{audit}", "/api/audits/{audit}/classes/{cls}",
              "/api/audits/{audit}/classes/{cls}/clusters/{k}",
              "/api/audits/{audit}/images/{position}.png",
              "/api/audits/{audit}/images/{position}"):
        assert p in paths, p
    assert "/api/explain" not in paths  # no model served: only the audit view


def test_explain_page_lists_no_audits_without_them(tmp_path: Path) -> None:
    from ..tinynet import write_card

    with TestClient(create_app({"tiny": write_card(tmp_path)})) as c:
        assert c.get("/api/audits").json() == []  # the page's link stays hidden
        assert c.get("/api/audits/any").status_code == 404
        assert 'id="audit-link"' in c.get("/").text


def test_bad_audit_paths_are_refused_in_words(tmp_path: Path, tiny) -> None:
    with pytest.raises(InputError, match="neither a scan store"):
        create_app({}, audits=[tmp_path])
    (tmp_path / "index.jsonl").write_text("")
    with pytest.raises(InputError, match="has not finished"):
        create_app({}, audits=[tmp_path])


def test_a_failed_audit_is_said_in_words(tmp_path: Path, tiny) -> None:
    store, _, _ = tiny
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    shutil.rmtree(broken / "maps.zarr")
    with TestClient(create_app({}, audits=[broken])) as c:
        summary = ready(c, "broken")
        assert summary["state"] == "error" and summary["error"]
        r = c.get("/api/audits/broken/classes/diseased")
        assert r.status_code == 500 and "the audit 'broken'" in r.json()["detail"]
        assert "failed" in r.json()["detail"] and "Traceback" not in r.text


def test_serve_with_audit_needs_no_model(monkeypatch, tiny) -> None:
    _, folder, _ = tiny
    started = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(a))
    r = CliRunner().invoke(cli, ["serve", "--audit", str(folder), "--audit-region", "lesion"])
    assert r.exit_code == 0, r.output
    assert "/audit" in r.output
    web = started[-1][0]
    assert [a["name"] for a in TestClient(web).get("/api/audits").json()] == ["audit"]
