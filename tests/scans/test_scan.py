"""``mindlens scan``: the store is readable with Zarr and PyArrow alone, labels come from
folders or a CSV, masks give the relevance inside them, the same run resumes and another
is refused in one line, and SIGKILLs (by the process's own id) lose and duplicate nothing."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from typer.testing import CliRunner

from mindlens import scan
from mindlens.cli import app
from mindlens.errors import InputError
from mindlens.runs import RunConflictError
from mindlens.scans import read_index, read_maps

from .data import SHORTCUT_CARD, write_images
from .killable import BATCH, METHODS

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bool]]:
    root = tmp_path_factory.mktemp("scan-data")
    return root, write_images(root, 12)


def comparable(store: Path) -> list[dict]:
    """The index rows without the measured seconds (the only field that differs on purpose)."""
    return [{k: v for k, v in r.items() if not k.startswith("seconds_")}
            for r in read_index(store)]


def test_store_is_readable_without_mindlens(data, tmp_path: Path) -> None:
    root, flags = data
    result = scan(SHORTCUT_CARD, root / "images", METHODS, tmp_path, masks=root / "masks",
                  size=32, batch_size=5, top_k=2)
    assert result.images == result.computed == len(flags) and not result.resumed
    layout = json.loads((tmp_path / "store.json").read_text())
    assert layout["images"] == len(flags) and layout["methods"] == METHODS
    group = zarr.open_group(str(tmp_path / "maps.zarr"), mode="r")
    for m in METHODS:
        a = group[m]
        assert a.shape == (len(flags), 32, 32) and a.dtype == np.float16
        assert a.chunks == (5, 32, 32)
        assert np.isfinite(a[:]).all() and np.abs(a[:]).sum((1, 2)).min() > 0
    table = pq.read_table(tmp_path / "index.parquet").to_pylist()
    assert [r["position"] for r in table] == list(range(len(flags)))
    assert {r["id"] for r in table} == set(flags)
    for r in table:
        assert r["label"] == r["id"].split("/")[0]
        assert len(r["sha256"]) == 64 and len(r["top_probs"]) == 2
        assert r["top_probs"][0] >= r["top_probs"][1] and r["target"] == r["predicted"]
        assert all(r[f"seconds_{m}"] > 0 for m in METHODS)
        if r["label"] == "diseased":  # masks exist for the diseased images only
            assert all(0 <= r[f"in_mask_{m}"] <= 1 for m in METHODS)
        else:
            assert r["mask"] is None and r.get("in_mask_gradcam") is None


def test_scan_runs_no_forward_pass_beyond_its_methods(data, tmp_path: Path) -> None:
    """The index's prediction and top-k come from the first method's own clean forward
    (``Explanation.logits``): a Grad-CAM scan runs exactly one forward per batch, and the
    index agrees with the model run alone."""
    import torch

    from mindlens import load_model
    from mindlens.scans import collect

    root, _ = data
    clf = load_model(SHORTCUT_CARD)
    calls: list[int] = []
    hook = clf.module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        scan(clf, root / "images", ["gradcam"], tmp_path, size=16, batch_size=5, top_k=2)
    finally:
        hook.remove()
    # one image once, where Grad-CAM first finds its layer (layer="auto"); then one
    # forward per batch
    assert calls == [1, 5, 5, 2]
    items = collect(root / "images")
    x = torch.cat([clf.pixels_to_tensor(clf.to_pixels(it.path)) for it in items])
    probs = clf.predict(x)
    for r in read_index(tmp_path):
        p = probs[r["position"]]
        assert r["predicted"] == int(p.argmax())
        np.testing.assert_allclose(r["top_probs"], p.topk(2).values.numpy(), rtol=1e-5)


def test_native_maps_are_the_methods_maps_at_input_resolution(data, tmp_path: Path) -> None:
    import torch

    import mindlens
    from mindlens import load_model
    from mindlens.scans import collect

    root, _ = data
    clf = load_model(SHORTCUT_CARD)
    scan(clf, root / "images", ["gradcam"], tmp_path, size=8, batch_size=5, native=True)
    native = read_maps(tmp_path, "gradcam", native=True)
    assert native.shape == (12, *clf.input_size) and native.dtype == np.float16
    assert read_maps(tmp_path, "gradcam").shape == (12, 8, 8)
    items = collect(root / "images")
    x = torch.cat([clf.pixels_to_tensor(clf.to_pixels(it.path)) for it in items])
    expected = mindlens.explain(clf, x, "gradcam").maps[:, 0].numpy().astype(np.float16)
    positions = [r["position"] for r in read_index(tmp_path)]
    peak = float(np.abs(expected).max())
    np.testing.assert_allclose(native[positions].astype(np.float32),
                               expected[positions].astype(np.float32), rtol=0,
                               atol=2e-3 * peak)  # float16 of the batched maps
    layout = json.loads((tmp_path / "store.json").read_text())
    assert layout["native_maps"] == "maps.zarr/native/<method>"
    scan(clf, root / "images", ["gradcam"], tmp_path / "plain", size=8, batch_size=5)
    with pytest.raises(InputError, match="--native"):
        read_maps(tmp_path / "plain", "gradcam", native=True)


def test_csv_list_target_label_and_resume(data, tmp_path: Path) -> None:
    root, flags = data
    listing = tmp_path / "list.csv"
    ids = sorted(flags)[:5]
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for i in ids:
            w.writerow([str(root / "images" / i), i.split("/")[0]])
    store = tmp_path / "store"
    first = scan(SHORTCUT_CARD, listing, ["gradcam"], store, target="label", batch_size=2)
    rows = read_index(store)
    assert [r["target_name"] for r in rows] == [i.split("/")[0] for i in ids]
    again = scan(SHORTCUT_CARD, listing, ["gradcam"], store, target="label", batch_size=2)
    assert again.resumed and again.computed == 0 and first.computed == 5
    assert comparable(store) == [{k: v for k, v in r.items() if not k.startswith("seconds_")}
                                 for r in rows]
    for change, expected in [({"size": 32}, "other settings (size was 64, now 32)"),
                             ({"target": "predicted"}, "other settings (target was label")]:
        with pytest.raises(RunConflictError) as err:
            scan(SHORTCUT_CARD, listing, ["gradcam"], store, **{"target": "label",
                                                                 "batch_size": 2, **change})
        assert expected in str(err.value) and "\n" not in str(err.value)
    fresh = scan(SHORTCUT_CARD, listing, ["gradcam"], store, size=32, batch_size=2,
                 overwrite=True)
    assert fresh.computed == 5 and read_maps(store, "gradcam").shape == (5, 32, 32)


def test_bad_inputs_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = {"no images": lambda: scan(SHORTCUT_CARD, tmp_path / "empty", ["gradcam"],
                                       tmp_path / "o"),
             "needs a 'path' column": lambda: scan(
                 SHORTCUT_CARD, _write(tmp_path / "x.csv", "file\na.png\n"), ["gradcam"],
                 tmp_path / "o"),
             "engine must be one of": lambda: scan(SHORTCUT_CARD, tmp_path, ["gradcam"],
                                                   tmp_path / "o", engine="spark")}
    for expected, call in cases.items():
        with pytest.raises(InputError, match=expected):
            call()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_extra_names_it(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                ) -> None:
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr now fails
    root, _ = data
    res = CliRunner().invoke(app, ["scan", "--model", str(SHORTCUT_CARD), "--data",
                                   str(root / "images"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "pip install 'mindlens[store]'" in res.output, res.output


def test_cli_scan_then_audit(data, tmp_path: Path) -> None:
    root, flags = data
    store, report = tmp_path / "store", tmp_path / "audit"
    runner = CliRunner()
    res = runner.invoke(app, ["scan", "--model", str(SHORTCUT_CARD), "--data",
                              str(root / "images"), "--methods", "gradcam", "--out",
                              str(store), "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    assert f"{len(flags)} in the store" in res.output
    res = runner.invoke(app, ["scan", "--model", str(SHORTCUT_CARD), "--data",
                              str(root / "images"), "--methods", "gradcam", "--out",
                              str(store), "--size", "32"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, ["audit", str(store), "--out", str(report), "--min-images", "3"])
    assert res.exit_code == 0, res.output
    audit = json.loads((report / "audit.json").read_text())
    called = {r["predicted_name"] for r in read_index(store)}
    assert set(audit["classes"]) == called
    html = (report / "audit.html").read_text()
    for name in called:
        assert f"Images called “{name}”" in html
    assert "data:image/png;base64," in html and "<svg" in html


def _journal_rows(out: Path) -> int:
    path = out / "index.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_loses_and_duplicates_nothing(data, tmp_path: Path) -> None:
    root, flags = data
    reference = tmp_path / "reference"
    scan(SHORTCUT_CARD, root / "images", METHODS, reference, masks=root / "masks",
         batch_size=BATCH)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "tests.scans.killable", str(root), str(out)]
    kills, at_kill = 0, []
    while kills < 2:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != b"running":  # finished (or failed) before the first batch was written
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr.decode()[-2000:]
            break
        time.sleep(0.2 * kills)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=300)
        kills += 1
        at_kill.append(_journal_rows(out))
    assert kills >= 1 and 0 < at_kill[0] < len(flags), at_kill
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert _journal_rows(out) == len(flags)  # every image once
    assert comparable(out) == comparable(reference)
    for m in METHODS:
        assert np.array_equal(read_maps(out, m), read_maps(reference, m))
