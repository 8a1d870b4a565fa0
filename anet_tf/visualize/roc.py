"""The verification picture of a calibration file: the score histograms of
same-vehicle and different-vehicle pairs with the thresholds at the file's FMRs,
and the ROC curve (TMR against FMR, log FMR axis) with those operating points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anet_tf.visualize.common import COLORS
from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import save_png

ROC_SIZE = (11.0, 4.5)
# Histogram bars drawn at most (adjacent stored bins are summed down to this).
DRAWN_BINS = 256


def plot_roc(
    same: np.ndarray,
    different: np.ndarray,
    operating_points: Sequence[dict],
    out_path: str,
    *,
    title: str = "",
    dpi: int = DPI,
) -> str:
    """Left: the two score histograms from the lowest score to the highest (each
    normalised to its own pairs, log y) with a dashed line per threshold; right:
    the ROC curve.

    Args:
        same, different: counts per bin over [-1, 1], equal lengths.
        operating_points: ``[{"fmr", "threshold", "tmr"}]`` (threshold None:
            nothing accepted; not drawn).

    Returns:
        ``out_path``; the PNG is ``ROC_SIZE`` inches at ``dpi``.
    """
    same = np.asarray(same, np.float64)
    different = np.asarray(different, np.float64)
    if same.shape != different.shape or same.ndim != 1 or same.size < 2:
        raise VisualizeError(
            f"the two histograms must have the same number of bins (>= 2). Received: "
            f"{same.shape} and {different.shape}"
        )
    if same.sum() == 0 or different.sum() == 0:
        raise VisualizeError(
            "a ROC picture needs same-vehicle and different-vehicle pairs"
        )
    fig = figure(*ROC_SIZE, dpi)
    _histograms(
        fig.add_axes([0.06, 0.12, 0.42, 0.78]), same, different, operating_points
    )
    _roc(fig.add_axes([0.56, 0.12, 0.41, 0.78]), same, different, operating_points)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, out_path)


def _histograms(ax, same, different, points) -> None:
    """The bins from the lowest score to the highest, merged into at most
    ``DRAWN_BINS`` bars."""
    nonzero = np.flatnonzero(same + different)
    first, count = int(nonzero[0]), int(nonzero[-1]) + 1 - int(nonzero[0])
    factor = -(-count // DRAWN_BINS)
    count = factor * -(-count // factor)
    edges = -1.0 + (2.0 / same.size) * np.arange(first, first + count + 1, factor)
    for counts, label, color in (
        (different, "different vehicle", COLORS["wrong"]),
        (same, "same vehicle", COLORS["match"]),
    ):
        span = np.zeros(count)
        kept = counts[first : first + count]
        span[: kept.size] = kept
        ax.stairs(
            span.reshape(-1, factor).sum(1) / counts.sum(),
            edges,
            fill=True,
            alpha=0.45,
            color=color,
            label=f"{label} ({int(counts.sum())} pairs)",
        )
    for i, p in enumerate(points):
        if p.get("threshold") is not None:
            ax.axvline(p["threshold"], ls="--", lw=1, color="#444444")
            ax.text(
                p["threshold"],
                0.97 - 0.08 * i,
                f"FMR {p['fmr']:g} ",
                va="top",
                ha="right",
                fontsize=7,
                transform=ax.get_xaxis_transform(),
            )
    margin = 0.05 * (edges[-1] - edges[0])
    ax.set_xlim(edges[0] - margin, edges[-1] + margin)
    ax.set_yscale("log")
    ax.set_xlabel("cosine score", fontsize=9)
    ax.set_ylabel("share of pairs", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("score distributions", fontsize=10)


def _roc(ax, same, different, points) -> None:
    fmr = np.cumsum(different[::-1])[::-1] / different.sum()
    tmr = np.cumsum(same[::-1])[::-1] / same.sum()
    shown = fmr > 0
    ax.plot(fmr[shown], 100 * tmr[shown], color=COLORS["query"], lw=1.5)
    for p in points:
        if p.get("threshold") is not None:
            ax.plot([p["fmr"]], [100 * p["tmr"]], "o", color="#444444", ms=5)
            ax.annotate(
                f"TMR {100 * p['tmr']:.1f}% @ {p['fmr']:g}",
                (p["fmr"], 100 * p["tmr"]),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
            )
    low = min([p["fmr"] for p in points] + [fmr[shown].min()]) / 2
    ax.set_xscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("false-match rate (FMR)", fontsize=9)
    ax.set_ylabel("true-match rate (TMR, %)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.set_title("ROC", fontsize=10)
