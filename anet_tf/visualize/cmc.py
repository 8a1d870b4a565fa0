"""The CMC picture: matching rate at rank 1..R of ``anet-tf evaluate --json-out``
files, one line per curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import save_png

CMC_SIZE = (6.0, 4.5)


def plot_cmc(
    curves: Sequence[tuple[str, np.ndarray]],
    out_path: str,
    *,
    max_rank: int | None = None,
    title: str = "CMC",
    dpi: int = DPI,
) -> str:
    """CMC curves: matching rate (%) at rank 1..R, one line per (label, cmc).

    Returns:
        ``out_path``; the PNG is ``CMC_SIZE`` inches at ``dpi``.
    """
    if not curves:
        raise VisualizeError("a CMC picture needs at least one curve")
    fig = figure(*CMC_SIZE, dpi)
    ax = fig.add_axes([0.12, 0.12, 0.84, 0.78])
    for label, cmc in curves:
        r = len(cmc) if max_rank is None else min(max_rank, len(cmc))
        ranks = np.arange(1, r + 1)
        ax.plot(
            ranks,
            100 * np.asarray(cmc[:r]),
            marker="o",
            ms=3,
            label=f"{label} (R1 {100 * cmc[0]:.1f}%)",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank", fontsize=9)
    ax.set_ylabel("matching rate (%)", fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    return save_png(fig, out_path)
