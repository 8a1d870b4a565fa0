"""The ranked-list picture: a query and its top-k gallery matches, framed green
(same vehicle) or red (another vehicle) where the ids are known, as in Figure 4
(row 1) of the paper; with an operating point, the model's decisions on top: a
dashed line between the matches decided "same vehicle" and those decided
"different" (faded), and each match's P(same vehicle)."""

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
            ``path``, ``pid``, ``camid``, ``predicted``, ``known``, and for a
            picture of decisions ``probability`` and ``decision`` (``"same"`` or
            ``"different"``) (as :class:`anet_tf.search.gallery.Match`).
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
    decisions: str = "",
    dpi: int = DPI,
) -> str:
    """Each query (left, blue frame) followed by its ``top_k`` matches.

    A match is framed green when its vehicle id equals the query's, red when it
    differs, grey when either is unknown. Above each match: rank and cosine
    similarity; below: vehicle id, camera and the ``attributes`` (predicted or
    known) classes. ``decisions`` (the operating point in words, e.g. "score >=
    0.9941 (FMR 0.001)"; the matches carry their decisions): each match's
    P(same vehicle) after its score, a dashed line after the last match decided
    "same" (before the first match when none is: "no match"), and the matches
    decided "different" faded; the frames still say what is true.

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
    title = title or "ranked list"
    if decisions:
        title += f"; same vehicle (left of the dashed line) at {decisions}"
    fig.text(0.01, 1 - 0.6 * line, title, va="center", fontsize=10)
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
        "above: rank: cosine similarity"
        + (", P(same vehicle)" if decisions else "")
        + f"; below: vehicle id, camera, {attributes} attributes",
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
            above = f"{m.rank}: {m.score:.3f}"
            if decisions:
                above += f", P {m.probability:.2f}"
            cells.append((m.path, above, text, color))
        shown = row.matches[:top_k]
        rejected = {
            c + 1 for c, m in enumerate(shown) if decisions and m.decision != "same"
        }
        for c, (path, above, below, color) in enumerate(cells):
            ax = fig.add_axes(
                [
                    c * cell_w + 0.06 * cell_w,
                    top - 0.80 * cell_h,
                    0.88 * cell_w,
                    0.66 * cell_h,
                ]
            )
            faded = c in rejected
            ax.imshow(
                load_rgb(path, thumb),
                interpolation="bilinear",
                alpha=0.35 if faded else 1.0,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(4 if color != COLORS["unknown"] else 1.5)
            ax.set_title(
                above,
                fontsize=8,
                pad=3,
                color=COLORS["query"] if c == 0 else "gray" if faded else "black",
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
        if decisions:
            _decision_line(fig, row, top_k, top, cell_w, cell_h)
        if not row.matches:
            fig.text(
                1.5 * cell_w,
                top - 0.5 * cell_h,
                "no gallery item matches the filter",
                fontsize=9,
                va="center",
            )
    return save_png(fig, out_path)


def _decision_line(fig, row: RankedRow, top_k: int, top: float, cell_w, cell_h):
    """The dashed line after the last match of ``row`` decided "same" (after the
    query, with "no match", when none is)."""
    from matplotlib.lines import Line2D

    same = [c for c, m in enumerate(row.matches[:top_k]) if m.decision == "same"]
    x = min((same[-1] + 2 if same else 1) * cell_w, 0.998)  # all same: at the edge
    fig.add_artist(
        Line2D(
            [x, x],
            [top - 0.97 * cell_h, top - 0.03 * cell_h],
            transform=fig.transFigure,
            color="black",
            linestyle=(0, (4, 3)),
            linewidth=1.5,
        )
    )
    if not same and row.matches:
        fig.text(
            x,
            top - 0.47 * cell_h,
            "no match",
            fontsize=8,
            fontweight="bold",
            rotation=90,
            ha="center",
            va="center",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
        )
