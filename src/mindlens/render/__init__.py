"""Pictures from raw maps: colour maps, overlays, panels and the HTML report.

Methods return raw, signed numbers; every normalisation for display happens here.
"""

from .colors import DisplayMap, colorize, gray_saliency, to_display
from .overlay import overlay, png_bytes, png_data_uri

__all__ = ["DisplayMap", "colorize", "gray_saliency", "overlay", "png_bytes", "png_data_uri",
           "to_display"]
