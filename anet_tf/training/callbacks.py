"""Callbacks of a training run: lr schedule, NaN guard, checkpoints, CSV and TensorBoard.

They are ordinary ``keras.callbacks.Callback`` objects, so ``model.fit`` drives them,
and :func:`anet_tf.training.loop.custom_fit` drives the same objects in the
multi-worker loop.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.checkpoint import TrainState
from anet_tf.training.trainer import lr_at_epoch


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; the message names the term and the step."""


def _set_lr(optimizer, value: float) -> None:
    opt = getattr(optimizer, "inner_optimizer", optimizer)
    opt.learning_rate.assign(value)


def _get_lr(optimizer) -> float:
    opt = getattr(optimizer, "inner_optimizer", optimizer)
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


class RunCallback(keras.callbacks.Callback):
    """Everything that happens around epochs of one stage of a run.

    At each epoch start it sets the lr from the schedule (epochs counted over both
    stages). After each batch it stops the run if any loss term is NaN or Inf,
    naming the term and the step, before any checkpoint of that epoch is written.
    At each epoch end it optionally evaluates, writes a CSV row and TensorBoard
    scalars (every term, lr, epoch time, images/s) and saves an atomic checkpoint.

    Args:
        run_dir: the run directory.
        stage: 1 or 2.
        stage_offset: global epochs completed before this stage began.
        base_lr, milestones, gamma: the lr schedule (:func:`lr_at_epoch`).
        stage_lr: a constant lr for every epoch of this stage instead of the
            schedule (``train.stage2.lr``); None = the schedule.
        batch_size: global batch size (for images/s).
        columns: CSV columns (all loss terms of the variant).
        is_chief: only the chief writes files (multi-worker).
        evaluate_fn: optional ``fn(net) -> dict`` with at least "mAP", run every
            ``eval_every`` epochs and at the last epoch of stage 2.
        state: best score so far (carried over stages and resumes).
    """

    def __init__(
        self,
        run_dir: str,
        *,
        stage: int,
        stage_offset: int,
        stage_epochs: int,
        base_lr: float,
        milestones,
        gamma: float,
        batch_size: int,
        stage_lr: float | None = None,
        columns: list[str],
        is_chief: bool = True,
        evaluate_fn: Callable | None = None,
        eval_every: int = 0,
        best_score: float | None = None,
        best_key: str = "",
        is_final_stage: bool = False,
    ):
        super().__init__()
        self.run_dir = run_dir
        self.stage = stage
        self.stage_offset = stage_offset
        self.stage_epochs = stage_epochs
        self.base_lr = base_lr
        self.milestones = list(milestones)
        self.gamma = gamma
        self.stage_lr = stage_lr
        self.batch_size = batch_size
        self.columns = columns
        self.is_chief = is_chief
        self.evaluate_fn = evaluate_fn
        self.eval_every = eval_every
        self.best_score = best_score
        self.best_key = best_key
        self.is_final_stage = is_final_stage
        self.ckpt = CheckpointManager(os.path.join(run_dir, "checkpoints"))
        self._writer = None
        self._t0 = 0.0
        self._steps = 0
        self.last_metrics: dict = {}

    # ------------------------------------------------------------------ epochs
    def on_epoch_begin(self, epoch, logs=None):
        global_epoch = self.stage_offset + epoch
        if self.stage_lr is not None:
            lr = self.stage_lr
        else:
            lr = lr_at_epoch(global_epoch, self.base_lr, self.milestones, self.gamma)
        _set_lr(self.model.optimizer, lr)
        self._t0 = time.perf_counter()
        self._steps = 0
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        for name, value in (logs or {}).items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                self.model.stop_training = True
                pointer = os.path.join(self.run_dir, "checkpoints", "last.json")
                kept = (
                    f"the last good checkpoint ({pointer}) is kept"
                    if os.path.exists(pointer)
                    else "no checkpoint had been written yet"
                )
                raise NonFiniteLossError(
                    f"loss term '{name}' is {v} at stage {self.stage}, epoch "
                    f"{self._epoch + 1} (global epoch {self.stage_offset + self._epoch + 1}), "
                    f"step {batch + 1}; the run stops and {kept}"
                )

    def on_epoch_end(self, epoch, logs=None):
        strategy = self.model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            # Every replica (and worker) joins; before the chief-only writing below.
            from anet_tf.training.loop import sync_moving_statistics

            sync_moving_statistics(self.model.net, strategy)
        logs = {k: float(v) for k, v in (logs or {}).items()}
        elapsed = time.perf_counter() - self._t0
        global_epoch = self.stage_offset + epoch + 1
        lr = _get_lr(self.model.optimizer)
        images_per_s = self._steps * self.batch_size / max(elapsed, 1e-9)
        net = self.model.net
        eval_metrics = {}
        last_epoch = epoch + 1 == self.stage_epochs
        want_eval = self.evaluate_fn is not None and (
            (self.eval_every and global_epoch % self.eval_every == 0)
            or (last_epoch and self.is_final_stage and self.eval_every)
        )
        if want_eval:
            eval_metrics = self.evaluate_fn(net)
        if "mAP" in eval_metrics:
            score, key = float(eval_metrics["mAP"]), "mAP"
        else:
            # A training loss does not rank models (and L, L' differ): without an
            # evaluation the newest checkpoint is the best, so best/ = what fit ships.
            score, key = float(global_epoch), "epoch"
        # An evaluated mAP outranks a training-loss score; scores of one kind compare.
        if self.best_score is None or key == self.best_key:
            is_best = self.best_score is None or score > self.best_score
        else:
            is_best = key == "mAP" or self.best_key != "mAP"
        if is_best:
            self.best_score, self.best_key = score, key
        row = {
            "stage": self.stage,
            "epoch": epoch + 1,
            "global_epoch": global_epoch,
            "lr": lr,
            "epoch_time_s": round(elapsed, 3),
            "images_per_s": round(images_per_s, 2),
            **{c: logs.get(c, "") for c in self.columns},
            **{f"eval_{k}": v for k, v in eval_metrics.items() if isinstance(v, (int, float))},
        }
        self.last_metrics = {**logs, **eval_metrics}
        if not self.is_chief:
            return
        self._write_csv(row)
        self._write_tensorboard(global_epoch, logs, lr, elapsed, images_per_s, eval_metrics)
        state = TrainState(
            stage=self.stage,
            stage_epoch=epoch + 1,
            global_epoch=global_epoch,
            best_score=self.best_score,
            best_key=self.best_key,
            metrics={k: v for k, v in row.items() if isinstance(v, (int, float))},
        )
        self.ckpt.save(net, self.model.optimizer, state, is_best=is_best)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # ----------------------------------------------------------------- writers
    def _write_csv(self, row: dict) -> None:
        path = os.path.join(self.run_dir, "log.csv")
        fixed = ["stage", "epoch", "global_epoch", "lr", "epoch_time_s", "images_per_s"] + list(self.columns)
        extra = sorted(k for k in row if k not in fixed)
        header = fixed + extra
        exists = os.path.exists(path)
        if exists:
            with open(path, encoding="utf-8") as fh:
                old_header = fh.readline().strip().split(",")
            if old_header != header and set(header) <= set(old_header):
                header = old_header
            elif old_header != header:
                header = old_header + [k for k in header if k not in old_header]
                with open(path, encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
                with open(path, "w", newline="", encoding="utf-8") as fh:
                    w = csv.DictWriter(fh, fieldnames=header)
                    w.writeheader()
                    w.writerows(rows)
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
            if not exists:
                w.writeheader()
            w.writerow(row)

    def _write_tensorboard(self, step, logs, lr, elapsed, images_per_s, eval_metrics):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.run_dir, "tensorboard"))
        with self._writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("train/lr", lr)
            tf.summary.scalar("train/epoch_time_s", elapsed)
            tf.summary.scalar("train/images_per_s", images_per_s)
            tf.summary.scalar("train/stage", float(self.stage))
            for name, value in eval_metrics.items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(f"eval/{name}", value)
            # attribute accuracy (van, anet): None where no test image is labelled
            for name, acc in (eval_metrics.get("attributes") or {}).items():
                for key in ("top1", "balanced"):
                    if acc.get(key) is not None:
                        tf.summary.scalar(f"eval/attr/{name}_{key}", acc[key])
        self._writer.flush()
