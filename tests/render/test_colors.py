"""Display scaling: signed maps keep zero at the centre; flat maps are flagged."""

import numpy as np
import torch

from mindlens.render import colorize, gray_saliency, overlay, to_display
from mindlens.render.colors import DisplayMap


def test_signed_maps_are_scaled_by_max_abs():
    m = torch.tensor([[-2.0, 0.0], [1.0, 4.0]])
    d = to_display(m, signed=True)
    np.testing.assert_allclose(d.values, [[-0.5, 0.0], [0.25, 1.0]])
    assert not d.degenerate and d.scale == 4.0


def test_unsigned_maps_are_min_max_scaled():
    d = to_display(torch.tensor([[1.0, 3.0], [2.0, 5.0]]), signed=False)
    np.testing.assert_allclose(d.values, [[0.0, 0.5], [0.25, 1.0]])


def test_flat_map_is_degenerate_not_nan():
    for signed in (True, False):
        d = to_display(torch.full((4, 4), 3.0 if not signed else 0.0), signed=signed)
        assert d.degenerate and np.all(d.values == 0)


def test_diverging_colours_are_neutral_at_zero():
    d = to_display(torch.tensor([[-1.0, 0.0, 1.0]]), signed=True)
    rgb = colorize(d).astype(int)
    assert rgb[0, 0, 2] > rgb[0, 0, 0]  # negative: blue
    assert rgb[0, 2, 0] > rgb[0, 2, 2]  # positive: red
    assert abs(rgb[0, 1, 0] - rgb[0, 1, 2]) < 20  # zero: near white/gray


def test_gray_saliency_and_overlay_shapes():
    m = torch.rand(8, 8)
    g = gray_saliency(m)
    assert g.dtype == np.uint8 and g.max() == 255 and g.min() == 0
    img = np.zeros((8, 8, 3), np.uint8)
    out = overlay(img, to_display(m, False))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_colorize_gives_matplotlibs_bytes_edges_included():
    import matplotlib

    rng = np.random.default_rng(0)
    for signed, name in ((False, "inferno"), (True, "RdBu_r")):
        v = rng.random((16, 16)).astype(np.float32) * (2 if signed else 1) - signed
        v.flat[:9] = [0, 1, -1, 0.5, np.nan, 1 / 256, 255 / 256, 2, -2]
        t = (v + 1) / 2 if signed else v
        want = (matplotlib.colormaps[name](t)[..., :3] * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(colorize(DisplayMap(v, signed, False, 1.0)), want)
