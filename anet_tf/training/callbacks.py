"""Callbacks of a training run: lr schedule, NaN guard, evaluation, checkpoints,
CSV log and TensorBoard.

Each is a small ordinary ``keras.callbacks.Callback``, so ``model.fit`` drives them,
and :func:`anet_tf.training.loop.custom_fit` drives the same objects in the
multi-worker loop. :func:`stage_callbacks` gives those of one stage in the order
Keras must call them, because the order of an epoch's end is what keeps a run
intact::

    SyncMovingStatistics  every replica's BatchNorm statistics averaged
    EpochMeter            the epoch's losses, lr, time and images/s recorded
    Evaluation            evaluated (when due); is it the best epoch so far?
    NonFiniteGuard        weights finite, and finite outputs on a probe batch
    Checkpoint            the checkpoint written and published (last.json)
    LogRow                the row appended to log.csv
    TensorBoardScalars    the scalars written

An exception stops the chain there: weights that fail the check never become a
checkpoint, and a kill between the checkpoint and its row leaves at most a
missing row, which resume restores. The callbacks hand the epoch on to each other
through one :class:`StageProgress` (the stage's place in the run, the best score,
the training time, the :class:`EpochRecord` under way). ``LrSchedule`` sets the lr
at each epoch start; ``NonFiniteGuard`` also stops at the first NaN or Inf loss
term of a step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

import keras
import numpy as np
import tensorflow as tf

from anet_tf.progress import enabled as progress_enabled
from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.checkpoint import TrainState
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import TENSORBOARD
from anet_tf.training.run import append_log_row
from anet_tf.training.trainer import cosine_lr_at_epoch
from anet_tf.training.trainer import lr_at_epoch
from anet_tf.training.trainer import warmup_multiplier


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
    step's loss would report as NaN only after they had been saved. When it fails,
    :func:`non_finite_probe_report` says where and why."""
    bad = [w.path for w in net.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if bad:
        return (
            f"{len(bad)} of {len(net.weights)} weight arrays are not finite "
            f"(first: {bad[0]})"
        )
    shape = [probe_batch, *(d or 64 for d in net.input_shape[1:])]
    probe = np.random.default_rng(0).standard_normal(shape).astype("float32")
    name = _first_non_finite_output(net(probe, training=False))
    return None if name is None else non_finite_probe_report(net, probe, name)


def _first_non_finite_output(outputs) -> str | None:
    items = outputs.items() if isinstance(outputs, dict) else [("output", outputs)]
    for name, value in sorted(items):
        values = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))
        if not np.isfinite(values).all():
            return name
    return None


def non_finite_probe_report(net, probe, name: str) -> str:
    """What an inference-mode probe whose output ``name`` is not finite shows: the
    first layer that gives a non-finite value, and whether the same weights give
    finite outputs with batch statistics (training mode, run statelessly: no moving
    statistic changes).

    Finite there means the weights work and BatchNorm's moving statistics do not
    describe their scale: training mode normalises every convolution's output by
    the batch, inference mode by moving averages (momentum 0.9: 0.81 of the initial
    mean 0 / variance 1 is left after two steps) that lag weights which grew fast,
    as in a few steps from random initialisation whose updates are large beside
    the weights. Each block then scales the map up, and a non-local block, cubic
    in its input, takes it past float32's range."""
    try:
        layer = first_non_finite_layer(net, probe)
        finite_in_training = _finite_with_batch_statistics(net, probe)
    except Exception as exc:  # noqa: BLE001 - the refusal matters, the diagnosis less
        return (
            f"the weights are finite but the network's output '{name}' is not finite "
            f"on the inference-mode probe batch (no diagnosis: {type(exc).__name__})"
        )
    where = f" (first at layer '{layer}')" if layer else ""
    if finite_in_training:
        return (
            f"the weights are finite, but the network's output '{name}' is not finite "
            f"on the inference-mode probe batch{where}, while all outputs are finite "
            "with batch statistics (training mode): BatchNorm's moving statistics do "
            "not yet match weights that grew fast, as in the first unfrozen steps "
            "from random initialisation (model.pretrained starts from statistics "
            "that match; train.freeze_iters keeps the backbone as it is for that "
            "many steps)"
        )
    return (
        f"the weights are finite but the network's output '{name}' is not finite on "
        f"a probe batch{where}, in inference mode and with batch statistics "
        "(training mode) alike: the weights are too large to use, as after a step "
        "at an absurd learning rate"
    )


def _finite_with_batch_statistics(net, probe) -> bool:
    outputs, _ = net.stateless_call(
        [v.value for v in net.trainable_variables],
        [v.value for v in net.non_trainable_variables],
        probe,
        training=True,
    )
    return _first_non_finite_output(outputs) is None


def first_non_finite_layer(model, x) -> str | None:
    """The first layer of a functional ``model`` (in graph order, looking inside
    nested functional models: ``backbone/nl3_0``) whose inference-mode output on
    ``x`` is not finite; None if none is found. A layer called more than once (no
    single place in the graph) is passed over."""
    layers, flags = [], []
    for layer in model.layers:
        # The node of the call inside this graph (a nested model's own .input and
        # .output are those of its inner graph).
        nodes = layer._inbound_nodes
        if isinstance(layer, keras.layers.InputLayer) or len(nodes) != 1:
            continue
        finite = [
            keras.ops.all(keras.ops.isfinite(keras.ops.cast(t, "float32")))
            for t in keras.tree.flatten(nodes[0].output_tensors)
        ]
        layers.append(layer)
        flags.append(keras.ops.all(keras.ops.stack(finite)) if len(finite) > 1 else finite[0])
    if not layers:
        return None
    values = keras.Model(model.input, flags)(x, training=False)
    for layer, ok in zip(layers, keras.tree.flatten(values), strict=True):
        if bool(keras.ops.convert_to_numpy(ok)):
            continue
        if isinstance(layer, keras.Model) and layer.layers:
            inputs = layer._inbound_nodes[0].input_tensors
            inner = first_non_finite_layer(layer, keras.Model(model.input, inputs)(x, training=False))
            if inner:
                return f"{layer.name}/{inner}"
        return layer.name
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


class LrSchedule(keras.callbacks.Callback):
    """Sets the lr at each epoch start: the schedule over both stages (multistep,
    :func:`lr_at_epoch`, or delayed cosine, :func:`cosine_lr_at_epoch`, of the global
    epoch), or ``stage_lr`` for every epoch of the stage (``train.stageN.lr``) when
    given. With ``warmup_iters``, the lr of each of the run's first
    ``warmup_iters`` steps is also set before the step, times the linear warm-up
    factor (:func:`warmup_multiplier`); the step's place in the run is
    ``(stage_offset + epoch) * steps_per_epoch + batch``, so a resumed run warms up
    where the uninterrupted one was."""

    def __init__(self, *, stage_offset: int, base_lr: float, milestones, gamma: float,
                 stage_lr: float | None = None, schedule: str = "multistep",
                 total_epochs: int = 0, delay_epochs: int = 0, lr_min: float = 0.0,
                 warmup_iters: int = 0, warmup_factor: float = 0.1,
                 steps_per_epoch: int = 0):
        super().__init__()
        if schedule not in ("multistep", "cosine"):
            raise ValueError(f"schedule must be multistep or cosine. Received: {schedule!r}")
        if warmup_iters and steps_per_epoch <= 0:
            raise ValueError("warm-up needs steps_per_epoch to place each step in the run")
        self.stage_offset = stage_offset
        self.base_lr = base_lr
        self.milestones = list(milestones)
        self.gamma = gamma
        self.stage_lr = stage_lr
        self.schedule = schedule
        self.total_epochs = total_epochs
        self.delay_epochs = delay_epochs
        self.lr_min = lr_min
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0
        self._epoch_lr = base_lr

    def epoch_lr(self, epoch: int) -> float:
        """The lr of the stage's 0-based ``epoch`` before any warm-up factor."""
        if self.stage_lr is not None:
            return self.stage_lr
        global_epoch = self.stage_offset + epoch
        if self.schedule == "cosine":
            return cosine_lr_at_epoch(
                global_epoch, self.base_lr, self.total_epochs, self.delay_epochs, self.lr_min
            )
        return lr_at_epoch(global_epoch, self.base_lr, self.milestones, self.gamma)

    def _iteration(self, batch: int) -> int:
        return (self.stage_offset + self._epoch) * self.steps_per_epoch + batch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_lr = self.epoch_lr(epoch)
        lr = self._epoch_lr
        if self.warmup_iters:
            lr *= warmup_multiplier(self._iteration(0), self.warmup_iters, self.warmup_factor)
        _set_lr(self.model.optimizer, lr)

    def on_train_batch_begin(self, batch, logs=None):
        if not self.warmup_iters:
            return
        iteration = self._iteration(batch)
        if batch and iteration <= self.warmup_iters:
            factor = warmup_multiplier(iteration, self.warmup_iters, self.warmup_factor)
            # Keras' JAX fit holds the variables outside the model within an
            # epoch: put them back first, so the next step reads the new lr.
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:
                sync()
            _set_lr(self.model.optimizer, self._epoch_lr * factor)


@dataclass
class EpochRecord:
    """One epoch as the epoch-end callbacks fill it in, in their order."""

    stage: int
    epoch: int  # 1-based, within the stage
    global_epoch: int
    logs: dict[str, float]
    lr: float
    elapsed: float  # seconds of training steps (the evaluation not included)
    images_per_s: float
    eval_metrics: dict = field(default_factory=dict)
    is_best: bool = False

    def row(self, columns: list[str]) -> dict:
        """The epoch's ``log.csv`` row (and the metrics of its checkpoint)."""
        return {
            "stage": self.stage,
            "epoch": self.epoch,
            "global_epoch": self.global_epoch,
            "lr": self.lr,
            "epoch_time_s": round(self.elapsed, 3),
            "images_per_s": round(self.images_per_s, 2),
            **{c: self.logs.get(c, "") for c in columns},
            **{f"eval_{k}": v for k, v in self.eval_metrics.items() if isinstance(v, (int, float))},
        }


class StageProgress:
    """One stage of a run, as its callbacks share it.

    Args:
        run_dir: the run directory.
        stage: 1 or 2.
        stage_offset: global epochs completed before this stage began.
        stage_epochs: epochs of this stage.
        batch_size: global batch size (for images/s).
        columns: CSV columns (all loss terms of the variant).
        is_chief: only the chief writes files (multi-worker).
        is_final_stage: the last stage of the run (evaluated at its last epoch).
        best_score, best_key: best score so far (carried over stages and resumes).
        train_seconds: training wall time before this stage (all sessions); the
            stage adds its own, saved in every checkpoint.

    After the stage, ``best_score``, ``best_key``, ``train_seconds`` and
    ``last_metrics`` (the last epoch's losses and evaluation) are what it reached.
    """

    def __init__(self, run_dir: str, *, stage: int, stage_offset: int, stage_epochs: int,
                 batch_size: int, columns: list[str], is_chief: bool = True,
                 is_final_stage: bool = False, best_score: float | None = None,
                 best_key: str = "", train_seconds: float = 0.0):
        self.run_dir = run_dir
        self.stage = stage
        self.stage_offset = stage_offset
        self.stage_epochs = stage_epochs
        self.batch_size = batch_size
        self.columns = columns
        self.is_chief = is_chief
        self.is_final_stage = is_final_stage
        self.best_score = best_score
        self.best_key = best_key
        self.train_seconds = train_seconds  # before this stage; grows per epoch
        self.last_metrics: dict = {}
        self.ckpt = CheckpointManager(os.path.join(run_dir, CHECKPOINTS))
        self.epoch = 0  # the epoch under way, 0-based within the stage
        self.record: EpochRecord | None = None  # the epoch being ended
        self.session_t0: float | None = None  # this session's first epoch start
        self._prior_seconds = train_seconds

    def seconds_trained(self) -> float:
        """Training wall time of the run up to now, over every session."""
        return self._prior_seconds + (time.perf_counter() - self.session_t0)

    def where(self, step: int | None = None) -> str:
        text = (
            f"stage {self.stage}, epoch {self.epoch + 1} "
            f"(global epoch {self.stage_offset + self.epoch + 1})"
        )
        return f"{text}, step {step}" if step is not None else text

    def kept(self) -> str:
        latest = self.ckpt.latest()
        if latest is None:
            return "no checkpoint had been written yet"
        return (
            f"the last good checkpoint ({latest[0]}, global epoch "
            f"{latest[1].global_epoch}) is kept"
        )


class SyncMovingStatistics(keras.callbacks.Callback):
    """At each epoch end, averages the BatchNorm moving statistics over every
    replica (and worker), before anything reads the network: all of them join."""

    def on_epoch_end(self, epoch, logs=None):
        # JAX's DataParallel keeps one copy of the statistics (no such attribute).
        strategy = getattr(self.model, "distribute_strategy", None)
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            from anet_tf.training.loop import sync_moving_statistics

            sync_moving_statistics(self.model.net, strategy)


class EpochMeter(keras.callbacks.Callback):
    """Times each epoch and counts its steps; at its end, opens the
    :class:`EpochRecord` (losses, lr, time, images/s) the next callbacks fill in."""

    def __init__(self, progress: StageProgress):
        super().__init__()
        self.progress = progress
        self._t0 = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        if self.progress.session_t0 is None:
            self.progress.session_t0 = self._t0
        self._steps = 0
        self.progress.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        p = self.progress
        elapsed = time.perf_counter() - self._t0
        p.record = EpochRecord(
            stage=p.stage,
            epoch=epoch + 1,
            global_epoch=p.stage_offset + epoch + 1,
            logs={k: float(v) for k, v in (logs or {}).items()},
            lr=_get_lr(self.model.optimizer),
            elapsed=elapsed,
            images_per_s=self._steps * p.batch_size / max(elapsed, 1e-9),
        )


def is_better(score: float, key: str, best_score: float | None, best_key: str) -> bool:
    """Whether ``score`` (of kind ``key``: "mAP" or "epoch") beats the best so far.
    Scores of one kind compare; an evaluated mAP outranks a training-loss score."""
    if best_score is None or key == best_key:
        return best_score is None or score > best_score
    return key == "mAP" or best_key != "mAP"


class Evaluation(keras.callbacks.Callback):
    """Evaluates the network every ``eval_every`` global epochs and at the last
    epoch of the run, and ranks the epoch: by its mAP when evaluated, else by its
    number (without an evaluation the newest checkpoint is the best, so ``best/``
    is what fit ships; a training loss does not rank models, and L, L' differ).

    Args:
        evaluate_fn: optional ``fn(net) -> dict`` with at least "mAP".
    """

    def __init__(self, progress: StageProgress, evaluate_fn: Callable | None = None,
                 eval_every: int = 0):
        super().__init__()
        self.progress = progress
        self.evaluate_fn = evaluate_fn
        self.eval_every = eval_every

    def on_epoch_end(self, epoch, logs=None):
        p, record = self.progress, self.progress.record
        last_epoch = epoch + 1 == p.stage_epochs
        want_eval = self.evaluate_fn is not None and (
            (self.eval_every and record.global_epoch % self.eval_every == 0)
            or (last_epoch and p.is_final_stage and self.eval_every)
        )
        if want_eval:
            record.eval_metrics = self.evaluate_fn(self.model.net)
        if "mAP" in record.eval_metrics:
            score, key = float(record.eval_metrics["mAP"]), "mAP"
        else:
            score, key = float(record.global_epoch), "epoch"
        record.is_best = is_better(score, key, p.best_score, p.best_key)
        if record.is_best:
            p.best_score, p.best_key = score, key
        p.last_metrics = {**record.logs, **record.eval_metrics}


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops the run with :class:`NonFiniteLossError`, before any checkpoint of the
    epoch is written: after a step whose loss terms are not all finite (naming the
    term and the step), and at the epoch end when the weights are unusable
    (:func:`unusable_weights`)."""

    def __init__(self, progress: StageProgress):
        super().__init__()
        self.progress = progress

    def on_train_batch_end(self, batch, logs=None):
        name, value = first_non_finite(logs or {}, self.progress.columns)
        if name is not None:
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"loss term '{name}' is {value} at {self.progress.where(batch + 1)}; "
                f"the run stops and {self.progress.kept()}"
            )

    def on_epoch_end(self, epoch, logs=None):
        # The loss of a step is computed before its update: a finite loss says
        # nothing about the weights the last update produced. Check them before
        # they become a checkpoint (every worker checks: all stop together).
        problem = unusable_weights(self.model.net)
        if problem:
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"after the last update of {self.progress.where()}, {problem}; the "
                f"run stops and {self.progress.kept()}"
            )


class Checkpoint(keras.callbacks.Callback):
    """Writes the epoch's checkpoint and publishes it (``last.json``; ``best/``
    when the epoch ranks best), with the run's training time so far."""

    def __init__(self, progress: StageProgress):
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        p, record = self.progress, self.progress.record
        p.train_seconds = p.seconds_trained()
        if not p.is_chief:
            return
        state = TrainState(
            train_seconds=round(p.train_seconds, 3),
            stage=p.stage,
            stage_epoch=record.epoch,
            global_epoch=record.global_epoch,
            best_score=p.best_score,
            best_key=p.best_key,
            metrics={k: v for k, v in record.row(p.columns).items() if isinstance(v, (int, float))},
        )
        p.ckpt.save(self.model.net, self.model.optimizer, state, is_best=record.is_best)


class LogRow(keras.callbacks.Callback):
    """Appends the epoch's row to ``log.csv`` (and prints it as one plain line
    with ``print_epochs``). Only after the checkpoint is published: a kill in
    between loses the row, which resume restores from the checkpoint
    (:func:`anet_tf.training.run.reconcile_log`), never leaves one twice."""

    def __init__(self, progress: StageProgress, print_epochs: bool = False):
        super().__init__()
        self.progress = progress
        self.print_epochs = print_epochs

    def on_epoch_end(self, epoch, logs=None):
        p = self.progress
        if not p.is_chief:
            return
        row = p.record.row(p.columns)
        append_log_row(p.run_dir, row, p.columns)
        if self.print_epochs:
            print(format_epoch_line(row, p.stage_epochs, p.columns), flush=True)


# In-epoch lines (files and pipes): at each tenth of an epoch's steps, once this
# many seconds have passed since the epoch began or since the last line. An epoch
# shorter than this has none; a long one has at most nine, one per tenth.
STEP_LINE_INTERVAL_S = 60.0


class StepLines(keras.callbacks.Callback):
    """Inside a long epoch, one plain line at a step that ends a tenth of the
    epoch (``max(1, steps_per_epoch // 10)`` steps), when
    ``interval_s`` (default :data:`STEP_LINE_INTERVAL_S`) seconds have passed
    since the epoch began or since the last line: where the stage is, the running
    mean of the total loss, images/s and seconds so far. The epoch's own line
    (:class:`LogRow`) follows at its end. For output that is not a terminal
    (Keras' bar shows the steps there). None inside
    :func:`anet_tf.progress.silenced`."""

    def __init__(self, progress: StageProgress, steps_per_epoch: int,
                 interval_s: float | None = None):
        super().__init__()
        self.progress = progress
        self.steps = steps_per_epoch
        self.every = max(1, steps_per_epoch // 10)
        self.interval_s = STEP_LINE_INTERVAL_S if interval_s is None else interval_s
        self._t0 = self._last = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if not self.progress.is_chief or step % self.every or step >= self.steps:
            return
        if not progress_enabled():  # inside anet_tf.progress.silenced
            return
        now = time.perf_counter()
        if now - self._last < self.interval_s:
            return
        self._last = now
        print(self.line(step, logs or {}, now - self._t0), flush=True)

    def line(self, step: int, logs: dict, elapsed: float) -> str:
        p = self.progress
        total = logs.get("total")
        loss = f"total {float(total):.4f} | " if total is not None else ""
        return (
            f"[anet-tf] stage {p.stage} epoch {p.epoch + 1}/{p.stage_epochs} "
            f"(global {p.stage_offset + p.epoch + 1}) step {step}/{self.steps}: {loss}"
            f"{step * p.batch_size / max(elapsed, 1e-9):.1f} img/s | {elapsed:.1f} s"
        )


class TensorBoardScalars(keras.callbacks.Callback):
    """Writes each epoch's scalars to ``tensorboard/``: every loss term, lr, epoch
    time, images/s, stage, and the evaluation (attribute accuracy included)."""

    def __init__(self, progress: StageProgress):
        super().__init__()
        self.progress = progress
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self.progress.is_chief:
            self.write(self.progress.record)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def write(self, record: EpochRecord) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.progress.run_dir, TENSORBOARD)
            )
        with self._writer.as_default(step=record.global_epoch):
            for name, value in record.logs.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("train/lr", record.lr)
            tf.summary.scalar("train/epoch_time_s", record.elapsed)
            tf.summary.scalar("train/images_per_s", record.images_per_s)
            tf.summary.scalar("train/stage", float(record.stage))
            for name, value in record.eval_metrics.items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(f"eval/{name}", value)
            # attribute accuracy (van, anet): None where no test image is labelled
            for name, acc in (record.eval_metrics.get("attributes") or {}).items():
                for key in ("top1", "balanced"):
                    if acc.get(key) is not None:
                        tf.summary.scalar(f"eval/attr/{name}_{key}", acc[key])
        self._writer.flush()


def stage_callbacks(
    progress: StageProgress,
    *,
    base_lr: float,
    milestones,
    gamma: float,
    stage_lr: float | None = None,
    evaluate_fn: Callable | None = None,
    eval_every: int = 0,
    print_epochs: bool = False,
    schedule: dict | None = None,
    keras_bar: bool = False,
    step_lines: int = 0,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one stage, in the order an epoch's end needs (module
    docstring); ``base_lr``, ``milestones``, ``gamma``, ``stage_lr`` and the
    keyword arguments in ``schedule`` (cosine, warm-up): the lr schedule
    (:class:`LrSchedule`); ``evaluate_fn``, ``eval_every``: :class:`Evaluation`;
    ``print_epochs``: one plain line per epoch.

    ``keras_bar``: Keras' step bar (a terminal; ``model.fit`` with verbose=1),
    placed to finish its epoch before the evaluation and the epoch's line, which
    then come on lines of their own (Keras adds its bar last otherwise).
    ``step_lines``: the stage's steps per epoch, for :class:`StepLines` (output
    that is not a terminal); 0: none."""
    callbacks = [
        LrSchedule(stage_offset=progress.stage_offset, base_lr=base_lr,
                   milestones=milestones, gamma=gamma, stage_lr=stage_lr,
                   **(schedule or {})),
        SyncMovingStatistics(),
        EpochMeter(progress),
        *([keras.callbacks.ProgbarLogger()] if keras_bar else []),
        Evaluation(progress, evaluate_fn, eval_every),
        NonFiniteGuard(progress),
        Checkpoint(progress),
        LogRow(progress, print_epochs),
        TensorBoardScalars(progress),
    ]
    if step_lines:
        callbacks.append(StepLines(progress, step_lines))
    return callbacks
