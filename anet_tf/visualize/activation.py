"""The activation-map picture: the unified attribute map G (eq. 5) and the
distilled map G_reid (eq. 6) over each image, as in Figure 4 (rows 2 and 3); the
maps come from :func:`anet_tf.evaluation.activation.activation_maps`."""

from __future__ import annotations

from collections.abc import Sequence

from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import save_png

# Activation maps: square cells, a label column on the left, a title band.
ACT_CELL = 1.6
ACT_LABEL_W = 0.35
HEADER_H = 0.35


def activation_size(num_images: int, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_activation_maps`."""
    return (
        round((ACT_LABEL_W + num_images * ACT_CELL) * dpi),
        round((3 * ACT_CELL + HEADER_H) * dpi),
    )


def plot_activation_maps(
    maps: dict,
    out_path: str,
    *,
    titles: Sequence[str] | None = None,
    title: str = "",
    dpi: int = DPI,
) -> str:
    """Rows: the image, G over it, G_reid over it (jet colour map, half
    transparent); one column per image.

    Args:
        maps: the dict of
            :func:`~anet_tf.evaluation.activation.activation_maps`.
        titles: a short caption per image (e.g. its file name).

    Returns:
        ``out_path``; the PNG is :func:`activation_size` pixels.
    """
    pixels = maps["pixels"]
    n = len(pixels)
    if n == 0:
        raise VisualizeError("activation maps need at least one image")
    width_px, height_px = activation_size(n, dpi)
    fig = figure(width_px / dpi, height_px / dpi, dpi)
    label_w = ACT_LABEL_W * dpi / width_px
    cell_w = (1 - label_w) / n
    band = HEADER_H * dpi / height_px
    cell_h = (1 - band) / 3
    fig.text(
        0.01,
        1 - 0.5 * band,
        title or "activation maps (Figure 4, rows 2-3)",
        va="center",
        fontsize=10,
    )
    rows = [("image", None), ("G (eq. 5)", "G"), ("G_reid (eq. 6)", "G_reid")]
    for r, (label, key) in enumerate(rows):
        top = 1 - band - r * cell_h
        fig.text(
            0.5 * label_w,
            top - 0.5 * cell_h,
            label,
            rotation=90,
            ha="center",
            va="center",
            fontsize=9,
        )
        for c in range(n):
            ax = fig.add_axes(
                [
                    label_w + c * cell_w + 0.04 * cell_w,
                    top - 0.9 * cell_h,
                    0.92 * cell_w,
                    0.84 * cell_h,
                ]
            )
            ax.imshow(pixels[c])
            if key is not None:
                ax.imshow(maps[key][c], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            ax.set_axis_off()
            if r == 0 and titles:
                ax.set_title(titles[c], fontsize=7, pad=2)
    return save_png(fig, out_path)
