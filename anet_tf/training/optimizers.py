"""The optimizer of a run, built from ``train`` without importing TensorFlow, so the
TensorFlow trainer (:mod:`anet_tf.training.trainer`) and the JAX train step
(:mod:`anet_tf.training.jax_step`, ``benchmarks/train_throughput_jax.py``) build the
same one."""

from __future__ import annotations

import keras


def make_optimizer(train_cfg, mixed_precision: bool = False):
    """Amsgrad (section 4.2) or Adam/SGD.

    With ``train.weight_decay_mode: decoupled`` the optimizer applies Keras'
    decoupled ``weight_decay``; with ``coupled`` it has none and the trainer adds
    the decay to the gradients (see :func:`coupled_weight_decay`).

    The learning rate is a variable set each epoch by the schedule callback, so it
    can follow the milestones counted over both stages.
    """
    decoupled = (
        train_cfg.weight_decay if train_cfg.weight_decay_mode == "decoupled" else 0.0
    )
    kwargs = dict(learning_rate=train_cfg.lr, weight_decay=decoupled or None)
    if train_cfg.optimizer == "amsgrad":
        opt = keras.optimizers.Adam(amsgrad=True, **kwargs)
    elif train_cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(**kwargs)
    else:
        opt = keras.optimizers.SGD(momentum=0.9, nesterov=train_cfg.nesterov, **kwargs)
    if mixed_precision:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def coupled_weight_decay(train_cfg) -> float:
    """The ``weight_decay`` argument of :class:`ANetTrainer`: ``train.weight_decay``
    in coupled mode, 0 in decoupled mode (the optimizer applies it)."""
    return train_cfg.weight_decay if train_cfg.weight_decay_mode == "coupled" else 0.0
