"""Pictures from raw maps: colour maps, overlays, panels and the HTML report.

Methods return raw, signed numbers; every normalisation for display happens here.
"""

from .colors import DisplayMap, colorize, gray_saliency, to_display
from .evidence import as_rgb, desaturate, distinct_colours, outline_picture
from .overlay import mask_outline, overlay, png_bytes, png_data_uri

__all__ = ["DisplayMap", "as_rgb", "colorize", "desaturate", "distinct_colours",
           "gray_saliency", "mask_outline", "outline_picture", "overlay", "png_bytes",
           "png_data_uri", "to_display"]
