"""evaluate(): records saved as they come, a killed run resumes without counting an image
twice, the criteria table, and bad input (missing masks, masks of another size, a method
that cannot run on the model)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mindlens.errors import InputError
from mindlens.evaluate import evaluate, evaluation_params, read_records
from mindlens.metrics.criteria import CRITERIA, THRESHOLDS

from ..conftest import assert_untouched, asset_images, fingerprint

FAST = {"steps": 4, "sensitivity_samples": 2, "sanity_layers": 2, "batch_size": 2}
TIMING = {"ms_per_image"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    images = asset_images("foolbox/cifar10_0[0-3]*.png")
    masks = [torch.zeros(32, 32, dtype=torch.bool), None,
             torch.zeros(64, 64, dtype=torch.bool), None]
    masks[0][8:24, 8:24] = True
    masks[2][0:32, 16:48] = True  # another size: resized (nearest) to 32x32
    return images, masks


class Killed(Exception):
    pass


def kill_after(batches: int):
    seen = []

    def progress(method, done, total):
        seen.append(done)
        if len(seen) == batches:
            raise Killed

    return progress


def comparable(table):
    rows = []
    for row in table.rows:
        row = json.loads(json.dumps(row))
        if row["status"] == "ok":
            for key in TIMING:
                row["figures"].pop(key)
            row["measured"].pop("real-time capability")
            row["grades"].pop("real-time capability")
        rows.append(row)
    return rows


def test_killed_run_resumes_to_the_same_table_without_double_counting(resnet20, data,
                                                                        tmp_path):
    images, masks = data
    methods = ["saliency", "gradcam"]
    before = fingerprint(resnet20.module)
    full = evaluate(resnet20, images, masks, methods, tmp_path / "full", **FAST)
    with pytest.raises(Killed):  # dies after saliency's first batch and gradcam's first
        evaluate(resnet20, images, masks, methods, tmp_path / "resumed",
                 progress=kill_after(3), **FAST)
    results = tmp_path / "resumed" / "results.jsonl"
    assert len(read_records(results)) == 6
    with results.open("a") as f:
        f.write('{"method": "gradcam", "image": "cifar')  # a line torn by the kill
    resumed = evaluate(resnet20, images, masks, methods, tmp_path / "resumed", **FAST)
    assert_untouched(before, resnet20.module)
    recs = read_records(results)
    keys = [(r["method"], r["image"]) for r in recs]
    assert len(keys) == len(set(keys)) == 8
    assert results.read_text().count("\n") == 8
    csv_lines = (tmp_path / "resumed" / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 8
    a, b = comparable(full), comparable(resumed)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or _close(a, b)
    saved = json.loads((tmp_path / "resumed" / "criteria.json").read_text())
    assert saved["criteria"] == list(CRITERIA) and len(saved["rows"]) == 2


def _close(a, b) -> bool:
    for ra, rb in zip(a, b, strict=True):
        assert ra["grades"] == rb["grades"]
        for k, v in ra["figures"].items():
            w = rb["figures"][k]
            if isinstance(v, float) and not (math.isnan(v) and math.isnan(w)):
                assert v == pytest.approx(w, rel=1e-6, abs=1e-9), k
            elif not isinstance(v, float):
                assert v == w, k
    return True


def test_table_figures_grades_and_missing_masks(resnet20, data):
    images, masks = data
    table = evaluate(resnet20, images, masks, ["saliency", "gradcam"], **FAST)
    sal, cam = table.rows
    assert sal["figures"]["images"] == 4 and sal["figures"]["images_with_mask"] == 2
    assert sal["figures"]["native_px_per_cell"] == 1.0
    assert cam["figures"]["native_px_per_cell"] == 16.0  # 8x8 feature map of a 32x32 input
    assert sal["grades"]["model agnosticism"] == "+" and cam["grades"]["colour bias"] == "-"
    assert cam["measured"]["colour bias"]["value"] == "cannot show"
    assert sal["measured"]["colour bias"]["value"] == "not measured"  # no colour check run
    for row in table.rows:
        assert set(row["grades"]) == set(CRITERIA)
        for c in CRITERIA:
            assert row["grades"][c] == THRESHOLDS[c].grade(row["measured"][c]["value"]) or (
                c in ("robustness", "intuitive interpretability", "colour bias"))
        assert 0 <= row["figures"]["pointing_game"] <= 1
    assert "| saliency |" in table.to_markdown()
    settings = table.to_dict()["settings"]  # what criteria.json states the run used
    assert settings["steps"] == 4 and settings["sensitivity_samples"] == 2
    assert settings["methods"]["saliency"]["reduction"] == "max_abs"


def test_evaluation_settings_scale_to_the_input_and_keep_the_users(resnet20):
    occ = evaluation_params(resnet20, "occlusion", {})
    assert (occ["window"], occ["stride"], occ["mode"]) == (4, 4, "exact")  # 8 x 8 tiles
    mine = evaluation_params(resnet20, "occlusion", {"window": 2, "mode": "auto"})
    assert mine == {"window": 2, "mode": "auto"}
    assert evaluation_params(resnet20, "area_occlusion", {})["segmenter_options"] == {
        "n_segments": 64}
    assert evaluation_params(resnet20, "rise", {"n_masks": 50})["n_masks"] == 50
    assert evaluation_params(resnet20, "rise", {})["n_masks"] == 250
    assert evaluation_params(resnet20, "smoothgrad", {})["n"] == 16
    assert evaluation_params(resnet20, "saliency", {}) == {}


def test_method_that_cannot_run_is_not_applicable_with_reason(lenet):
    x = lenet.preprocess(asset_images("foolbox/cifar10_0[0-1]*.png"))
    table = evaluate(lenet, x, methods=["cam", "saliency"], **FAST)
    cam, sal = table.rows
    assert cam["status"] == "not applicable" and "global average pooling" in cam["reason"]
    assert sal["status"] == "ok"


def test_bad_input(resnet20, data):
    images, masks = data
    with pytest.raises(InputError, match="3 masks for 4 images"):
        evaluate(resnet20, images, masks[:3], ["saliency"], **FAST)
    with pytest.raises(InputError, match="2-D"):
        evaluate(resnet20, images[:1], [torch.zeros(2, 3, 4, 4)], ["saliency"], **FAST)
    with pytest.raises(InputError, match="unknown method"):
        evaluate(resnet20, images[:1], None, ["nope"], **FAST)


def test_collect_matches_masks_by_stem(tmp_path):
    from PIL import Image

    from mindlens.evaluate import collect, load_mask

    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / f"{name}.png")
    m = Image.new("L", (16, 16))
    m.paste(255, (0, 0, 8, 16))
    m.save(tmp_path / "mask" / "b.png")
    images, masks = collect(tmp_path / "img", tmp_path / "mask")
    assert [p.name for p in images] == ["a.png", "b.png"]
    assert masks[0] is None and masks[1].name == "b.png"
    mk = load_mask(masks[1], (8, 8), "b.png")
    assert mk.dtype == torch.bool and mk[:, :4].all() and not mk[:, 4:].any()
    with pytest.raises(InputError, match="not a folder"):
        collect(tmp_path / "nothing")
