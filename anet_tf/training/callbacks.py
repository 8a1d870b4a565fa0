"""Callbacks of a training run: lr schedule, NaN guard, checkpoints, CSV and TensorBoard.

They are ordinary ``keras.callbacks.Callback`` objects, so ``model.fit`` drives them,
and :func:`anet_tf.training.loop.custom_fit` drives the same objects in the
multi-worker loop.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.checkpoint import TrainState
from anet_tf.training.run import append_log_row
from anet_tf.training.trainer import lr_at_epoch


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; the message names the term and the step."""


def first_non_finite(logs: dict, columns: list[str]) -> tuple[str | None, float]:
    """The first loss term in ``logs`` that is NaN or Inf, in the order of
    ``columns`` (the variant's terms in the paper's order, then ``total``), then any
    other key; (None, 0.0) if all are finite. Keras hands logs sorted by name, where
    ``total`` would come before ``tri_*`` and hide the term that went wrong."""
    order = [c for c in columns if c != "total" and c in logs]
    order += [c for c in ("total",) if c in logs]
    order += sorted(k for k in logs if k not in order)
    for name in order:
        try:
            value = float(logs[name])
        except (TypeError, ValueError):
            continue
        if not math.isfinite(value):
            return name, value
    return None, 0.0


def unusable_weights(net, probe_batch: int = 2) -> str | None:
    """Why ``net``'s weights must not be saved, or None.

    Two checks, both cheap beside an epoch: every weight array (moving statistics
    included) is finite, and a forward pass in inference mode over a fixed random
    batch gives finite outputs. The second catches weights that are finite but
    useless, e.g. |w| = 1e30 after a step at an absurd learning rate, which the next
    step's loss would report as NaN only after they had been saved."""
    bad = [w.path for w in net.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if bad:
        return (
            f"{len(bad)} of {len(net.weights)} weight arrays are not finite "
            f"(first: {bad[0]})"
        )
    shape = [probe_batch, *(d or 64 for d in net.input_shape[1:])]
    probe = np.random.default_rng(0).standard_normal(shape).astype("float32")
    outputs = net(probe, training=False)
    for name, value in sorted(outputs.items() if isinstance(outputs, dict) else [("output", outputs)]):
        values = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))
        if not np.isfinite(values).all():
            return (
                f"the weights are finite but the network's output '{name}' is not "
                "finite on a probe batch (weights too large to use)"
            )
    return None


def format_epoch_line(row: dict, stage_epochs: int, columns: list[str]) -> str:
    """One plain line for an epoch (no progress bar, no terminal codes): what a log
    file or a pipe should get instead of Keras' bar."""
    terms = " ".join(
        f"{c} {row[c]:.4f}" for c in ["total", *(c for c in columns if c != "total")]
        if isinstance(row.get(c), (int, float))
    )
    evals = " ".join(
        f"{k[5:]} {v:.2f}" for k, v in row.items() if k.startswith("eval_") and isinstance(v, (int, float))
    )
    return (
        f"[anet-tf] stage {row['stage']} epoch {row['epoch']}/{stage_epochs} "
        f"(global {row['global_epoch']}): {terms} | lr {row['lr']:.2e} | "
        f"{row['images_per_s']:.1f} img/s | {row['epoch_time_s']:.1f} s"
        + (f" | eval {evals}" if evals else "")
    )


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
        best_score, best_key: best score so far (carried over stages and resumes).
        train_seconds: training wall time before this stage (all sessions); the
            callback adds its own and saves the sum in every checkpoint.
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
        train_seconds: float = 0.0,
        print_epochs: bool = False,
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
        self.train_seconds = train_seconds  # before this stage; grows per epoch
        self._prior_seconds = train_seconds
        self._session_t0: float | None = None
        self.print_epochs = print_epochs

    # ------------------------------------------------------------------ epochs
    def on_epoch_begin(self, epoch, logs=None):
        global_epoch = self.stage_offset + epoch
        if self.stage_lr is not None:
            lr = self.stage_lr
        else:
            lr = lr_at_epoch(global_epoch, self.base_lr, self.milestones, self.gamma)
        _set_lr(self.model.optimizer, lr)
        self._t0 = time.perf_counter()
        if self._session_t0 is None:
            self._session_t0 = self._t0
        self._steps = 0
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        name, value = first_non_finite(logs or {}, self.columns)
        if name is not None:
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"loss term '{name}' is {value} at {self._where(batch + 1)}; the run "
                f"stops and {self._kept()}"
            )

    def _where(self, step: int | None = None) -> str:
        text = (
            f"stage {self.stage}, epoch {self._epoch + 1} "
            f"(global epoch {self.stage_offset + self._epoch + 1})"
        )
        return f"{text}, step {step}" if step is not None else text

    def _kept(self) -> str:
        latest = self.ckpt.latest()
        if latest is None:
            return "no checkpoint had been written yet"
        return (
            f"the last good checkpoint ({latest[0]}, global epoch "
            f"{latest[1].global_epoch}) is kept"
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
        # The loss of a step is computed before its update: a finite loss says
        # nothing about the weights the last update produced. Check them before
        # they become a checkpoint (every worker checks: all stop together).
        problem = unusable_weights(net)
        if problem:
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"after the last update of {self._where()}, {problem}; the run stops "
                f"and {self._kept()}"
            )
        self.train_seconds = self._prior_seconds + (time.perf_counter() - self._session_t0)
        if not self.is_chief:
            return
        state = TrainState(
            train_seconds=round(self.train_seconds, 3),
            stage=self.stage,
            stage_epoch=epoch + 1,
            global_epoch=global_epoch,
            best_score=self.best_score,
            best_key=self.best_key,
            metrics={k: v for k, v in row.items() if isinstance(v, (int, float))},
        )
        self.ckpt.save(net, self.model.optimizer, state, is_best=is_best)
        # Only after the checkpoint is published: a kill in between loses the row,
        # which resume restores from the checkpoint (run.reconcile_log), never
        # leaves one twice.
        append_log_row(self.run_dir, row, self.columns)
        if self.print_epochs:
            print(format_epoch_line(row, self.stage_epochs, self.columns), flush=True)
        self._write_tensorboard(global_epoch, logs, lr, elapsed, images_per_s, eval_metrics)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # ----------------------------------------------------------------- writers
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
