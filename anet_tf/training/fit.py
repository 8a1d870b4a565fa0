"""Two-stage training of a run: strategy, model, data, stages, resume.

``train(cfg, run_dir)`` runs stage 1 (L, eq. 10) for ``train.stage1.epochs`` and
stage 2 (L', eq. 13; backbone frozen) for ``train.stage2.epochs``, writing the run
directory (resolved config, checkpoints, CSV log, TensorBoard). ``resume=True``
continues from the last complete checkpoint of the run, in the right stage, with the
optimizer state. Evaluation and export are injected by the caller (``evaluate_fn``),
so this module needs nothing to its right in the data flow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from anet_tf.config import Config
from anet_tf.config import scheduled_epochs
from anet_tf.io import atomic_write_text
from anet_tf.training.callbacks import StageProgress
from anet_tf.training.callbacks import stage_callbacks
from anet_tf.training.checkpoint import BEST
from anet_tf.training.checkpoint import STATE
from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.distill import recorded_teacher
from anet_tf.training.interrupt import InterruptCheck
from anet_tf.training.optimizers import coupled_weight_decay
from anet_tf.training.optimizers import make_optimizer
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import RunLock
from anet_tf.training.run import describe_network
from anet_tf.training.run import load_network_description
from anet_tf.training.run import reconcile_log
from anet_tf.training.run import record_resume_changes
from anet_tf.training.run import remove_stale_temporaries
from anet_tf.training.run import save_network_description
from anet_tf.training.run import save_run_config
from anet_tf.training.stages import STAGE1
from anet_tf.training.stages import STAGE2
from anet_tf.training.trainer import ANetTrainer

STAGE1_SNAPSHOT = "stage1"  # checkpoints/stage1: the checkpoint that ends stage 1


@dataclass
class TrainResult:
    """What a finished (or resumed and finished) run produced."""

    run_dir: str
    net: keras.Model
    dataset: object
    metrics: dict
    global_epoch: int
    train_seconds: float = 0.0  # wall time of training, summed over resumed sessions


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over all visible GPUs (the default strategy on a
    CPU-only machine); ``one_device``; ``mirrored``; ``multi_worker`` (TF_CONFIG)."""
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "train.strategy=multi_worker needs the TF_CONFIG environment variable "
                "(cluster and task); see docs/training.md, 'Several GPUs and several machines'"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto" and gpus:
        return tf.distribute.MirroredStrategy()
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPU devices (tests split the CPU in 2).
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def on_jax() -> bool:
    """Whether Keras runs the JAX backend (``KERAS_BACKEND=jax``): training then
    goes through Keras' stateless JAX ``fit`` (tf.data still feeds it)."""
    return keras.backend.backend() == "jax"


def mixed_precision_policy() -> str:
    """``train.mixed_precision``'s dtype policy: float16 with loss scaling on
    TensorFlow (GPU tensor cores), bfloat16 on JAX (no loss scaling needed)."""
    return "mixed_bfloat16" if on_jax() else "mixed_float16"


@contextlib.contextmanager
def jax_distribution(name: str):
    """The JAX backend's counterpart of :func:`make_strategy`, for the block:
    ``keras.distribution.DataParallel`` over every JAX device when there are
    several and ``train.strategy`` is auto or mirrored (one computation over the
    global batch, sharded along the batch); one device otherwise. Yields the
    number of devices the batch is split over.

    ``multi_worker`` (TF_CONFIG) is TensorFlow's; it is refused here."""
    import jax

    from anet_tf.config import ConfigError

    if name == "multi_worker":
        raise ConfigError(
            "train.strategy=multi_worker is TensorFlow's MultiWorkerMirroredStrategy; "
            "on the JAX backend use auto or mirrored (DataParallel over the local "
            "devices) or run with KERAS_BACKEND=tensorflow"
        )
    devices = jax.devices()
    if name not in ("auto", "mirrored") or len(devices) < 2:
        yield 1
        return
    before = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield len(devices)
    finally:
        keras.distribution.set_distribution(before)


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return _chief_task(resolver.task_type, resolver.task_id)


def _chief_task(task_type, task_id) -> bool:
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)


def holds_run_lock(cfg: Config) -> bool:
    """Whether this process holds its run folder's lock (:class:`RunLock`) while it
    fits: every process but a non-chief worker of ``train.strategy=multi_worker``
    (its TF_CONFIG task; :func:`is_chief` asks the strategy the same, once made).
    For a caller that takes the lock before training (:func:`train`'s
    ``run_lock``)."""
    if cfg.train.strategy != "multi_worker":
        return True
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task") or {}
    except (ValueError, AttributeError):
        return True  # train() refuses a bad TF_CONFIG itself
    return _chief_task(task.get("type"), task.get("index", 0))


@contextlib.contextmanager
def holding_run_lock(cfg: Config, run_dir: str, verbose: int = 1):
    """Hold ``run_dir``'s :class:`RunLock` for the block, where
    :func:`holds_run_lock`; yields it (for :func:`train`'s ``run_lock``), or None
    on a non-chief worker.

    Raises:
        RunFolderError: another process holds it (one line naming it).
    """
    if not holds_run_lock(cfg):
        yield None
        return
    with RunLock(run_dir) as lock:
        if lock.took_over and verbose:
            print(f"[anet-tf] {run_dir}: took over the lock of {lock.took_over}, which has ended")
        yield lock


def per_replica_data_config(cfg: Config, replicas: int):
    """``data.batch_size`` is the global batch (as the paper's 512 = 128 x 4 over 8
    GPUs); each replica gets ``batch_size / replicas`` images, which must be P x K."""
    from anet_tf.config import ConfigError

    b, k = cfg.data.batch_size, cfg.data.num_instances
    if b % replicas or (b // replicas) % k or b // replicas // k < 2:
        raise ConfigError(
            f"{cfg.source}: data.batch_size={b} must split into {replicas} replica "
            f"batches of P x K images with K={k} and P >= 2"
        )
    return dataclasses.replace(cfg.data, batch_size=b // replicas)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def set_determinism(enabled: bool) -> tuple[bool, bool]:
    """Make the ops of a run repeatable (``train.deterministic``); ``False`` leaves
    the process's settings as they are.

    Returns the previous settings, for :func:`restore_determinism`.

    On: TensorFlow op determinism (ops with a nondeterministic fast path take a
    deterministic one, ops without one raise ``UnimplementedError``, tf.data runs
    in order) *and* no Grappler graph optimisation. Op determinism alone was not
    enough on CPU (TF 2.21, measured on the synthetic config at 128x128): one
    trace of the train step gave different gradients from call to call, because
    the optimised graph sums some gradients with ``AddN`` that accumulates into
    whichever input buffer it can reuse first (an order that depends on which
    other ops have finished), and two traces of the same step could be optimised
    into graphs that round differently. With Grappler off both went away: every
    same-seed run gave bit-identical weights. The price is the unoptimised graph
    (its measured cost: docs/training.md, ``train.deterministic``).

    Seeds and the input pipeline are repeatable in either case
    (:func:`seed_everything`; ``data.seed`` drives the sampler and the stateless
    augmentation).
    """
    # tf.config.experimental exports only enable_op_determinism; the query and the
    # switch back (so one process can run both kinds) live beside it.
    from tensorflow.python.framework import config as tf_config

    options = tf.config.optimizer.get_experimental_options()
    before = (
        tf_config.is_op_determinism_enabled(),
        bool(options.get("disable_meta_optimizer")),
    )
    if enabled:
        tf_config.enable_op_determinism()
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return before


def restore_determinism(before: tuple[bool, bool]) -> None:
    """Put back the settings :func:`set_determinism` returned."""
    from tensorflow.python.framework import config as tf_config

    op_determinism, no_grappler = before
    if op_determinism != tf_config.is_op_determinism_enabled():
        if op_determinism:
            tf_config.enable_op_determinism()
        else:
            tf_config.disable_op_determinism()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": no_grappler})


def build_trainer(
    cfg: Config, num_ids: int, num_classes: list[int], load_pretrained: bool = True,
    teacher=None,
) -> ANetTrainer:
    """Build the network and its training wrapper from the config.

    ``load_pretrained=False`` when a checkpoint's weights will be loaded into it
    (resume, evaluation, export): ``model.pretrained`` is then not read at all.
    ``teacher``: a teacher :class:`~anet_tf.training.run_checkpoints.Run` to
    distil (:class:`~anet_tf.training.distill.DistillTrainer`; its network is
    built here)."""
    from anet_tf.losses import loss_kwargs_from_config
    from anet_tf.model import build_model_from_config

    net = build_model_from_config(
        cfg, num_ids=num_ids, num_classes=num_classes, load_pretrained=load_pretrained
    )
    coupled = cfg.train.weight_decay_mode == "coupled"
    make = ANetTrainer
    if teacher is not None:
        from anet_tf.training.distill import distill_trainer

        def make(net, **kwargs):
            return distill_trainer(cfg, net, teacher, **kwargs)

    return make(
        net,
        attribute_names=cfg.data.attributes if cfg.model.variant != "baseline" else [],
        variant=cfg.model.variant,
        loss_kwargs=loss_kwargs_from_config(cfg.loss, cfg.model.head),
        weight_decay=coupled_weight_decay(cfg.train),
        freeze_iters=cfg.train.freeze_iters,
        weight_decay_norm=cfg.train.weight_decay_norm if coupled else None,
        weight_decay_bias=cfg.train.weight_decay_bias if coupled else None,
        bias_lr_factor=cfg.train.bias_lr_factor,
    )


def train(
    cfg: Config,
    run_dir: str,
    *,
    resume: bool = False,
    dataset=None,
    evaluate_fn: Callable | None = None,
    extra_callbacks: tuple = (),
    verbose: int = 1,
    command: str = "anet-tf fit --resume",
    run_lock: RunLock | None = None,
) -> TrainResult:
    """Run (or resume) both training stages.

    Args:
        cfg: the resolved config (on resume, the run's saved config).
        run_dir: the run directory (created if needed).
        resume: continue from ``run_dir/checkpoints/last.json``.
        dataset: a ``ReidDataset`` (default: read from ``cfg.data``).
        evaluate_fn: ``fn(net) -> dict`` evaluation metrics, used every
            ``train.eval_every`` epochs to choose the best checkpoint.
        extra_callbacks: more Keras callbacks (tests use this).
        verbose: 0 silent; 1 (a terminal) Keras' step bar, then one plain line
            per epoch (stage, epoch, terms, lr, images/s, time); 2 (logs and
            files) that line per epoch, and inside a long epoch a line at each
            tenth of its steps (:class:`~anet_tf.training.callbacks.StepLines`).
        command: on resume, the command line recorded in changes.yaml when ``cfg``
            differs from the run's config.yaml (written once the lock is held).
        run_lock: the :class:`RunLock` of ``run_dir``, already held by the caller,
            who releases it (``anet-tf fit`` holds it through evaluation and
            export too). None: the chief takes it here for the training and
            releases it on return. (A second RunLock of the folder in the same
            process is refused as another process's would be: flock locks
            belong to an open file.)
    """
    policy = keras.mixed_precision.global_policy()
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy())
        if verbose:
            print(f"[anet-tf] mixed precision: {mixed_precision_policy()} "
                  f"(Keras backend {keras.backend.backend()})")
    determinism = set_determinism(cfg.train.deterministic)
    try:
        return _train(cfg, run_dir, resume=resume, dataset=dataset, evaluate_fn=evaluate_fn,
                      extra_callbacks=extra_callbacks, verbose=verbose, command=command,
                      run_lock=run_lock)
    finally:
        keras.mixed_precision.set_global_policy(policy)
        restore_determinism(determinism)


def _jax_devices() -> str:
    """The devices a JAX step runs on, for the stage line."""
    distribution = keras.distribution.distribution()
    count = distribution.device_mesh.devices.size if distribution is not None else 1
    return f"{count} JAX device(s)"


def _jit_compile(cfg: Config) -> bool:
    """``train.jit_compile`` on TensorFlow (XLA or not); always on JAX, whose
    train step runs op by op otherwise."""
    return True if on_jax() else cfg.train.jit_compile


def _train(cfg, run_dir, *, resume, dataset, evaluate_fn, extra_callbacks, verbose, command,
           run_lock=None) -> TrainResult:
    from anet_tf.data.readers import load_dataset

    seed_everything(cfg.train.seed)
    with contextlib.ExitStack() as stack:
        if on_jax():
            # Keras' JAX fit; TensorFlow's default strategy is a no-op scope.
            devices = stack.enter_context(jax_distribution(cfg.train.strategy))
            strategy = tf.distribute.get_strategy()
            if devices > 1 and verbose:
                print(f"[anet-tf] JAX: DataParallel over {devices} devices")
        else:
            strategy = make_strategy(cfg.train.strategy)
        chief = is_chief(strategy)
        if dataset is None:
            dataset = load_dataset(cfg)
        # One process trains in a run folder: the lock lives as long as training,
        # or longer where the caller holds it.
        lock = RunLock(run_dir)
        if chief and run_lock is None:
            lock.acquire()
            if lock.took_over and verbose:
                print(f"[anet-tf] {run_dir}: took over the lock of {lock.took_over}, which has ended")
        try:
            return _train_locked(cfg, run_dir, strategy, chief, dataset, resume=resume,
                                 evaluate_fn=evaluate_fn, extra_callbacks=extra_callbacks,
                                 verbose=verbose, command=command)
        finally:
            lock.release()


@dataclass
class _Session:
    """What every stage of one training session shares: the run, the network and
    its optimizer, and what the caller injected."""

    cfg: Config
    run_dir: str
    strategy: tf.distribute.Strategy
    chief: bool
    dataset: object
    trainer: ANetTrainer
    optimizer: keras.optimizers.Optimizer
    ckpts: CheckpointManager
    columns: list[str]
    evaluate_fn: Callable | None
    extra_callbacks: tuple
    verbose: int


@dataclass
class _Carried:
    """What a stage hands the next one and the run's result: the resumed
    checkpoint's values at first, then each trained stage's."""

    best_score: float | None = None
    best_key: str = ""
    last_metrics: dict = dataclasses.field(default_factory=dict)
    global_epoch: int = 0
    train_seconds: float = 0.0

    @classmethod
    def of(cls, state) -> _Carried:
        if state is None:
            return cls()
        return cls(state.best_score, state.best_key, dict(state.metrics or {}),
                   state.global_epoch, state.train_seconds)


def _train_locked(cfg, run_dir, strategy, chief, dataset, *, resume, evaluate_fn,
                  extra_callbacks, verbose, command) -> TrainResult:
    ckpts = CheckpointManager(os.path.join(run_dir, CHECKPOINTS))
    latest = _open_run_folder(cfg, run_dir, ckpts, chief, resume, verbose)
    # A distilled run (anet-tf distill) names its teacher in the run folder.
    teacher = recorded_teacher(run_dir)
    if chief and (not resume or load_network_description(run_dir) is None):
        # What the network's shape depends on besides the config, so the run
        # loads without its dataset (training/run_checkpoints.Run.network).
        save_network_description(run_dir, describe_network(cfg, dataset))
    trainer, optimizer = _compiled_trainer(cfg, strategy, dataset, load_pretrained=latest is None,
                                           teacher=teacher)
    state = _restore(cfg, run_dir, latest, trainer, optimizer, chief, resume, verbose, command)
    columns = list(trainer.trackers)  # term_names(...), and a student's kd_* terms
    if chief:
        # One row per epoch the checkpoint completed (a kill can fall between the
        # checkpoint and its row, and older versions wrote the row first).
        reconcile_log(run_dir, state.global_epoch if state else 0,
                      (state.metrics if state else None), columns)
    session = _Session(cfg, run_dir, strategy, chief, dataset, trainer, optimizer, ckpts,
                       columns, evaluate_fn, extra_callbacks, verbose)
    carried = _run_stages(session, state)
    if cfg.train.attribute_refit and cfg.model.variant != "baseline":
        refit_and_save(cfg, trainer.net, optimizer, dataset, ckpts, chief, verbose)
    return TrainResult(
        run_dir=run_dir,
        net=trainer.net,
        dataset=dataset,
        metrics=carried.last_metrics,
        global_epoch=carried.global_epoch,
        train_seconds=carried.train_seconds,
    )


def _open_run_folder(cfg, run_dir, ckpts, chief, resume, verbose):
    """Tidy what an interrupted save left, write the config of a new run, and find
    the checkpoint a resumed one continues from (None: start from the beginning)."""
    if chief:
        removed = remove_stale_temporaries(run_dir) + ckpts.remove_unpublished()
        if removed and verbose:
            print(f"[anet-tf] removed what an interrupted save left: {', '.join(map(str, removed))}")
    if chief and not resume:
        save_run_config(cfg, run_dir)
    latest = ckpts.latest() if resume else None
    if resume and latest is None and verbose:
        print(f"[anet-tf] no checkpoint in {run_dir}; starting from the beginning")
    return latest


def _compiled_trainer(cfg, strategy, dataset, *, load_pretrained: bool, teacher=None):
    """The network, its training wrapper and its optimizer, built and compiled in
    the strategy's scope (with ``teacher``'s network, for a distilled run)."""
    num_ids = len(dataset.train_pids())
    with strategy.scope():
        trainer = build_trainer(cfg, num_ids, dataset.num_classes, load_pretrained=load_pretrained,
                                teacher=teacher)
        # Loss scaling is for float16 (TensorFlow); JAX's bfloat16 needs none.
        optimizer = make_optimizer(cfg.train, cfg.train.mixed_precision and not on_jax())
        # Build the optimizer over the stage-1 variables so its state has the same
        # layout whether it is saved in stage 1 or 2 (stage 2 updates a subset).
        optimizer.build(trainer.net.trainable_variables)
        trainer.compile(optimizer=optimizer, jit_compile=_jit_compile(cfg))
    return trainer, optimizer


def _restore(cfg, run_dir, latest, trainer, optimizer, chief, resume, verbose, command):
    """Load the checkpoint ``latest`` (weights and optimizer state) and, on resume,
    record a --set change; the checkpoint's TrainState, or None."""
    state = None
    if latest is not None:
        path, state = latest
        CheckpointManager.restore(path, trainer.net, optimizer)
    if chief and resume:
        # The resumed run can continue: only now is a --set change recorded.
        record_resume_changes(run_dir, cfg, command)
        if verbose and state is not None:
            print(
                f"[anet-tf] resumed {path}: stage {state.stage}, epoch {state.stage_epoch}"
                f" of that stage (global epoch {state.global_epoch})"
            )
    return state


def _run_stages(session: _Session, state) -> _Carried:
    """Train each stage from where ``state`` (the resumed checkpoint) left it."""
    cfg, verbose = session.cfg, session.verbose
    stages = [(STAGE1, cfg.train.stage1)]
    if cfg.model.variant == "anet":
        stages.append((STAGE2, cfg.train.stage2))
    elif cfg.train.stage2.epochs and verbose:
        print(f"[anet-tf] model.variant={cfg.model.variant!r}: stage 2 (AC, eq. 13) applies to anet only; skipped")
    carried = _Carried.of(state)
    offset = 0
    for stage, stage_cfg in stages:
        start = 0
        if state is not None:
            if state.stage > stage:
                offset += stage_cfg.epochs
                continue
            if state.stage == stage:
                start = state.stage_epoch
        if start >= stage_cfg.epochs:
            offset += stage_cfg.epochs
            continue
        _train_stage(session, stage, stage_cfg, start, offset,
                     is_final=stage == stages[-1][0], carried=carried)
        if stage == STAGE1 and len(stages) > 1 and session.chief:
            # The end of stage 1 outlives checkpoint pruning: ANet with and without
            # AC share it (they differ only in stage 2's L').
            session.ckpts.snapshot(STAGE1_SNAPSHOT)
        offset += stage_cfg.epochs
        carried.global_epoch = offset
    return carried


def _train_stage(s: _Session, stage, stage_cfg, start, offset, *, is_final, carried) -> None:
    """Train one stage from its epoch ``start``; what it ends with goes to
    ``carried``."""
    from anet_tf.data.pipeline import build_train_dataset

    cfg, replicas = s.cfg, s.strategy.num_replicas_in_sync
    with s.strategy.scope():
        s.trainer.set_stage(stage)
        s.trainer.compile(optimizer=s.optimizer, jit_compile=_jit_compile(cfg))
    data_cfg = per_replica_data_config(cfg, replicas)
    train_ds, steps = build_train_dataset(
        s.dataset,
        data_cfg,
        num_replicas=replicas,
        epoch_seed_offset=offset + start,
        steps_per_epoch=stage_cfg.steps_per_epoch,
    )
    steps = stage_cfg.steps_per_epoch or steps
    progress = StageProgress(
        s.run_dir,
        stage=stage,
        stage_offset=offset,
        stage_epochs=stage_cfg.epochs,
        batch_size=data_cfg.batch_size * replicas,
        columns=s.columns,
        is_chief=s.chief,
        is_final_stage=is_final,
        best_score=carried.best_score,
        best_key=carried.best_key,
        train_seconds=carried.train_seconds,
    )
    run_callbacks = _stage_callbacks(s, stage_cfg, progress, steps)
    if s.verbose:
        print(
            f"[anet-tf] stage {stage}: epochs {start + 1}..{stage_cfg.epochs}, "
            f"{steps} steps of {data_cfg.batch_size * replicas} images, "
            + (_jax_devices() if on_jax() else f"{replicas} replica(s)")
        )
    # First: a Ctrl-C that Python swallowed (in a __del__) is raised at the next step.
    callbacks = [InterruptCheck(), *run_callbacks, *s.extra_callbacks]
    _fit_stage(s, train_ds, data_cfg, stage_cfg, start, offset, steps, callbacks)
    carried.best_score, carried.best_key = progress.best_score, progress.best_key
    carried.train_seconds = progress.train_seconds
    carried.last_metrics = progress.last_metrics or carried.last_metrics


def _stage_callbacks(s: _Session, stage_cfg, progress, steps) -> list:
    """The stage's learning-rate schedule, evaluation, checkpoints and log rows."""
    cfg = s.cfg
    return stage_callbacks(
        progress,
        base_lr=cfg.train.lr,
        milestones=cfg.train.lr_milestones,
        gamma=cfg.train.lr_gamma,
        stage_lr=stage_cfg.lr,
        schedule=dict(
            schedule=cfg.train.lr_schedule,
            total_epochs=scheduled_epochs(cfg),
            delay_epochs=cfg.train.lr_delay_epochs,
            lr_min=cfg.train.lr_min,
            warmup_iters=cfg.train.warmup_iters,
            warmup_factor=cfg.train.warmup_factor,
            steps_per_epoch=steps,
        ),
        evaluate_fn=s.evaluate_fn,
        eval_every=cfg.train.eval_every,
        # A terminal (1): Keras' bar, then the epoch's line; elsewhere (2): the
        # epoch's line, and lines inside a long epoch. (The multi-worker loop
        # draws no Keras bar.)
        print_epochs=s.verbose in (1, 2),
        keras_bar=s.verbose == 1 and not _multi_worker(s),
        step_lines=steps if s.verbose == 2 else 0,
    )


def _multi_worker(s: _Session) -> bool:
    return isinstance(s.strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _fit_stage(s: _Session, train_ds, data_cfg, stage_cfg, start, offset, steps, callbacks) -> None:
    """Keras' fit, or the custom loop under MultiWorkerMirroredStrategy."""
    if _multi_worker(s):
        from anet_tf.training.loop import custom_fit

        custom_fit(
            s.trainer,
            s.strategy,
            s.dataset,
            data_cfg,
            epochs=stage_cfg.epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            callbacks=callbacks,
            epoch_seed_offset=offset + start,
            verbose=0,  # LogRow prints the epoch
        )
    else:
        s.trainer.fit(
            train_ds,
            epochs=stage_cfg.epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=1 if s.verbose == 1 else 0,  # 2: LogRow's plain lines
            shuffle=False,  # the P x K sampler already orders the stream
        )


def refit_and_save(cfg, net, optimizer, dataset, ckpts, chief: bool, verbose) -> None:
    """``train.attribute_refit``: refit the attribute classifiers of the weights
    training ended with (:mod:`anet_tf.training.refit`) and save them in place of
    the newest checkpoint (same epoch; ``best/`` too when it is that epoch), so that
    evaluation, export and a resumed run all see them. Skipped when that
    checkpoint was already refitted with the same ``attribute_refit_c`` (its
    weights are the ones in ``net``)."""
    from anet_tf.training.refit import refit_attribute_classifiers

    latest = ckpts.latest()
    c = cfg.train.attribute_refit_c
    if latest is not None and latest[1].attribute_refit_c == c:
        return
    if verbose:
        print(f"[anet-tf] refitting the attribute classifiers on the training images (C = {c:g}) ...",
              flush=True)
    for r in refit_attribute_classifiers(net, cfg, dataset, c=c):
        if verbose:
            print(
                f"[anet-tf] refit {r.attribute}: {r.images} training images, train top-1 "
                f"{100 * r.train_top1_before:.2f} -> {100 * r.train_top1_after:.2f} % "
                f"({r.iterations} L-BFGS iterations{'' if r.converged else ', NOT converged'})"
            )
    if not chief or latest is None:
        return
    path, state = latest
    best = os.path.join(ckpts.directory, BEST)
    best_epoch = (
        CheckpointManager.read_state(best).global_epoch
        if os.path.isfile(os.path.join(best, STATE))
        else None
    )
    ckpts.save(
        net,
        optimizer,
        dataclasses.replace(state, attribute_refit_c=c),
        is_best=best_epoch == state.global_epoch,
    )
    if best_epoch is not None and best_epoch != state.global_epoch and verbose:
        print(
            f"[anet-tf] note: checkpoints/best is epoch {best_epoch} (chosen by evaluation) "
            f"and keeps the classifiers it was trained with; the refit is in epoch "
            f"{state.global_epoch}, the last"
        )


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))
