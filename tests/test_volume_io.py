"""Reading volumes (NIfTI through nibabel, .npy) and preprocessing them for a volume model
whose card gives input_size [D, H, W]; 2-D input specs keep working."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import mindlens
from mindlens.io import read_volume
from mindlens.model import InputSpec


def test_read_nifti_and_npy(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii"))
    np.save(tmp_path / "v.npy", vol)
    for name in ("v.nii.gz", "v.nii", "v.npy"):
        got = read_volume(tmp_path / name)
        assert got.dtype == np.float32 and got.shape == (4, 5, 6)
        assert np.array_equal(got, vol)  # voxel order as stored, raw intensities
    four = np.random.default_rng(0).random((4, 5, 6, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(four, np.eye(4)), str(tmp_path / "c.nii.gz"))
    got = read_volume(tmp_path / "c.nii.gz")
    assert got.shape == (2, 4, 5, 6)  # NIfTI's 4th axis becomes channels-first
    np.testing.assert_array_equal(got[1], four[..., 1])


def test_volume_errors(tmp_path, monkeypatch):
    with pytest.raises(mindlens.InputError, match="not found"):
        read_volume(tmp_path / "nope.nii.gz")
    np.save(tmp_path / "flat.npy", np.zeros((5, 6)))
    with pytest.raises(mindlens.InputError, match=r"\[D, H, W\] or \[C, D, H, W\]"):
        read_volume(tmp_path / "flat.npy")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(mindlens.InputError, match="cannot read"):
        read_volume(tmp_path / "bad.nii.gz")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # nibabel not installed
    with pytest.raises(mindlens.InputError, match=r"needs nibabel.*mindlens\[volumes\]"):
        read_volume(tmp_path / "bad.nii.gz")


def test_input_spec_takes_two_or_three_sizes():
    assert InputSpec((4, 5, 6), channels=1, mean=(0.5,), std=(0.25,)).size == (4, 5, 6)
    for bad in ((4,), (1, 2, 3, 4), (4, 0, 5)):
        with pytest.raises(mindlens.InputError, match=r"\[D, H, W\]"):
            InputSpec(bad)
    spec = InputSpec((4, 5, 6), channels=1, mean=(0.5,), std=(0.25,))
    px = torch.rand(2, 1, 4, 5, 6)
    torch.testing.assert_close(spec.denormalize(spec.normalize(px)), px)


def test_preprocess_volumes_scales_resizes_and_checks_channels():
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(2, 2))
    clf = mindlens.Classifier(net, (4, 6, 6), channels=1, mean=(0.5,), std=(0.25,))
    vol = np.random.default_rng(0).normal(300, 50, (4, 6, 6)).astype(np.float32)
    x = clf.preprocess(vol)
    assert x.shape == (1, 1, 4, 6, 6)
    px = clf.spec.denormalize(x)[0, 0].numpy()
    np.testing.assert_allclose(px, (vol - vol.min()) / (vol.max() - vol.min()), atol=1e-6)
    big = clf.preprocess(np.repeat(vol, 2, axis=0))  # resized trilinearly to 4x6x6
    assert big.shape == (1, 1, 4, 6, 6)
    assert clf.display_pixels(x).shape == (1, 4, 6, 6, 3)
    with pytest.raises(mindlens.InputError, match="3 channels"):
        clf.preprocess(np.zeros((3, 4, 6, 6), np.float32))
    with pytest.raises(mindlens.InputError, match="volume"):
        clf.preprocess(np.zeros((6, 6), np.float32))
