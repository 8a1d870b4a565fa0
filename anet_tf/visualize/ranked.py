"""Pictures of what a trained model does (matplotlib, PNG) and a TensorBoard
projector export.

* :func:`plot_ranked_list`: a query and its top-k gallery matches, framed green
  (same vehicle) or red (another vehicle) where the ids are known, as in Figure 4
  (row 1) of the paper.
* :func:`plot_activation_maps`: the unified attribute map G (eq. 5) and the
  distilled map G_reid (eq. 6) over each image, as in Figure 4 (rows 2 and 3).
* :func:`plot_training_curves`: the loss terms, learning rate and throughput of a
  run's ``log.csv``.
* :func:`plot_cmc`: CMC curves of ``anet-tf evaluate --json-out`` files.
* :func:`plot_confusion`: the confusion matrix of one attribute branch, from the
  attribute accuracy in a run's ``metrics.json``.
* :func:`plot_ablation`: mean ± std bars of the variants of ``anet-tf ablate``.
* :func:`export_projector`: embeddings with thumbnail sprites and attributes as
  metadata, for TensorBoard's projector.

Every picture has a fixed size in pixels (no tight bounding box), given by the
``*_size`` functions, so the same call gives the same picture size whatever the
labels.

The pictures take plain data (paths, ids, arrays, and the objects of
``anet_tf.search`` read by their attributes), so this module does not import the
search package; the commands that draw them (:mod:`anet_tf.commands.visualize`)
join the two. Bad input raises :class:`VisualizeError`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anet_tf.training.run import LOG_FILE


class VisualizeError(ValueError):
    """Input a picture cannot be drawn from, said for people (what, where, what
    would be right)."""


DPI = 100
# Ranked list: one cell per image (inches), a header band of two lines (title;
# legend and what the captions say).
RANK_CELL_W = 1.5
RANK_CELL_H = 2.0
RANK_HEADER_H = 0.55
HEADER_H = 0.35
# Activation maps: square cells, a label column on the left.
ACT_CELL = 1.6
ACT_LABEL_W = 0.35
CURVES_SIZE = (10.0, 7.5)
CMC_SIZE = (6.0, 4.5)
# Confusion matrix: square cells, the matrix between CONF_MIN and CONF_MAX inches a
# side; margins for class names (left, bottom), the title and the colour bar.
CONF_CELL = 0.5
CONF_MIN = 3.0
CONF_MAX = 10.0
CONF_MARGINS = {"left": 1.6, "right": 1.1, "top": 0.7, "bottom": 1.4}
ABLATION_SIZE = (8.0, 4.5)
COLORS = {
    "match": "#1a9850",
    "wrong": "#d73027",
    "unknown": "#9e9e9e",
    "query": "#2166ac",
}
# log.csv columns that are not loss terms.
LOG_INFO_COLUMNS = (
    "stage",
    "epoch",
    "global_epoch",
    "lr",
    "epoch_time_s",
    "images_per_s",
)
SPRITE_MAX = 8192  # TensorBoard's limit on each side of the sprite image


def _figure(width_in: float, height_in: float, dpi: int):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise VisualizeError(
            "pictures need matplotlib: pip install 'anet-tf[viz]' (matplotlib)"
        ) from None
    return Figure(figsize=(width_in, height_in), dpi=dpi)


def _save(fig, out_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out_path, dpi=fig.dpi, format="png")
    return out_path


def _load_rgb(path: str, size: int | None = None) -> np.ndarray:
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


# ---------------------------------------------------------------- ranked lists


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
    fig = _figure(width_px / dpi, height_px / dpi, dpi)
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
            ax.imshow(_load_rgb(path, thumb), interpolation="bilinear")
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
    return _save(fig, out_path)


# ------------------------------------------------------------- activation maps


def activation_size(num_images: int, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_activation_maps`."""
    return (
        round((ACT_LABEL_W + num_images * ACT_CELL) * dpi),
        round((3 * ACT_CELL + HEADER_H) * dpi),
    )


def map_heat(feature_map: np.ndarray) -> np.ndarray:
    """A feature map [h, w, c] -> its per-position L2 norm over channels, scaled to
    [0, 1] (min-max over the map; a constant map gives zeros).

    The paper shows the maps without saying how channels are reduced; the L2 norm
    is non-negative (a channel mean of post-ReLU maps would do as well) and keeps
    where the map is strong.
    """
    heat = np.sqrt(np.sum(np.square(np.asarray(feature_map, np.float64)), axis=-1))
    lo, hi = float(heat.min()), float(heat.max())
    if hi - lo < 1e-12:
        return np.zeros_like(heat, np.float32)
    return ((heat - lo) / (hi - lo)).astype(np.float32)


def _upsample(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(heat.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)


def activation_maps(net, image_paths: Sequence[str], image_size: Sequence[int]) -> dict:
    """G and G_reid of each image under a functional ANet network.

    Images go through :func:`anet_tf.data.pipeline.read_image` and
    :func:`~anet_tf.data.pipeline.preprocess_for_inference`, as in evaluation.

    Returns:
        ``{"pixels": uint8 [N, H, W, 3] (the resized network input),
        "G": float32 [N, H, W], "G_reid": float32 [N, H, W]}``, the maps as
        :func:`map_heat`, upsampled bilinearly to the input size.

    Raises:
        VisualizeError: the network has no Joint Module (variant baseline or van).
    """
    import tensorflow as tf

    from anet_tf.data.pipeline import preprocess_for_inference
    from anet_tf.data.pipeline import read_image
    from anet_tf.data.pipeline import resize

    missing = [k for k in ("G", "G_reid") if k not in net.output]
    if missing:
        raise VisualizeError(
            f"activation maps need the Joint Module's G and G_reid (model.variant "
            f"anet); this network gives {sorted(net.output)}"
        )
    h, w = (int(s) for s in image_size)
    pixels, inputs = [], []
    for path in image_paths:
        try:
            image = read_image(path)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
            raise VisualizeError(
                f"{path}: cannot read the image ({exc.message.splitlines()[0]})"
            ) from None
        pixels.append(
            np.clip(np.round(resize(image, (h, w)).numpy()), 0, 255).astype(np.uint8)
        )
        inputs.append(preprocess_for_inference(image, (h, w)))
    out = net(tf.stack(inputs), training=False)
    result = {"pixels": np.stack(pixels)}
    for key in ("G", "G_reid"):
        maps = np.asarray(out[key], np.float32)
        result[key] = np.stack([_upsample(map_heat(m), h, w) for m in maps])
    return result


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
        maps: the dict of :func:`activation_maps`.
        titles: a short caption per image (e.g. its file name).

    Returns:
        ``out_path``; the PNG is :func:`activation_size` pixels.
    """
    pixels = maps["pixels"]
    n = len(pixels)
    if n == 0:
        raise VisualizeError("activation maps need at least one image")
    width_px, height_px = activation_size(n, dpi)
    fig = _figure(width_px / dpi, height_px / dpi, dpi)
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
    return _save(fig, out_path)


# ------------------------------------------------------------ training curves


def read_log(path: str) -> dict[str, np.ndarray]:
    """The columns of a run's ``log.csv`` as float arrays (NaN where empty).

    Args:
        path: the ``log.csv`` file or the run directory holding it.
    """
    if os.path.isdir(path):
        path = os.path.join(path, LOG_FILE)
    if not os.path.isfile(path):
        raise VisualizeError(f"{path}: no such training log (a run directory has log.csv)")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise VisualizeError(f"{path}: the log has no epochs yet")
    header = rows[0]
    if "global_epoch" not in header:
        raise VisualizeError(
            f"{path}:1: not an anet-tf log (no global_epoch column); header {header}"
        )
    columns: dict[str, list[float]] = {h: [] for h in header}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise VisualizeError(
                f"{path}:{line}: {len(row)} cells, the header has {len(header)}"
            )
        for h, cell in zip(header, row, strict=True):
            try:
                columns[h].append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                raise VisualizeError(
                    f"{path}:{line}: column {h}: not a number: {cell!r}"
                ) from None
    return {h: np.asarray(v, np.float64) for h, v in columns.items()}


def plot_training_curves(
    log_path: str, out_path: str, *, title: str = "", dpi: int = DPI
) -> str:
    """Four panels over the global epoch: the total loss, each loss term, the
    learning rate (log scale) and the training throughput; a dashed line marks the
    start of stage 2 (eq. 13, backbone frozen).

    Returns:
        ``out_path``; the PNG is ``CURVES_SIZE`` inches at ``dpi``.
    """
    log = read_log(log_path)
    x = log["global_epoch"]
    fig = _figure(*CURVES_SIZE, dpi)
    axes = fig.subplots(2, 2, sharex=True)
    fig.subplots_adjust(
        left=0.08, right=0.98, top=0.92, bottom=0.08, hspace=0.18, wspace=0.2
    )
    run = (
        log_path
        if os.path.isdir(log_path)
        else os.path.dirname(os.path.abspath(log_path))
    )
    fig.suptitle(
        title or f"training of {os.path.basename(os.path.abspath(run))}", fontsize=11
    )
    terms = [h for h in log if h not in LOG_INFO_COLUMNS and h != "total"]
    if "total" in log:
        axes[0, 0].plot(x, log["total"], marker="o", ms=3, color="black")
    axes[0, 0].set_title("total loss", fontsize=10)
    for name in terms:
        if np.isfinite(log[name]).any():
            axes[0, 1].plot(x, log[name], marker="o", ms=2, label=name)
    axes[0, 1].set_title("loss terms", fontsize=10)
    if terms:
        axes[0, 1].legend(fontsize=7, ncol=2, loc="upper right")
    if "lr" in log:
        axes[1, 0].plot(x, log["lr"], drawstyle="steps-mid", color="tab:purple")
        axes[1, 0].set_yscale("log")
    axes[1, 0].set_title("learning rate", fontsize=10)
    if "images_per_s" in log:
        axes[1, 1].plot(x, log["images_per_s"], marker="o", ms=3, color="tab:green")
    axes[1, 1].set_title("images / s", fontsize=10)
    stage = log.get("stage")
    starts = []
    if stage is not None and len(stage) > 1:
        starts = [x[i] - 0.5 for i in range(1, len(stage)) if stage[i] != stage[i - 1]]
    for ax in axes.flat:
        for s in starts:
            ax.axvline(s, color="grey", ls="--", lw=1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[1]:
        ax.set_xlabel("epoch", fontsize=9)
    if starts:
        axes[0, 0].text(
            starts[0],
            axes[0, 0].get_ylim()[1],
            " stage 2",
            va="top",
            fontsize=8,
            color="grey",
        )
    return _save(fig, out_path)


# ------------------------------------------------------------------- CMC curves


def read_cmc(path: str) -> tuple[np.ndarray, dict]:
    """The CMC curve and metrics of an ``anet-tf evaluate --json-out`` file (or a
    run's ``metrics.json``).

    Returns:
        (cmc float [R] in [0, 1], the file's dict).
    """
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            payload = json.load(fh)
    except OSError as exc:
        raise VisualizeError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise VisualizeError(f"{path}: not JSON ({exc})") from None
    metrics = payload.get("metrics", payload) if isinstance(payload, dict) else {}
    cmc = metrics.get("cmc") if isinstance(metrics, dict) else None
    if not cmc:
        raise VisualizeError(
            f'{path}: no CMC curve (expected {{"metrics": {{"cmc": [...]}}}} as '
            f"`anet-tf evaluate --json-out` writes)"
        )
    return np.asarray(cmc, np.float64), payload


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
    fig = _figure(*CMC_SIZE, dpi)
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
    return _save(fig, out_path)


# --------------------------------------------------------------------- ablation


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
    fig = _figure(*ABLATION_SIZE, dpi)
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
    return _save(fig, out_path)


# ------------------------------------------------------------ confusion matrix


def read_attribute_accuracy(run_dir: str) -> dict[str, dict]:
    """The attribute accuracy (``{attribute: dict}`` of
    :func:`anet_tf.evaluation.attributes.attribute_accuracy`) of a run's
    ``metrics.json``: what ``fit`` measured (``metrics``), else what
    ``anet-tf evaluate --run`` recorded (``evaluations``, the run's own feature
    first; the attribute branches do not depend on the feature).

    Raises:
        VisualizeError: no metrics.json, or none of its results has attribute
            accuracy (a baseline, or a run evaluated before it was measured).
    """
    import json

    from anet_tf.training.run import METRICS_FILE

    path = os.path.join(run_dir, METRICS_FILE)
    hint = f"run `anet-tf evaluate --run {run_dir}` to measure it"
    try:
        with open(path, encoding="utf-8") as fh:
            payload = json.load(fh)
    except FileNotFoundError:
        raise VisualizeError(f"{path}: no such file; {hint}") from None
    except OSError as exc:
        raise VisualizeError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise VisualizeError(f"{path}: not JSON ({exc})") from None
    payload = payload if isinstance(payload, dict) else {}
    evaluations = payload.get("evaluations")
    evaluations = evaluations if isinstance(evaluations, dict) else {}
    feature = payload.get("feature")
    order = [payload.get("metrics")]
    order += [evaluations.get(feature)] + [evaluations[k] for k in sorted(evaluations)]
    for metrics in order:
        if isinstance(metrics, dict) and metrics.get("attributes"):
            attributes = metrics["attributes"]
            break
    else:
        raise VisualizeError(
            f"{path}: no attribute accuracy (a baseline has no attribute branch); "
            f"for a van or anet run, {hint}"
        )
    for name, acc in attributes.items():
        m = len(acc.get("classes", []))
        confusion = np.asarray(acc.get("confusion", []))
        if m < 1 or confusion.shape != (m, m):
            raise VisualizeError(
                f"{path}: attributes.{name}: expected 'classes' and an m x m "
                f"'confusion'; got {m} classes and a matrix of shape {confusion.shape}"
            )
    return attributes


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
    fig = _figure(w_px / dpi, h_px / dpi, dpi)
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
    return _save(fig, out_path)


# -------------------------------------------------------------------- projector


def sprite_layout(n: int, thumb_size: int | None = None) -> tuple[int, int]:
    """(images per side of the sprite grid, thumbnail side in pixels) for ``n``
    images: at most 64 px, and the sprite within TensorBoard's 8192 px."""
    side = max(1, math.ceil(math.sqrt(n)))
    limit = SPRITE_MAX // side
    thumb = min(thumb_size or 64, limit)
    if thumb < 1:
        raise VisualizeError(
            f"{n} images do not fit a {SPRITE_MAX} px sprite; lower --max-images"
        )
    return side, thumb


def _tsv_cell(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def export_projector(
    emb,
    log_dir: str,
    *,
    max_images: int = 10000,
    thumb_size: int | None = None,
    seed: int = 0,
) -> dict:
    """Write ``emb`` for TensorBoard's projector (``tensorboard --logdir LOG_DIR``,
    tab PROJECTOR).

    Files: the embeddings as a TF checkpoint (``embedding.ckpt-1.*``),
    ``metadata.tsv`` (path, pid, camid, per attribute the predicted class and the
    known class), ``sprite.png`` (thumbnails in row-major order) and
    ``projector_config.pbtxt``.

    Args:
        emb: the embeddings (``anet-tf embed`` output, an
            :class:`anet_tf.search.embeddings.Embeddings`).
        log_dir: the TensorBoard log folder (created).
        max_images: a larger set is sampled down to this many (seeded).
        thumb_size: thumbnail side in pixels (default 64, less when the sprite
            would exceed 8192 px).

    Returns:
        ``{"count", "thumb_size", "metadata", "sprite", "config", "checkpoint"}``.
    """
    import tensorflow as tf
    from PIL import Image
    from tensorboard.plugins import projector

    n = len(emb)
    if n == 0:
        raise VisualizeError("no embeddings to export")
    keep = np.arange(n)
    if n > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))
    os.makedirs(log_dir, exist_ok=True)
    side, thumb = sprite_layout(len(keep), thumb_size)
    sprite = Image.new("RGB", (side * thumb, side * thumb), (255, 255, 255))
    for k, i in enumerate(keep):
        im = Image.fromarray(_load_rgb(emb.paths[i])).resize(
            (thumb, thumb), Image.BILINEAR
        )
        sprite.paste(im, ((k % side) * thumb, (k // side) * thumb))
    sprite_path = os.path.join(log_dir, "sprite.png")
    sprite.save(sprite_path)
    metadata_path = os.path.join(log_dir, "metadata.tsv")
    names = emb.attribute_names
    with open(metadata_path, "w", encoding="utf-8") as fh:
        header = ["path", "pid", "camid", *names, *[f"{a}_known" for a in names]]
        fh.write("\t".join(header) + "\n")
        for i in keep:
            cells = [emb.paths[i], int(emb.pids[i]), int(emb.camids[i])]
            cells += [emb.predicted[a][i] for a in names]
            cells += [emb.known[a][i] or "?" for a in names]
            fh.write("\t".join(_tsv_cell(c) for c in cells) + "\n")
    variable = tf.Variable(
        np.asarray(emb.embedding[keep], np.float32), name="embedding"
    )
    checkpoint = tf.train.Checkpoint(embedding=variable)
    ckpt_path = checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    config = projector.ProjectorConfig()
    info = config.embeddings.add()
    info.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    info.metadata_path = "metadata.tsv"
    info.sprite.image_path = "sprite.png"
    info.sprite.single_image_dim.extend([thumb, thumb])
    projector.visualize_embeddings(log_dir, config)
    return {
        "count": int(len(keep)),
        "thumb_size": thumb,
        "metadata": metadata_path,
        "sprite": sprite_path,
        "config": os.path.join(log_dir, "projector_config.pbtxt"),
        "checkpoint": ckpt_path,
    }
