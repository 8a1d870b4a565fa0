"""The ablation picture: mean ± std bars of the variants of ``anet-tf ablate``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import save_png

ABLATION_SIZE = (8.0, 4.5)


def plot_ablation(
    labels: Sequence[str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    out_path: str,
    *,
    title: str = "ablation",
    dpi: int = DPI,
) -> str:
    """Grouped bars with error bars: one group per variant (``labels``), one bar per
    metric of ``series`` (``{metric: (means, stds)}`` in percent, one value per
    label; NaN = no value, no bar; a NaN std draws no error bar).

    Returns:
        ``out_path``; the PNG is ``ABLATION_SIZE`` inches at ``dpi``.
    """
    if not labels or not series:
        raise VisualizeError("an ablation picture needs a variant and a metric")
    fig = figure(*ABLATION_SIZE, dpi)
    ax = fig.add_axes([0.08, 0.12, 0.9, 0.78])
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for i, (metric, (means, stds)) in enumerate(series.items()):
        means = np.asarray(means, np.float64)
        stds = np.nan_to_num(np.asarray(stds, np.float64), nan=0.0)
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, means, width, yerr=stds, capsize=3, label=metric)
        for xi, m, s in zip(x + offset, means, stds):
            if np.isfinite(m):
                ax.text(xi, m + s + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("%", fontsize=9)
    ax.set_ylim(0, 108)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    return save_png(fig, out_path)
