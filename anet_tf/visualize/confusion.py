"""The confusion-matrix picture of one attribute branch, from the attribute
accuracy in a run's ``metrics.json``."""

from __future__ import annotations

import numpy as np

from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import save_png

# Confusion matrix: square cells, the matrix between CONF_MIN and CONF_MAX inches a
# side; margins for class names (left, bottom), the title and the colour bar.
CONF_CELL = 0.5
CONF_MIN = 3.0
CONF_MAX = 10.0
CONF_MARGINS = {"left": 1.6, "right": 1.1, "top": 0.7, "bottom": 1.4}


def confusion_size(num_classes: int, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_confusion`'s picture."""
    side = min(max(num_classes * CONF_CELL, CONF_MIN), CONF_MAX)
    w = CONF_MARGINS["left"] + side + CONF_MARGINS["right"]
    h = CONF_MARGINS["top"] + side + CONF_MARGINS["bottom"]
    return round(w * dpi), round(h * dpi)


def _rate(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def plot_confusion(name: str, accuracy: dict, out_path: str, *, dpi: int = DPI) -> str:
    """The confusion matrix of one attribute: rows = true class (with its number of
    labelled images), columns = predicted class; colours are row-normalised (the
    share of each true class predicted as each class, so rare classes show as
    clearly as common ones) and each cell shows its count (zeros in grey; no counts
    where cells are under 14 pt, i.e. beyond about 50 classes). The title gives
    top-1, balanced accuracy and the majority-class rate (chance).

    Args:
        name: the attribute.
        accuracy: its :func:`~anet_tf.evaluation.attributes.attribute_accuracy`.
        out_path: the PNG to write.

    Returns:
        ``out_path``; the PNG is :func:`confusion_size` pixels.
    """
    classes = list(accuracy["classes"])
    counts = np.asarray(accuracy["confusion"], np.int64)
    m = len(classes)
    totals = counts.sum(axis=1)
    rates = np.divide(counts, np.maximum(totals, 1)[:, None], dtype=np.float64)
    w_px, h_px = confusion_size(m, dpi)
    fig = figure(w_px / dpi, h_px / dpi, dpi)
    side = min(max(m * CONF_CELL, CONF_MIN), CONF_MAX)
    w_in, h_in = w_px / dpi, h_px / dpi
    left, bottom = CONF_MARGINS["left"], CONF_MARGINS["bottom"]
    ax = fig.add_axes([left / w_in, bottom / h_in, side / w_in, side / h_in])
    bar = fig.add_axes(
        [(left + side + 0.15) / w_in, bottom / h_in, 0.18 / w_in, side / h_in]
    )
    image = ax.imshow(
        rates, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    cell_pt = 72 * side / m
    label_size = max(4.0, min(8.0, 0.6 * cell_pt))
    if cell_pt >= 14:
        text_size = max(5.0, min(9.0, 0.35 * cell_pt))
        for i in range(m):
            for j in range(m):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=text_size,
                    color="white"
                    if rates[i, j] > 0.5
                    else ("black" if counts[i, j] else "#b0b0b0"),
                )
    ax.set_xticks(range(m))
    ax.set_yticks(range(m))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=label_size)
    ax.set_yticklabels(
        [f"{c} ({t})" for c, t in zip(classes, totals, strict=True)],
        fontsize=label_size,
    )
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true (labelled images)", fontsize=9)
    colorbar = fig.colorbar(image, cax=bar)
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("share of the true class", fontsize=8)
    if accuracy.get("count"):
        summary = (
            f"top-1 {_rate(accuracy['top1'])}, balanced {_rate(accuracy['balanced'])}"
            f", majority class {_rate(accuracy['majority_rate'])}"
        )
    else:
        summary = "no labelled test image"
    fig.text(
        (left + side / 2) / w_in,
        1 - 0.1 / h_in,
        f"{name} (n={accuracy.get('count', 0)})\n{summary}",
        ha="center",
        va="top",
        fontsize=10,
    )
    return save_png(fig, out_path)
