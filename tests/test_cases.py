"""The orchestration layer: one call explains inputs, decides, measures and writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mindlens import cases, load_model
from mindlens.errors import InputError
from mindlens.provenance import FIELDS

from .tinynet import write_card


@pytest.fixture
def clf(tmp_path):
    return load_model(write_card(tmp_path))


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_run_gives_a_decision_a_verdict_and_the_maps(clf):
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    req = cases.Request(methods=["gradcam", "saliency"], top_k=2)
    found = cases.run(clf, [cases.Input(_image(), name="a", label="dog", mask=mask)], req)
    (case,) = found
    probs = clf.predict(clf.preprocess(_image()))[0]
    assert case.decision.index == int(probs.argmax())
    assert case.decision.probability == pytest.approx(float(probs.max()))
    assert case.decision.wrong == (int(probs.argmax()) != 1)
    assert ("The model was wrong" in case.decision.sentence) == case.decision.wrong
    assert case.trusted == "gradcam" and "default" in case.trusted_why
    assert case.verdict is not None and case.verdict.regions_total == 1
    assert [(m.method, m.target) for m in case.maps][:2] == [
        ("gradcam", int(probs.topk(2).indices[0])), ("gradcam", int(probs.topk(2).indices[1]))]
    data = json.loads(json.dumps(case.to_dict()))  # JSON-ready
    assert data["decision"]["label"] == case.decision.label
    assert data["verdict"]["sentence"] == case.verdict.sentence


def test_trusted_method_from_an_evaluation(clf):
    rows = [{"method": m, "status": "ok", "figures": {},
             "grades": {"intuitive interpretability": g},
             "measured": {"intuitive interpretability": {"value": v}}}
            for m, g, v in (("gradcam", "0", 0.3), ("saliency", "++", 0.9))]
    req = cases.Request(methods=["gradcam", "saliency"], criteria={"rows": rows})
    (case,) = cases.run(clf, [_image()], req)
    assert case.trusted == "saliency" and "recommended by the evaluation" in case.trusted_why


def test_target_by_class_name_with_did_you_mean(clf):
    (case,) = cases.run(clf, [_image()], cases.Request(methods=["gradcam"], target="bird"))
    assert int(case.explanations["gradcam"].targets[0, 0]) == 2
    with pytest.raises(InputError, match="did you mean 'bird'"):
        cases.run(clf, [_image()], cases.Request(methods=["gradcam"], target="birb"))


def test_every_output_carries_the_provenance_fields(clf, tmp_path):
    req = cases.Request(methods=["gradcam", "saliency", "occlusion"], top_k=2,
                        params={"occlusion": {"window": 4}})
    found = cases.run(clf, [_image(0), _image(1)], req)
    paths = cases.write_outputs(found, tmp_path / "out", request=req)
    card_hash = clf.card_sha256
    assert card_hash and len(card_hash) == 64

    def check(rec: dict, method: str) -> None:
        assert set(FIELDS) <= set(rec), set(FIELDS) - set(rec)
        assert rec["method"] == method and rec["model_card_sha256"] == card_hash
        assert rec["mindlens_version"] == "0.1.0"
        assert len(rec["targets"]) == len(rec["labels"]) == 2
        assert all(lab in ("cat", "dog", "bird") for lab in rec["labels"])
        from mindlens import methods

        # every default is filled in
        assert set(methods.get(method).defaults) <= set(rec["params"])

    # Explanation.params
    for case in found:
        for name, e in case.explanations.items():
            check({**e.params["provenance"], "targets": e.params["provenance"]["targets"][0],
                   "labels": e.params["provenance"]["labels"][0]}, name)
    assert found[0].explanations["gradcam"].params["provenance"]["layer"] == "conv2"
    assert tuple(found[0].explanations["occlusion"].params["window"]) == (4, 4)
    # summary.json
    summary = json.loads(paths["summary"].read_text())
    for entry in summary["images"].values():
        for m in entry["maps"]:
            check(m["provenance"], m["method"])
    # .npz
    for case in found:
        prov = json.loads(np.load(tmp_path / "out" / f"{case.id}.npz")["provenance"].item())
        for name, rec in prov.items():
            check(rec, name)
    # report
    html = paths["report"].read_text()
    assert html.count("data-provenance") == 2 and card_hash in html and "conv2" in html


def test_a_folder_is_expanded_to_its_images(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(_image(i)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in cases.expand_paths([tmp_path])] == ["0.png", "1.png", "2.png"]
    with pytest.raises(InputError, match="no images"):
        cases.expand_paths([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None
                           else [])


def test_a_method_that_cannot_run_is_skipped_with_its_reason(clf):
    from mindlens import Classifier

    box = Classifier(clf.module, clf.input_size, mean=clf.mean, std=clf.std,
                     labels=clf.labels, black_box=True)
    heard = []
    req = cases.Request(methods=["gradcam", "occlusion"], params={"occlusion": {"window": 4}})
    found = cases.run(box, [_image(0), _image(1)], req, warn=lambda m, why: heard.append(m))
    assert heard == ["gradcam"]  # told once, not tried again on the same model
    for c in found:
        assert "black box" in c.skipped["gradcam"] and list(c.explanations) == ["occlusion"]
        assert c.trusted == "occlusion"


def test_the_lrp_legend_states_the_measured_conservation(clf, tmp_path):
    found = cases.run(clf, [_image(0), _image(1)], cases.Request(methods=["lrp"], top_k=2))
    html = cases.write_outputs(found, tmp_path / "o")["report"].read_text()
    sums = sorted(float(v) for c in found
                  for v in c.explanations["lrp"].extras["conservation"][0])
    note = html.split("data-conservation>")[1].split("</div>")[0]
    assert f"adds up to {sums[0]:.2f} to {sums[-1]:.2f}" in note
    assert "flat and epsilon rules" in note and "biases" in note
