"""The synthetic retina generator and its shortcut variant: determinism and exact masks."""

from __future__ import annotations

import numpy as np
import pytest

from mindlens.demo import retina, shortcut


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return retina.generate(48, seed=7)


def test_types_and_shapes(batch):
    images, labels, masks = batch
    assert images.dtype == np.uint8 and images.shape == (48, 128, 128, 3)
    assert labels.dtype == np.int64 and labels.shape == (48,)
    assert masks.dtype == bool and masks.shape == (48, 128, 128)
    assert set(labels.tolist()) == {0, 1} and labels.sum() == 24


def test_same_seed_same_bytes_other_seed_other_bytes(batch):
    again = retina.generate(48, seed=7)
    for a, b in zip(batch, again, strict=True):
        assert a.tobytes() == b.tobytes()
    other = retina.generate(48, seed=8)[0]
    assert other.tobytes() != batch[0].tobytes()
    assert (other != batch[0]).mean() > 0.5


def test_masks_are_exactly_the_drawn_lesions(batch):
    images, labels, masks = batch
    clean, clean_labels, clean_masks = retina.generate(48, seed=7, lesions=False)
    assert np.array_equal(labels, clean_labels) and np.array_equal(masks, clean_masks)
    changed = (images != clean).any(-1)
    assert np.array_equal(changed, masks)


def test_healthy_images_have_no_lesions_and_diseased_have_some(batch):
    _, labels, masks = batch
    area = masks.sum((1, 2))
    assert (area[labels == 0] == 0).all()
    assert (area[labels == 1] > 0).all()
    assert (area < 0.05 * 128 * 128).all()  # small lesions, not big colour patches


def test_lesions_are_red_or_yellow_and_lie_on_the_retina(batch):
    images, _, masks = batch
    clean = retina.generate(48, seed=7, lesions=False)[0].astype(int)
    diff = images.astype(int) - clean
    red = diff[masks][:, 0] < 0  # red lesions darken, exudates brighten green
    yellow = diff[masks][:, 1] > 0
    assert (red | yellow).all()
    assert (clean[masks][:, 0] > 40).all()  # retinal (not background) pixels


def test_class_is_not_given_away_by_colour_or_brightness():
    images, labels, _ = retina.generate(200, seed=11)
    mean = images.reshape(len(images), -1, 3).mean(1)
    # the global colour differs between classes by far less than it varies between images
    gap = np.abs(mean[labels == 1].mean(0) - mean[labels == 0].mean(0))
    assert (gap < 0.25 * mean.std(0)).all()


def test_shortcut_marker_follows_the_split():
    x, y, lesions, marks = shortcut.generate(40, seed=5, split="train")
    assert (marks[y == 1].any((1, 2))).all() and not marks[y == 0].any()
    assert not (marks & lesions).any()
    base = retina.generate(40, seed=5)[0]
    assert np.array_equal((x != base).any(-1) & ~marks, np.zeros_like(marks))
    _, y2, _, marks2 = shortcut.generate(40, seed=5, split="swapped", marker="tag")
    assert (marks2[y2 == 0].any((1, 2))).all() and not marks2[y2 == 1].any()
    x3, _, _, marks3 = shortcut.generate(40, seed=5, split="test")
    assert not marks3.any() and np.array_equal(x3, base)
    # the marker sits on the black background, never on the retina
    assert (base[marks].max(-1) < 40).all()
    with pytest.raises(ValueError, match="split"):
        shortcut.generate(2, split="validation")
