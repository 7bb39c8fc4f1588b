"""Ground truth for the audit: the demo shortcut model, on diseased retina images of which
a known subset carries the clinic's marker in the upper-left corner. Scanning its maps for
class "diseased" and auditing must put the marker images in a cluster of their own and
flag it as sitting at a fixed place; the clean retina model gets no such flag. The
measured figures are printed (``-s``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from mindlens import audit, scan

from ..scans.data import RETINA_CARD, SHORTCUT_CARD, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bool]]:
    root = tmp_path_factory.mktemp("ground-truth")
    return root, write_images(root, 160, diseased_only=True)  # 80 diseased, 20 marked


def audited(card: Path, method: str, root: Path, out: Path) -> dict:
    scan(card, root / "images", [method], out / "store", masks=root / "masks",
         target="label", batch_size=20)
    return audit(out / "store", out / "audit", classes=["diseased"], region="lesion")


def marker_cluster(c: dict, flags: dict[str, bool]) -> tuple[np.ndarray, np.ndarray, int]:
    truth = np.array([flags[r["id"]] for r in c["rows"]])
    labels = np.array(c["labels"])
    return truth, labels, int(np.bincount(labels[truth]).argmax())


@pytest.mark.parametrize("method", ["lrp", "gradcam"])
def test_shortcut_marker_images_form_a_flagged_cluster(data, tmp_path: Path,
                                                       method: str) -> None:
    root, flags = data
    c = audited(SHORTCUT_CARD, method, root, tmp_path)["classes"]["diseased"]
    truth, labels, k = marker_cluster(c, flags)
    ari = adjusted_rand_score(truth, labels)
    own = adjusted_rand_score(truth, labels == k)  # the marker cluster against the rest
    cl = c["clusters"][k]
    print(f"\n{method}: {truth.sum()} marker images of {len(truth)}; k* = {c['k']}, ARI "
          f"{ari:.3f}, marker cluster vs rest ARI {own:.3f}; consistency "
          f"{[round(x['consistency'], 2) for x in c['clusters']]}; flags {c['flags']}")
    assert own >= 0.8  # the marker images are a cluster of their own
    if method == "lrp":
        assert c["k"] == 2 and ari >= 0.8
    assert cl["fixed_location"] and cl["where"] == "upper-left corner"
    assert any("upper-left corner, where no lesion is marked" in f for f in cl["flags"])
    others = [x for i, x in enumerate(c["clusters"]) if i != k]
    assert not any(x["fixed_location"] for x in others)


@pytest.mark.parametrize("method", ["lrp", "gradcam"])
def test_clean_model_gets_no_fixed_place_flag(data, tmp_path: Path, method: str) -> None:
    root, flags = data
    c = audited(RETINA_CARD, method, root, tmp_path)["classes"]["diseased"]
    truth, labels, _ = marker_cluster(c, flags)
    print(f"\nclean {method}: k* = {c['k']}, ARI vs marker {adjusted_rand_score(truth, labels):.3f}"
          f", consistency {[round(x['consistency'], 2) for x in c['clusters']]}")
    assert not c["flags"] and not any(x["fixed_location"] for x in c["clusters"])
