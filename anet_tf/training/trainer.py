"""The training wrapper: one definition of the ANet train step, for every stage.

:class:`ANetTrainer` is a ``keras.Model`` subclass that holds the functional ANet
network (``net``) and implements ``train_step`` / ``test_step`` the Keras 3 way: a
``tf.GradientTape``, the loss terms of the current stage from :mod:`anet_tf.losses`,
``optimizer.apply``, and one ``keras.metrics.Mean`` per term so the progress bar,
the CSV log and TensorBoard show each term separately.

The same ``train_step`` is driven by ``model.fit`` (one device, MirroredStrategy) and
by :func:`anet_tf.training.loop.custom_fit` under MultiWorkerMirroredStrategy, where
Keras' ``fit`` does not work (keras-team/keras#20585).

Distribution: every loss function returns values averaged over the *local*
(per-replica) batch, and batch-hard mining sees the per-replica batch, as FastReID does
per GPU; the input pipeline keeps the P x K layout within each replica's slice.
Gradients are summed across replicas, so the step divides the total by the number of
replicas: with equal per-replica batches this is exactly the global-batch average that
``tf.nn.compute_average_loss`` gives. Coupled weight decay (``weight_decay``) is added
to every replica's gradient divided by the number of replicas too, so the sum adds it
once.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from anet_tf import losses as L
from anet_tf.model.layers import InstanceNormalization
from anet_tf.training.stages import STAGE1
from anet_tf.training.stages import STAGE2
from anet_tf.training.stages import check_stage
from anet_tf.training.stages import frozen_in_stage2


def term_names(variant: str, attribute_names: list[str]) -> list[str]:
    """Every loss term a variant reports in either stage, ``total`` first (the fixed
    columns of the CSV log and the metric trackers)."""
    names = ["total"]
    for stage in (STAGE1, STAGE2):
        for name in L.loss_term_names(attribute_names, variant, stage):
            if name not in names:
                names.append(name)
    return names


class ANetTrainer(keras.Model):
    """Keras model that trains a functional ANet network through both stages.

    Args:
        net: the functional ANet network (``anet_tf.model.build_anet``); its
            backbone is the sub-layer named ``"backbone"``.
        attribute_names: the attributes of the n branches, in order.
        variant: baseline | van | anet.
        loss_kwargs: keyword arguments for :func:`anet_tf.losses.compute_losses`
            (see ``loss_kwargs_from_config``).
        weight_decay: coupled L2 weight decay: ``weight_decay * w`` is added to the
            gradient of every trained variable before ``optimizer.apply`` (PyTorch's
            ``weight_decay``; ``train.weight_decay_mode: coupled``). 0 = none, e.g.
            when the optimizer applies Keras' decoupled decay instead.
        weight_decay_norm, weight_decay_bias: coupled decay of normalisation-layer
            variables and of biases (None = ``weight_decay``), FastReID's
            ``WEIGHT_DECAY_NORM`` / ``WEIGHT_DECAY_BIAS``.
        bias_lr_factor: the bias' gradient and decay are multiplied by it, which
            for SGD is its lr times the factor (FastReID's ``BIAS_LR_FACTOR``).
        freeze_iters: FastReID's ``FREEZE_ITERS``: for the first ``freeze_iters``
            steps of stage 1 (counted by ``optimizer.iterations``, so a resumed run
            continues the count) the backbone runs in inference mode (its
            BatchNorms use and keep their moving statistics) and its variables get
            a zero update (no gradient, no weight decay), while the heads train.
            FastReID drops the backbone's gradients for those steps; with SGD the
            two are the same, since the momentum of a never-updated variable stays
            0. (With Adam, a zero gradient keeps the moments at 0 too, but Keras
            counts bias-correction steps for all variables together.)
    """

    def __init__(
        self,
        net,
        attribute_names,
        variant,
        loss_kwargs,
        weight_decay=0.0,
        freeze_iters=0,
        weight_decay_norm=None,
        weight_decay_bias=None,
        bias_lr_factor=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not weight_decay >= 0:
            raise ValueError(
                f"weight_decay must be >= 0. Received: weight_decay={weight_decay}"
            )
        if freeze_iters < 0:
            raise ValueError(
                f"freeze_iters must be >= 0. Received: freeze_iters={freeze_iters}"
            )
        self.freeze_iters = int(freeze_iters)
        self.weight_decay_norm = weight_decay_norm
        self.weight_decay_bias = weight_decay_bias
        self.bias_lr_factor = float(bias_lr_factor)
        self.net = net
        self.attribute_names = list(attribute_names)
        self.variant = variant
        self.loss_kwargs = dict(loss_kwargs)
        self.weight_decay = float(weight_decay)
        self.stage = STAGE1
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in term_names(variant, self.attribute_names)
        }

    # Keras resets these at the start of each epoch and aggregates them across
    # replicas; one tracker per loss term.
    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.net(images, training=training)

    def set_stage(self, stage: int) -> None:
        """Switch to stage 1 (L, eq. 10) or stage 2 (L', eq. 13).

        Stage 2 freezes the backbone (all operations before f) and the f head, which
        L' does not train; a frozen BatchNormalization runs in inference mode in
        Keras 3. The caller must
        ``compile()`` again afterwards so the traced step sees the new trainable set.
        """
        check_stage(stage)
        self.stage = stage
        for layer in frozen_in_stage2(self.net):
            layer.trainable = stage == STAGE1

    def compute_terms(self, images, targets, training: bool):
        outputs = self.net(images, training=training)
        return L.compute_losses(
            outputs,
            targets,
            attribute_names=self.attribute_names,
            variant=self.variant,
            stage=self.stage,
            **self.loss_kwargs,
        )

    def _update_trackers(self, terms):
        logs = {}
        for name, value in terms.items():
            tracker = self.trackers.get(name)
            if tracker is None:
                continue
            tracker.update_state(value)
            logs[name] = tracker.result()
        return logs

    def _gradients(self, images, targets, variables, replicas, loss_scaled, frozen,
                   dense=False):
        """(loss terms, gradients with coupled decay) of one step; ``frozen``: the
        backbone runs in inference mode and its gradients are zero; ``dense``: a
        variable the loss does not reach gets a zero gradient instead of None (both
        branches of a ``tf.cond`` must return tensors)."""
        backbone = self.net.get_layer("backbone") if frozen else None
        if backbone is not None:
            backbone.trainable = False  # at trace time: BatchNorm in inference mode
        try:
            with tf.GradientTape() as tape:
                terms = self.compute_terms(images, targets, training=True)
                total = tf.cast(terms["total"], tf.float32) / float(replicas)
                if loss_scaled:
                    total = self.optimizer.scale_loss(total)
            grads = tape.gradient(total, variables)
        finally:
            if backbone is not None:
                backbone.trainable = True
        decays = self._decays(variables)
        if any(decays):
            # In the units of these gradients: per replica (summed across replicas
            # by the optimizer) and multiplied by the loss scale (a power of 2, so
            # the optimizer's unscaling recovers weight_decay * w exactly).
            scaled = {}
            for d in set(decays):
                scaled[d] = d / replicas
                if loss_scaled:
                    scaled[d] = self.optimizer.scale_loss(scaled[d])
            grads = _add_weight_decay(grads, variables, [scaled[d] for d in decays])
        if self.bias_lr_factor != 1.0:
            grads = [
                g * f if g is not None and f != 1.0 else g
                for g, v, f in zip(grads, variables, self._lr_factors(variables), strict=True)
            ]
        if backbone is not None:
            held = {id(v) for v in backbone.variables}
            grads = [
                tf.zeros_like(v) if id(v) in held else g
                for g, v in zip(grads, variables, strict=True)
            ]
        if dense:
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                     for g, v in zip(grads, variables, strict=True)]
        return terms, grads

    def _decays(self, variables) -> list[float]:
        """The coupled weight decay of each variable: ``weight_decay``, or the
        norm / bias group's own value."""
        if self.weight_decay_norm is None and self.weight_decay_bias is None:
            return [self.weight_decay] * len(variables)
        norms, biases = variable_groups(self.net)
        norm = self.weight_decay if self.weight_decay_norm is None else self.weight_decay_norm
        bias = self.weight_decay if self.weight_decay_bias is None else self.weight_decay_bias
        return [
            norm if id(v) in norms else bias if id(v) in biases else self.weight_decay
            for v in variables
        ]

    def _lr_factors(self, variables) -> list[float]:
        """The gradient multiplier of each variable: ``bias_lr_factor`` for the
        biases (:func:`variable_groups`), 1 for the rest."""
        if self.bias_lr_factor == 1.0:
            return [1.0] * len(variables)
        biases = variable_groups(self.net)[1]
        return [self.bias_lr_factor if id(v) in biases else 1.0 for v in variables]

    def train_step(self, *args):
        """One step of the current stage. TensorFlow: ``train_step(data) -> logs``
        (below); JAX: Keras' stateless ``train_step(state, data) -> (logs,
        state)``, :func:`anet_tf.training.jax_step.fit_train_step`, with the same
        terms, decay, factors and ``freeze_iters``."""
        if keras.backend.backend() == "jax":
            from anet_tf.training.jax_step import fit_train_step

            return fit_train_step(self, *args)
        (data,) = args
        images, targets = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.net.trainable_variables
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        if self.freeze_iters and self.stage == STAGE1:
            terms, grads = tf.cond(
                self.optimizer.iterations < self.freeze_iters,
                lambda: self._gradients(
                    images, targets, variables, replicas, loss_scaled, True, dense=True
                ),
                lambda: self._gradients(
                    images, targets, variables, replicas, loss_scaled, False, dense=True
                ),
            )
        else:
            terms, grads = self._gradients(
                images, targets, variables, replicas, loss_scaled, False
            )
        if replicas > 1 and loss_scaled:
            grads = _poison_if_any_replica_overflowed(grads)
        self.optimizer.apply(grads, variables)
        return self._update_trackers(terms)

    def test_step(self, data):
        images, targets = data
        terms = self.compute_terms(images, targets, training=False)
        return self._update_trackers(terms)


def variable_groups(net) -> tuple[set[int], set[int]]:
    """(ids of the variables of normalisation layers, ids of the other biases) of
    ``net``: the parameter groups FastReID gives their own weight decay and lr."""
    norm_types = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization, InstanceNormalization)
    norms: set[int] = set()
    for layer in net._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, norm_types):
            norms.update(id(v) for v in layer.variables)
    biases = {
        id(v) for v in net.variables
        if id(v) not in norms and v.path.rsplit("/", 1)[-1] == "bias"
    }
    return norms, biases


def _add_weight_decay(grads, variables, decays):
    """``g + decay * w`` for each gradient and its variable's decay (a float or one
    per variable); a variable without a gradient (not reached by the loss) or with
    no decay is left alone, as PyTorch does."""
    if not isinstance(decays, (list, tuple)):
        decays = [decays] * len(variables)
    out = []
    for g, v, decay in zip(grads, variables, decays, strict=True):
        if g is not None and (not isinstance(decay, float) or decay):
            g = tf.convert_to_tensor(g)  # IndexedSlices -> dense
            g = g + tf.cast(decay, g.dtype) * tf.cast(v, g.dtype)
        out.append(g)
    return out


def _poison_if_any_replica_overflowed(grads):
    """Make a loss-scale overflow on any replica visible to every replica.

    Keras' LossScaleOptimizer checks the gradients for Inf/NaN before they are
    summed across replicas and acts on one replica's answer, so an overflow on
    another replica would be applied. Counting non-finite values across replicas and
    turning every gradient to NaN when there are any makes all replicas skip the step
    and lower the scale together.
    """
    bad = tf.add_n(
        [tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in grads if g is not None]
    )
    bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad)
    return [
        g if g is None else tf.where(bad > 0, tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype)), g)
        for g in grads
    ]


def lr_at_epoch(global_epoch: int, base_lr: float, milestones, gamma: float) -> float:
    """Piecewise-constant lr: ``base_lr * gamma ** (number of milestones <= epoch)``.

    ``global_epoch`` is 0-based and counts over both stages, so with the paper's
    milestones 60/120/150 the lr is 6e-4 for epochs 0-59, 6e-5 for 60-119, 6e-6 for
    120-149 and 6e-7 in stage 2 (epochs 150-209).
    """
    drops = sum(1 for m in milestones if global_epoch >= m)
    return base_lr * gamma**drops


def cosine_lr_at_epoch(
    global_epoch: int, base_lr: float, total_epochs: int, delay_epochs: int, lr_min: float
) -> float:
    """FastReID's delayed cosine schedule: ``base_lr`` for epochs
    ``0 .. delay_epochs - 1``, then ``lr_min + (base_lr - lr_min) * (1 + cos(pi * t /
    T)) / 2`` with ``t = global_epoch - delay_epochs`` and ``T = total_epochs -
    delay_epochs`` (PyTorch's ``CosineAnnealingLR`` stepped once per epoch after the
    delay); ``global_epoch`` is 0-based over both stages."""
    if global_epoch < delay_epochs:
        return base_lr
    span = max(total_epochs - delay_epochs, 1)
    t = min(global_epoch - delay_epochs, span)
    return lr_min + (base_lr - lr_min) * (1.0 + math.cos(math.pi * t / span)) / 2.0


def warmup_multiplier(iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """Linear warm-up factor of the lr at a 0-based iteration of the run: rises
    from ``warmup_factor`` to 1 over ``warmup_iters`` iterations, then 1 (FastReID's
    ``WarmupLR``, linear method)."""
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor * (1.0 - alpha) + alpha
