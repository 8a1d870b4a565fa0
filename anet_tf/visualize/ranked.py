"""The ranked-list picture: a query and its top-k gallery matches, framed green
(same vehicle) or red (another vehicle) where the ids are known, as in Figure 4
(row 1) of the paper."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anet_tf.visualize.common import COLORS
from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import load_rgb
from anet_tf.visualize.common import save_png

# Ranked list: one cell per image (inches), a header band of two lines (title;
# legend and what the captions say).
RANK_CELL_W = 1.5
RANK_CELL_H = 2.0
RANK_HEADER_H = 0.55


@dataclass
class RankedRow:
    """One query of a ranked-list picture.

    Args:
        query_path: the query image.
        query_pid: its vehicle id, -1 unknown (then frames stay grey).
        query_text: a line under the query (e.g. its predicted attributes).
        matches: its top-k matches, best first: objects with ``rank``, ``score``,
            ``path``, ``pid``, ``camid``, ``predicted`` and ``known`` (as
            :class:`anet_tf.search.index.Match`).
    """

    query_path: str
    query_pid: int
    query_text: str
    matches: list


def ranked_list_size(rows: int, top_k: int, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_ranked_list`."""
    return (
        round((top_k + 1) * RANK_CELL_W * dpi),
        round((rows * RANK_CELL_H + RANK_HEADER_H) * dpi),
    )


def _attribute_text(values: dict[str, str]) -> str:
    return " ".join(v for v in values.values() if v)


# long: 10 lines of docstring; the body draws one figure, row after row, query then its matches.
def plot_ranked_list(
    rows: Sequence[RankedRow],
    out_path: str,
    top_k: int,
    *,
    title: str = "",
    attributes: str = "predicted",
    dpi: int = DPI,
) -> str:
    """Each query (left, blue frame) followed by its ``top_k`` matches.

    A match is framed green when its vehicle id equals the query's, red when it
    differs, grey when either is unknown. Above each match: rank and cosine
    similarity; below: vehicle id, camera and the ``attributes`` (predicted or
    known) classes.

    Returns:
        ``out_path``; the PNG is :func:`ranked_list_size` pixels.
    """
    from matplotlib.patches import Patch

    if not rows:
        raise VisualizeError("a ranked list needs at least one query")
    if attributes not in ("predicted", "known"):
        raise VisualizeError(
            f"attributes must be predicted or known. Received: {attributes!r}"
        )
    width_px, height_px = ranked_list_size(len(rows), top_k, dpi)
    fig = figure(width_px / dpi, height_px / dpi, dpi)
    cols = top_k + 1
    band = RANK_HEADER_H * dpi / height_px
    cell_w, cell_h = 1.0 / cols, (1.0 - band) / len(rows)
    line = 0.25 * dpi / height_px
    fig.text(0.01, 1 - 0.6 * line, title or "ranked list", va="center", fontsize=10)
    legend = [("query", "query"), ("same vehicle", "match"), ("other vehicle", "wrong")]
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor=COLORS[key], linewidth=3, label=label)
            for label, key in legend
        ],
        loc="center left",
        bbox_to_anchor=(0.0, 1 - 1.55 * line),
        ncol=len(legend),
        frameon=False,
        fontsize=8,
        handlelength=1.2,
    )
    fig.text(
        0.99,
        1 - 1.55 * line,
        "above: rank: cosine similarity; below: vehicle id, camera, "
        f"{attributes} attributes",
        ha="right",
        va="center",
        fontsize=8,
        color="dimgray",
    )
    thumb = int(RANK_CELL_W * dpi)
    for r, row in enumerate(rows):
        top = 1 - band - r * cell_h
        cells = [(row.query_path, "query", row.query_text, COLORS["query"])]
        for m in row.matches[:top_k]:
            if row.query_pid >= 0 and m.pid >= 0:
                color = COLORS["match"] if m.pid == row.query_pid else COLORS["wrong"]
            else:
                color = COLORS["unknown"]
            ident = f"id {m.pid}" if m.pid >= 0 else ""
            cam = f"c{m.camid}" if m.camid >= 0 else ""
            below = " ".join(t for t in (ident, cam) if t)
            attrs = _attribute_text(
                m.predicted if attributes == "predicted" else m.known
            )
            text = f"{below}\n{attrs}" if below and attrs else below or attrs
            cells.append((m.path, f"{m.rank}: {m.score:.3f}", text, color))
        for c, (path, above, below, color) in enumerate(cells):
            ax = fig.add_axes(
                [
                    c * cell_w + 0.06 * cell_w,
                    top - 0.80 * cell_h,
                    0.88 * cell_w,
                    0.66 * cell_h,
                ]
            )
            ax.imshow(load_rgb(path, thumb), interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(4 if color != COLORS["unknown"] else 1.5)
            ax.set_title(
                above, fontsize=8, pad=3, color=COLORS["query"] if c == 0 else "black"
            )
            ax.text(
                0.5,
                -0.04,
                below,
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=7,
            )
        if not row.matches:
            fig.text(
                1.5 * cell_w,
                top - 0.5 * cell_h,
                "no gallery item matches the filter",
                fontsize=9,
                va="center",
            )
    return save_png(fig, out_path)
