"""The ANet train step on the JAX backend, in Keras 3's stateless idiom.

:class:`~anet_tf.training.trainer.ANetTrainer` trains with a ``tf.GradientTape``;
this module is its JAX counterpart: the network's variables and the optimizer's
live outside Keras as lists of arrays, and a step maps them to their new values.
Two entry points share one computation:

- :func:`fit_train_step` is ``ANetTrainer.train_step`` under ``KERAS_BACKEND=jax``:
  Keras' JAX ``fit`` jits it and threads the state, so ``anet-tf fit`` trains on
  JAX with the callbacks, checkpoints and run folder of the TensorFlow path. It
  applies all of the trainer's switches (coupled decay with norm / bias groups,
  ``bias_lr_factor``, ``freeze_iters`` through ``jax.lax.cond``).
- :func:`make_train_step` is a standalone jitted step over plain arrays, for the
  TensorFlow-free benchmark (``benchmarks/train_throughput_jax.py``)::

    step = make_train_step(net, attribute_names=..., variant="anet",
                           loss_kwargs=loss_kwargs_from_config(cfg.loss, cfg.model.head),
                           optimizer=optimizer, stage=1)
    state = train_state(net, optimizer)
    terms, *state = step(*state, images, targets)
    ...
    assign_state(net, optimizer, *state)       # back into the Keras variables

Inside, ``net.stateless_call`` runs the network (BatchNormalization statistics are
non-trainable variables threaded through), :func:`anet_tf.losses.compute_losses`
gives the loss terms (the very function the TensorFlow trainer calls, so the terms
are the same), ``jax.value_and_grad`` the gradients and
``optimizer.stateless_apply`` the update.

The optimizer is built on the network's trainable variables as stage 1 sees them
(everything that trains in some stage), so a run moves from stage 1 to stage 2 with
the same optimizer, as the TensorFlow trainer does; :func:`make_train_step` keeps
its state in that layout for both stages, while Keras' ``fit`` hands
:func:`fit_train_step` the current stage's trainable and non-trainable lists.
Stage 2 handles the frozen parts as ``ANetTrainer.set_stage(2)`` does: the
backbone and the ``f_head`` layer are not trainable while the step is traced, so
the backbone's BatchNorms run in inference mode (they use and keep their moving
statistics), and those variables get no gradient. They are left out of the optimizer update entirely (no gradient, so no
weight decay and no change of their Adam moments), while the optimizer's iteration
count advances for the whole step, exactly as ``optimizer.apply`` on the stage-2
variables does under TensorFlow.

Mixed precision follows the Keras dtype policy the network was built under
(``mixed_bfloat16`` is the natural choice on JAX and needs no loss scaling); the
loss terms are float32 whatever the policy. A ``LossScaleOptimizer`` (for
``mixed_float16``) is honoured: the loss and the coupled weight decay are scaled by
its current scale, which the optimizer's own ``stateless_apply`` then removes.

Devices: :func:`make_train_step` runs on one device; under ``fit`` a
``keras.distribution.DataParallel`` distribution shards the batch over several, and
the step stays one computation over the global batch. :func:`make_train_step` has
no arguments for FastReID's strong-baseline switches (``freeze_iters``, decay
groups, ``bias_lr_factor``); the benchmark does not need them.

This module imports no TensorFlow, directly or through what it imports, so it runs
where only JAX and Keras are installed (``KERAS_BACKEND=jax``); :func:`fit_train_step`
is handed the trainer, whose module does import TensorFlow.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import NamedTuple

import keras

from anet_tf import losses as L
from anet_tf.training.stages import STAGE1
from anet_tf.training.stages import check_stage
from anet_tf.training.stages import frozen_in_stage2


class TrainState(NamedTuple):
    """The values a step reads and returns: the network's trainable variables (in
    the stage-1 order of ``net.trainable_variables``), its non-trainable variables
    (BatchNorm statistics, in the stage-1 order of ``net.non_trainable_variables``)
    and the optimizer's variables (``optimizer.variables``)."""

    trainable: list
    non_trainable: list
    optimizer_vars: list


@contextlib.contextmanager
def stage_flags(net: keras.Model, stage: int):
    """Within the block, the ``trainable`` flags of ``stage``, as
    ``ANetTrainer.set_stage`` sets them (stage 2: backbone and ``f_head`` frozen);
    the flags the layers had before are restored afterwards.

    Keras reads these flags when the network is called, so a step enters this
    block while JAX traces it."""
    check_stage(stage)
    layers = frozen_in_stage2(net)
    before = [layer.trainable for layer in layers]
    try:
        for layer in layers:
            layer.trainable = stage == STAGE1
        yield
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.trainable = flag


class _Plan(NamedTuple):
    """Where each variable of a stage's view of the network sits in the shared
    state: ``trained`` lists the indices (into ``TrainState.trainable``) of the
    variables the stage trains, in the order of ``net.trainable_variables`` under
    the stage's flags; ``non_trainable`` gives, for each of the stage's
    ``net.non_trainable_variables``, ``(from_trainable, index)``."""

    trained: list[int]
    non_trainable: list[tuple[bool, int]]


def _stage1_variables(net: keras.Model) -> tuple[list, list]:
    """(trainable, non-trainable) variables of ``net`` as stage 1 sees them: the
    layout of the shared state."""
    with stage_flags(net, STAGE1):
        return list(net.trainable_variables), list(net.non_trainable_variables)


def _plan(net: keras.Model, t_vars: list, n_vars: list) -> _Plan:
    """Under the layers' current ``trainable`` flags, where each of ``net``'s
    trainable and non-trainable variables sits in the reference lists ``t_vars``
    (the variables whose values a step's ``trainable`` list holds) and ``n_vars``
    (those of its ``non_trainable`` list)."""
    t_index = {id(v): i for i, v in enumerate(t_vars)}
    n_index = {id(v): i for i, v in enumerate(n_vars)}
    trained = [t_index[id(v)] for v in net.trainable_variables]
    held = [
        (True, t_index[id(v)]) if id(v) in t_index else (False, n_index[id(v)])
        for v in net.non_trainable_variables
    ]
    return _Plan(trained, held)


def _check_optimizer(net: keras.Model, optimizer) -> None:
    """The optimizer must be built on the stage-1 trainable variables (the shared
    state's layout); build it on them when it is not built yet."""
    trainable, _ = _stage1_variables(net)
    if not optimizer.built:
        optimizer.build(trainable)
        return
    # What stateless_apply pairs the given values with (no public accessor).
    built_on = [id(v) for v in optimizer._trainable_variables]
    if built_on != [id(v) for v in trainable]:
        raise ValueError(
            "the optimizer must be built on the network's stage-1 trainable "
            "variables (net.trainable_variables with the backbone and f_head "
            f"trainable): it tracks {len(built_on)} variables, the network has "
            f"{len(trainable)}"
        )


def train_state(net: keras.Model, optimizer) -> TrainState:
    """The current values of the network's and the optimizer's variables, as a
    step takes them (builds the optimizer on the stage-1 trainable variables if
    needed).

    The arrays are copies: a step donates its inputs to XLA, which would otherwise
    delete the buffers the Keras variables still hold."""
    import jax.numpy as jnp

    _check_optimizer(net, optimizer)
    trainable, non_trainable = _stage1_variables(net)

    def values(variables):
        return [jnp.array(v.value, copy=True) for v in variables]

    return TrainState(
        values(trainable), values(non_trainable), values(optimizer.variables)
    )


def assign_state(
    net: keras.Model, optimizer, trainable, non_trainable, optimizer_vars
) -> None:
    """Write a step's state back into the Keras variables of ``net`` and
    ``optimizer`` (to save weights or evaluate the network).

    The variables get copies, so the state can still be passed to the next step,
    which donates (deletes) the arrays it is given."""
    import jax.numpy as jnp

    variables, held = _stage1_variables(net)
    groups = (
        (variables, trainable),
        (held, non_trainable),
        (optimizer.variables, optimizer_vars),
    )
    for targets, values in groups:
        if len(targets) != len(values):
            raise ValueError(
                f"assign_state: {len(values)} values for {len(targets)} variables"
            )
        for variable, value in zip(targets, values, strict=True):
            variable.assign(jnp.array(value, copy=True))


def make_train_step(
    net: keras.Model,
    *,
    attribute_names: list[str],
    variant: str,
    loss_kwargs: dict,
    optimizer,
    stage: int = STAGE1,
    weight_decay: float = 0.0,
    jit: bool = True,
) -> Callable:
    """The train step of one stage as a stateless function.

    Args:
        net: the functional network of :func:`anet_tf.model.anet.build_anet`.
        attribute_names: the attributes of its branches, in order (empty for the
            baseline), as ``ANetTrainer`` gets them.
        variant: baseline | van | anet.
        loss_kwargs: keyword arguments of :func:`anet_tf.losses.compute_losses`
            (:func:`anet_tf.losses.loss_kwargs_from_config`).
        optimizer: a Keras optimizer; built here on the stage-1 trainable variables
            if it is not yet. The same optimizer serves both stages.
        stage: 1 (L, eq. 10) or 2 (L', eq. 13; backbone and f head frozen).
        weight_decay: coupled L2 decay, ``weight_decay * w`` added to the gradient
            of every trained variable (``ANetTrainer``'s ``weight_decay``;
            ``train.weight_decay_mode: coupled``). Decoupled decay belongs to the
            optimizer.
        jit: compile with ``jax.jit``, donating the state (the caller must use the
            returned state, never the arrays it passed in); False runs it eagerly.

    Returns:
        ``step(trainable, non_trainable, optimizer_vars, images, targets) ->
        (terms, trainable, non_trainable, optimizer_vars)``: the state as in
        :class:`TrainState` (:func:`train_state` gives the first one), ``images``
        ``[B, H, W, 3]`` float32, ``targets`` the dict ``compute_losses`` reads
        (``pid``, ``attributes``, ``pattern``), and ``terms`` the loss terms of
        this stage, computed with the weights before the update (float32 scalars,
        the keys of :func:`anet_tf.losses.loss_term_names`).
    """
    import jax

    _check_backend("make_train_step")
    if not weight_decay >= 0:
        raise ValueError(
            f"weight_decay must be >= 0. Received: weight_decay={weight_decay}"
        )
    _check_optimizer(net, optimizer)
    t_vars, n_vars = _stage1_variables(net)
    with stage_flags(net, stage):
        trains_something = bool(net.trainable_variables)
    if not trains_something:
        raise ValueError(
            f"stage {stage} of variant {variant!r} trains no variable (it freezes the "
            f"backbone and the f head)"
        )
    terms_of = _terms_function(net, attribute_names, variant, stage, loss_kwargs)
    decays = [float(weight_decay)] * len(t_vars)

    def step(trainable, non_trainable, optimizer_vars, images, targets):
        with stage_flags(net, stage):
            terms, grads, non_trainable = _terms_and_gradients(
                net, optimizer, t_vars, n_vars, trainable, non_trainable,
                optimizer_vars, images, targets, terms_of,
            )
        grads = _with_decay(optimizer, optimizer_vars, grads, trainable, decays)
        trainable, optimizer_vars = _apply(
            optimizer, optimizer_vars, t_vars, n_vars, trainable, non_trainable, grads
        )
        return terms, trainable, non_trainable, optimizer_vars

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1, 2))


def fit_train_step(trainer, state, data):
    """``ANetTrainer.train_step`` on the JAX backend: the step Keras' ``fit``
    compiles and calls with ``state = (trainable, non_trainable, optimizer,
    metrics variables)`` of the trainer, returning ``(logs, state)``.

    The same loss terms, coupled weight decay (with FastReID's norm / bias groups),
    ``bias_lr_factor`` and ``freeze_iters`` as the TensorFlow ``train_step``, on the
    trainer's current stage (``set_stage`` has set the layers' flags, so in stage 2
    the backbone and ``f_head`` are among the non-trainable variables Keras passes
    in). The optimizer was built on the stage-1 variables (as under TensorFlow);
    the frozen ones get no gradient and are left alone.

    With a ``keras.distribution.DataParallel`` distribution the step is one
    computation over the global batch (batch-hard mining over all of it), where
    TensorFlow's MirroredStrategy mines each replica's slice.
    """
    import jax

    from anet_tf.training.stages import STAGE1

    trainable, non_trainable, optimizer_vars, metrics_vars = state
    images, targets = data
    net, optimizer = trainer.net, trainer.optimizer
    t_vars = list(trainer.trainable_variables)
    n_vars = list(trainer.non_trainable_variables)
    terms_of = _terms_function(
        net, trainer.attribute_names, trainer.variant, trainer.stage, trainer.loss_kwargs
    )
    decays = trainer._decays(t_vars)
    factors = trainer._lr_factors(t_vars)

    def gradients(frozen: bool, dense: bool = True):
        def run(_):
            backbone = net.get_layer("backbone")
            held = {id(v) for v in backbone.variables} if frozen else set()
            flag = backbone.trainable
            backbone.trainable = not frozen and flag
            try:
                terms, grads, new_held = _terms_and_gradients(
                    net, optimizer, t_vars, n_vars, trainable, non_trainable,
                    optimizer_vars, images, targets, terms_of,
                )
            finally:
                backbone.trainable = flag
            grads = _with_decay(optimizer, optimizer_vars, grads, trainable, decays)
            grads = [
                g if g is None or f == 1.0 else g * f
                for g, f in zip(grads, factors, strict=True)
            ]
            # Held variables get a zero update; under freeze_iters every variable
            # a gradient (both branches of the condition return one structure).
            grads = [
                keras.ops.zeros_like(w) if (g is None and dense) or id(v) in held else g
                for g, w, v in zip(grads, trainable, t_vars, strict=True)
            ]
            return terms, grads, new_held

        return run

    if trainer.freeze_iters and trainer.stage == STAGE1:
        iterations = optimizer_vars[_index_of(optimizer.variables, optimizer.iterations)]
        terms, grads, non_trainable = jax.lax.cond(
            iterations < trainer.freeze_iters, gradients(True), gradients(False), None
        )
    else:
        # As under TensorFlow: a variable the loss does not reach keeps None.
        terms, grads, non_trainable = gradients(False, dense=False)(None)
    trainable, optimizer_vars = _apply(
        optimizer, optimizer_vars, t_vars, n_vars, trainable, non_trainable, grads
    )
    mapping = list(zip(trainer.metrics_variables, metrics_vars, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        logs = trainer._update_trackers(terms)
    metrics_vars = [
        value if scope.get_current_value(v) is None else scope.get_current_value(v)
        for v, value in mapping
    ]
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def _check_backend(what: str) -> None:
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"{what} needs the JAX backend (KERAS_BACKEND=jax); Keras runs "
            f"{keras.backend.backend()!r}"
        )


def _index_of(variables, variable) -> int:
    for i, v in enumerate(variables):
        if v is variable:
            return i
    raise ValueError(f"{variable.path} is not among the given variables")


def _terms_function(net, attribute_names, variant, stage, loss_kwargs) -> Callable:
    """``outputs -> loss terms`` of a stage (:func:`anet_tf.losses.compute_losses`)."""
    attribute_names = list(attribute_names)
    loss_kwargs = dict(loss_kwargs)

    def terms_of(outputs, targets):
        return L.compute_losses(
            outputs,
            targets,
            attribute_names=attribute_names,
            variant=variant,
            stage=stage,
            **loss_kwargs,
        )

    return terms_of


def _terms_and_gradients(
    net, optimizer, t_vars, n_vars, trainable, non_trainable, optimizer_vars,
    images, targets, terms_of,
):
    """Loss terms and gradients of one batch under the layers' current flags.

    Returns ``(terms, grads, non_trainable)``: ``grads`` has one entry per
    variable of ``t_vars`` (None for those the flags freeze), ``non_trainable``
    the values of ``n_vars`` after the forward pass (BatchNorm statistics of the
    layers that train)."""
    import jax

    plan = _plan(net, t_vars, n_vars)

    def loss_fn(trained):
        held = [trainable[i] if t else non_trainable[i] for t, i in plan.non_trainable]
        outputs, held = net.stateless_call(trained, held, images, training=True)
        terms = terms_of(outputs, targets)
        loss = _scaled(optimizer, optimizer_vars, keras.ops.cast(terms["total"], "float32"))
        return loss, (terms, held)

    (_, (terms, held)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        [trainable[i] for i in plan.trained]
    )
    updated = list(non_trainable)
    for (from_trainable, i), value in zip(plan.non_trainable, held, strict=True):
        if not from_trainable:  # a frozen weight is not state that a call changes
            updated[i] = value
    full = [None] * len(trainable)
    for i, grad in zip(plan.trained, grads, strict=True):
        full[i] = grad
    return terms, full, updated


def _with_decay(optimizer, optimizer_vars, grads, trainable, decays) -> list:
    """``g + decay * w`` per variable (coupled L2, in the loss-scaled units of the
    gradients); a variable without a gradient or with no decay is left alone."""
    scaled = {d: _scaled(optimizer, optimizer_vars, d) for d in set(decays) if d}
    return [
        g if g is None or not d else g + scaled[d] * w
        for g, w, d in zip(grads, trainable, decays, strict=True)
    ]


def _apply(optimizer, optimizer_vars, t_vars, n_vars, trainable, non_trainable, grads):
    """``optimizer.stateless_apply`` over the variables the optimizer was built on
    (the stage-1 trainable ones): the values of those a stage freezes come from
    ``non_trainable`` and get no gradient, so the optimizer leaves them (and their
    moments) alone. Returns the new ``trainable`` values and optimizer state."""
    t_index = {id(v): i for i, v in enumerate(t_vars)}
    n_index = {id(v): i for i, v in enumerate(n_vars)}
    values, full = [], []
    for v in optimizer._trainable_variables:  # what stateless_apply pairs with
        if id(v) in t_index:
            values.append(trainable[t_index[id(v)]])
            full.append(grads[t_index[id(v)]])
        else:
            values.append(non_trainable[n_index[id(v)]])
            full.append(None)
    with warnings.catch_warnings():
        # Frozen variables have no gradient on purpose; Keras warns about each.
        warnings.filterwarnings("ignore", message="Gradients do not exist")
        values, optimizer_vars = optimizer.stateless_apply(optimizer_vars, full, values)
    trainable = list(trainable)
    for v, value in zip(optimizer._trainable_variables, values, strict=True):
        if id(v) in t_index:
            trainable[t_index[id(v)]] = value
    return trainable, list(optimizer_vars)


def _scaled(optimizer, optimizer_vars, value):
    """``value`` times the optimizer's current loss scale (1 without loss
    scaling), read from ``optimizer_vars`` rather than the Keras variables."""
    mapping = list(zip(optimizer.variables, optimizer_vars, strict=True))
    with keras.StatelessScope(state_mapping=mapping):
        return optimizer.scale_loss(value)
