"""The audit's flags read as plain sentences: a fixed place named by its cell, and evidence
that stays on the same pixels spread over the whole frame said as such."""

from __future__ import annotations

import numpy as np

from mindlens.spray import location
from mindlens.spray.audit import _flag


def test_flag_words() -> None:
    uniform = np.full((12, 12), 1 / 144)
    assert location.where(uniform) == location.SPREAD
    spread = {"fixed": True, "where": location.where(uniform)}
    assert _flag("the images called 'healthy'", 0.31, spread, None, "lesion") == (
        "In 31% of the images called 'healthy' the evidence sits at the same places in every "
        "image, spread over the image.")
    corner = np.zeros((12, 12))
    corner[:3, :3] = 1 / 9
    loc = {"fixed": True, "where": location.where(corner)}
    assert _flag("the images called 'diseased'", 0.14, loc, 0.01, "lesion") == (
        "In 14% of the images called 'diseased' the evidence sits at a fixed place, the "
        "upper-left corner, where no lesion is marked (1% of it inside the marks).")
    moving = {"fixed": False, "where": "centre"}
    assert _flag("the images called 'diseased'", 0.14, moving, None, "lesion") is None
