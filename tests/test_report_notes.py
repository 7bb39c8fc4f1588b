"""The report's plain-words note under an approximate occlusion map."""

from __future__ import annotations

import pytest

from mindlens.report import _checked


@pytest.mark.parametrize(("approx", "words"), [
    ({"check_windows": 8, "relative_error": 0.25}, "off by up to 25% of their largest drop"),
    ({"check_windows": 8, "relative_error": 0.004}, "off by up to 0.4% of their largest"),
    ({"check_windows": 8, "relative_error": 0.0}, "off by less than 0.1% of their"),
    ({"check_windows": 8, "relative_error": None}, "did not move the score"),
    ({"check_windows": 0, "relative_error": None}, "not measured (check_windows=0)"),
])
def test_the_preview_note_says_what_the_check_found(approx, words):
    assert words in _checked(approx)
