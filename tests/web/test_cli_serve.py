"""`mindlens serve` refuses to start unsafely, saying why; the app it would serve is built
from the same factory the API tests use."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mindlens.cli import app

pytest.importorskip("fastapi")
runner = CliRunner()


def test_non_loopback_host_needs_a_token(monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(k))
    r = runner.invoke(app, ["serve", "--demo", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--token" in r.output and not started
    r = runner.invoke(app, ["serve", "--demo", "--host", "0.0.0.0", "--token", "t0k"])
    assert r.exit_code == 0, r.output
    assert started[-1]["host"] == "0.0.0.0" and "login?token=t0k" in r.output
    r = runner.invoke(app, ["serve", "--demo", "--host", "0.0.0.0", "--insecure"])
    assert r.exit_code == 0 and "without a token" in r.output


def test_loopback_by_default_and_model_required(monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(k))
    r = runner.invoke(app, ["serve", "--demo", "--port", "8123"])
    assert r.exit_code == 0, r.output
    assert started[-1]["host"] == "127.0.0.1" and started[-1]["port"] == 8123
    r = runner.invoke(app, ["serve"])
    assert r.exit_code != 0 and "--model" in r.output
