"""Slice montages: evenly spaced slices, one colour scale for the whole volume."""

from __future__ import annotations

import numpy as np

from mindlens.render.montage import montage, slice_indices, stack


def test_slice_indices_are_evenly_spaced():
    assert slice_indices(5, 12) == [0, 1, 2, 3, 4]
    picks = slice_indices(120, 12)
    assert len(picks) == 12 and picks[0] == 5 and picks[-1] == 115
    assert len(set(np.diff(picks))) == 1


def test_montage_grid_and_one_scale_for_the_volume():
    volume = np.full((24, 10, 10, 3), 128, np.uint8)
    m = np.zeros((24, 10, 10))
    m[13] = 1.0  # strong evidence on one picked slice (13 = int(6.5 * 24 / 12))
    m[1, :5] = 0.05  # weak evidence on another: faint on the shared scale
    pic = montage(volume, m, signed=False, n_slices=12, columns=4, tile=40)
    assert pic.shape == (3 * (40 + 22), 4 * 40, 3)
    tiles = {d: pic[r * 62 : r * 62 + 40, c * 40 : (c + 1) * 40].astype(int)
             for (r, c), d in zip([(i // 4, i % 4) for i in range(12)], slice_indices(24, 12),
                                  strict=True)}
    plain = montage(volume, None, n_slices=12, columns=4, tile=40)
    assert np.abs(tiles[13] - 128).max() > 50  # the hot slice is coloured
    assert 0 < np.abs(tiles[1] - plain[:40, :40]).max() < 12
    for d, t in tiles.items():  # the others stay the plain image (zero on the shared scale)
        if d not in (1, 13):
            np.testing.assert_array_equal(t, plain[:40, :40])
    both = stack([("a", plain), ("b", pic)])
    assert both.shape[0] == plain.shape[0] + pic.shape[0] + 2 * (22 + 6)
