"""The verdict's numbers, checked against hand-counted maps and marks."""

from __future__ import annotations

import numpy as np
import pytest

from mindlens.verdict import Words, evidence_region, measure


def _marks() -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[5:8, 5:8] = True      # lesion 1
    m[30:33, 30:33] = True  # lesion 2
    m[5:8, 30:33] = True    # lesion 3
    return m


def test_evidence_region_is_the_top_fraction_of_positive_values():
    a = np.arange(100, dtype=float).reshape(10, 10) - 50  # 49 positive values
    assert evidence_region(a, 0.1).sum() == 10
    assert evidence_region(a, 0.9).sum() == 49  # never a non-positive pixel
    assert not evidence_region(-np.ones((4, 4))).any()


def test_counts_the_lesions_the_evidence_touches_and_the_share_outside():
    a = np.zeros((40, 40))
    a[5:8, 5:8] = 3.0       # on lesion 1
    a[30:33, 30:33] = 1.0   # on lesion 2
    a[20:22, 15:17] = 2.0   # far from every lesion: 4 px of weight 2
    v = measure(a, _marks(), fraction=22 / 1600, tolerance=0, words=Words("lesion", "lesions"))
    assert (v.regions_hit, v.regions_total) == (2, 3)
    inside, outside = 9 * 3.0 + 9 * 1.0, 4 * 2.0
    assert v.share_outside == pytest.approx(outside / (inside + outside))
    assert "lies on 2 of the 3 lesions; 18% of it lies outside them" in v.sentence
    assert v.marks_area == pytest.approx(27 / 1600)
    assert "they cover 2% of the image" in v.sentence
    assert not v.banners


def test_banners_for_evidence_away_from_the_marks_and_on_a_marker():
    a = np.zeros((40, 40))
    a[35:39, 0:4] = 5.0  # all evidence on a corner tag
    marker = np.zeros((40, 40), bool)
    marker[35:39, 0:4] = True
    v = measure(a, _marks(), marker, fraction=16 / 1600, tolerance=1,
                words=Words(marker="the corner marker", subject="the retina"))
    kinds = [b.kind for b in v.banners]
    assert kinds == ["away", "marker"] and v.share_outside == pytest.approx(1.0)
    assert v.share_on_marker == pytest.approx(1.0)
    assert "points at the corner marker, not at the retina" in v.banners[1].text
    assert v.status == "points at the corner marker"
    # 4x4 at the left edge, dilated by 1 px (4-neighbours): 16 + 3 sides x 4
    assert v.marker_area == pytest.approx(28 / 1600)
    assert "100% of it lies on the corner marker, which covers 2% of the image" \
        in v.banners[1].text


def test_no_marks_and_no_evidence_say_so():
    assert "No marked regions" in measure(np.ones((8, 8))).sentence
    assert measure(np.zeros((8, 8))).status == "no evidence"
