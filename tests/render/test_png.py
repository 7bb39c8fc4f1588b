"""The web app's fast PNG writer: lossless for every channel count, refuses what PNG-8
cannot hold."""

import io

import numpy as np
import pytest
from PIL import Image

from mindlens.render.png import fast_png, fast_png_uri


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 1), (9, 4, 2), (31, 17, 3), (3, 8, 4), (1, 1, 3)])
def test_fast_png_is_lossless(shape):
    a = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(fast_png(a))))
    np.testing.assert_array_equal(back.reshape(a.shape), a)


def test_fast_png_uri_and_refusals():
    assert fast_png_uri(np.zeros((2, 2, 3), np.uint8)).startswith("data:image/png;base64,iVBOR")
    with pytest.raises(ValueError, match="uint8"):
        fast_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="pixels"):
        fast_png(np.zeros((2, 2, 5), np.uint8))
