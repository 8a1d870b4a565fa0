"""The training-curves picture: the loss terms, learning rate and throughput of a
run's ``log.csv``."""

from __future__ import annotations

import os

import numpy as np

from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import figure
from anet_tf.visualize.common import save_png
from anet_tf.visualize.readers import LOG_INFO_COLUMNS
from anet_tf.visualize.readers import read_log

CURVES_SIZE = (10.0, 7.5)


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
    fig = figure(*CURVES_SIZE, dpi)
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
    return save_png(fig, out_path)
