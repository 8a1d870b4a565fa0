"""What the pictures share: their error, resolution and frame colours, a
matplotlib figure of a fixed size, PNG writing and reading an image for a picture."""

from __future__ import annotations

import os

import numpy as np


class VisualizeError(ValueError):
    """Input a picture cannot be drawn from, said for people (what, where, what
    would be right)."""


DPI = 100
COLORS = {
    "match": "#1a9850",
    "wrong": "#d73027",
    "unknown": "#9e9e9e",
    "query": "#2166ac",
}


def figure(width_in: float, height_in: float, dpi: int):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise VisualizeError(
            "pictures need matplotlib: pip install 'anet-tf[viz]' (matplotlib)"
        ) from None
    return Figure(figsize=(width_in, height_in), dpi=dpi)


def save_png(fig, out_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out_path, dpi=fig.dpi, format="png")
    return out_path


def load_rgb(path: str, size: int | None = None) -> np.ndarray:
    """An image as uint8 RGB (a grey square when unreadable, so one lost file does
    not lose the picture), fitted into ``size`` x ``size`` when given."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None:
                im.thumbnail((size, size))
            return np.asarray(im)
    except (OSError, ValueError):
        side = size or 64
        return np.full((side, side, 3), 200, np.uint8)
