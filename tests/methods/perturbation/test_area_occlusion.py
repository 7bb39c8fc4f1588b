"""Area occlusion: equals occluding each region by hand, segmenters, atlases, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import mindlens
from mindlens.errors import InputError
from mindlens.methods.perturbation.area_occlusion import AreaOcclusion, segment
from mindlens.methods.perturbation.occlusion import Occlusion
from mindlens.targets import Targets

from ...conftest import assert_untouched, fingerprint
from .test_occlusion import tiny_cnn


def by_hand(clf, x, labels, base, top_k):
    """Occlude every region of every image in its own forward pass."""
    with torch.no_grad():
        logits = clf.module(x)
        classes = logits.topk(top_k, dim=1).indices
        s0 = logits.gather(1, classes)
        out = torch.zeros(x.shape[0], top_k, *x.shape[2:], dtype=x.dtype)
        drops = {}
        for b in range(x.shape[0]):
            for r in np.unique(labels[b]):
                if r == 0:
                    continue
                mask = torch.from_numpy(labels[b] == r)
                xo = x[b : b + 1].clone()
                xo[0][:, mask] = base[b][:, mask]
                d = s0[b] - clf.module(xo)[0, classes[b]]
                drops[b, int(r)] = d
                out[b, :, mask] = d[:, None]
    return out, drops


def test_label_map_equals_regions_by_hand():
    clf = mindlens.Classifier(tiny_cnn(), (9, 11), channels=2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64, generator=gen)
    labels = np.random.default_rng(0).choice([0, 1, 2, 5, 9], size=(2, 9, 11))
    base = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    ref, drops = by_hand(clf, x, labels, base, top_k=2)
    names = {1: "one", 5: "five"}
    e = AreaOcclusion(regions=labels, baseline="mean", score="logit", batch_size=3,
                      region_names=names).explain(clf, x, Targets(top_k=2))
    torch.testing.assert_close(e.maps, ref, rtol=0, atol=1e-12)
    table = e.extras["regions"][1]
    assert [row["id"] for row in table] == [1, 2, 5, 9]
    assert [row["name"] for row in table] == ["one", "region 2", "five", "region 9"]
    for row in table:
        np.testing.assert_allclose(row["drop"], drops[1, row["id"]].numpy(), atol=1e-12)
        assert row["size"] == int((labels[1] == row["id"]).sum())
    assert e.cost.forward == 5  # 4 regions + the clean pass; label 0 costs nothing


def test_grid_label_map_equals_occlusion_with_window_equal_stride():
    clf = mindlens.Classifier(tiny_cnn(), (8, 12), channels=2)
    x = torch.randn(1, 2, 8, 12, dtype=torch.float64)
    tiles = (np.arange(8)[:, None] // 4) * 3 + np.arange(12)[None] // 4 + 1
    a = AreaOcclusion(regions=tiles).explain(clf, x, Targets())
    b = Occlusion(window=4, stride=4).explain(clf, x, Targets())
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=1e-12)


@pytest.mark.parametrize("how", ["slic", "felzenszwalb", "quickshift"])
def test_superpixels_follow_skimage(how):
    clf = mindlens.Classifier(tiny_cnn(channels=3), (24, 24), channels=3,
                              mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    pixels = np.random.default_rng(1).random((24, 24, 3))
    pixels[:, 12:] *= 0.3
    x = clf.spec.normalize(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    opts = {"n_segments": 6} if how == "slic" else {}
    e = AreaOcclusion(regions=how, segmenter_options=opts, score="logit").explain(
        clf, x, Targets())
    expected = segment(pixels, how, opts)
    assert np.array_equal(e.extras["labels"][0].numpy(), expected)
    for row in e.extras["regions"][0]:
        values = e.maps[0, 0][torch.from_numpy(expected == row["id"])]
        assert torch.all(values == row["drop"][0])


def test_label_map_from_image_file_and_size_mismatch(tmp_path):
    clf = mindlens.Classifier(tiny_cnn(), (9, 11), channels=2)
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    labels = np.random.default_rng(2).integers(0, 4, size=(9, 11)).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    a = AreaOcclusion(regions=str(tmp_path / "labels.png")).explain(clf, x, Targets())
    b = AreaOcclusion(regions=labels).explain(clf, x, Targets())
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=0)
    Image.fromarray(np.zeros((10, 11), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(InputError, match=r"label map has shape \(10, 11\) but the image"):
        AreaOcclusion(regions=str(tmp_path / "small.png")).explain(clf, x, Targets())
    with pytest.raises(InputError, match="regions must be one of"):
        AreaOcclusion(regions="superpixels")


def test_nifti_atlas_3d_with_names_and_shape_mismatch(tmp_path):
    nib = pytest.importorskip("nibabel")
    clf = mindlens.Classifier(tiny_cnn(dims=3), (6, 7), channels=2)
    x = torch.randn(1, 2, 5, 6, 7, dtype=torch.float64)
    atlas = np.random.default_rng(3).integers(0, 4, size=(5, 6, 7)).astype(np.int16)
    nib.save(nib.Nifti1Image(atlas, np.eye(4)), str(tmp_path / "atlas.nii.gz"))
    (tmp_path / "names.txt").write_text("1 Hippocampus_L\n2 Hippocampus_R\n3 Amygdala_L\n")
    before = fingerprint(clf.module)
    e = AreaOcclusion(regions=str(tmp_path / "atlas.nii.gz"), score="logit",
                      region_names=str(tmp_path / "names.txt")).explain(clf, x, Targets())
    assert_untouched(before, clf.module)
    ref, _ = by_hand(clf, x, atlas[None].astype(np.int64), torch.zeros_like(x), top_k=1)
    torch.testing.assert_close(e.maps, ref, rtol=0, atol=1e-12)
    assert [r["name"] for r in e.extras["regions"][0]] == [
        "Hippocampus_L", "Hippocampus_R", "Amygdala_L"]
    nib.save(nib.Nifti1Image(atlas[:, :, :6], np.eye(4)), str(tmp_path / "bad.nii.gz"))
    with pytest.raises(InputError, match=r"atlas has shape \(5, 6, 6\) but the volume"):
        AreaOcclusion(regions=str(tmp_path / "bad.nii.gz")).explain(clf, x, Targets())


def test_model_untouched_on_real_model(resnet20):
    module = resnet20.module
    before = fingerprint(module)
    x = torch.randn(1, 3, 32, 32)
    e = mindlens.explain(resnet20, x, "area_occlusion", segmenter_options={"n_segments": 8})
    assert_untouched(before, module)
    assert e.maps.shape == (1, 1, 32, 32) and torch.isfinite(e.maps).all()
