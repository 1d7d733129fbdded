"""Figures: class palettes, label colouring, overlays and image / label / prediction grids."""
from .palettes import BACKGROUND_COLOUR, IGNORE_COLOUR, class_palette, colorize, overlay, to_uint8_image
from .plots import legend_patches, plot_class_colours, show_samples

__all__ = ["BACKGROUND_COLOUR", "IGNORE_COLOUR", "class_palette", "colorize", "legend_patches", "overlay",
           "plot_class_colours", "show_samples", "to_uint8_image"]
