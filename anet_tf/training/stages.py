"""The two training stages and what stage 2 freezes, in one place for the
TensorFlow trainer (:class:`anet_tf.training.trainer.ANetTrainer`) and the JAX step
(:mod:`anet_tf.training.jax_step`). Imports no TensorFlow.

Stage 2 freezes the backbone (all operations before f) and the f head: L' (eq. 13)
has no term on f (the AC terms see f under stop-gradient), so the f head would get
no gradient anyway; a frozen BatchNormalization runs in inference mode in Keras 3.
"""

from __future__ import annotations

import keras

STAGE1 = 1
STAGE2 = 2


def check_stage(stage: int) -> None:
    if stage not in (STAGE1, STAGE2):
        raise ValueError(f"stage must be 1 or 2. Received: stage={stage}")


def frozen_in_stage2(net: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``net`` that stage 2 freezes: the backbone, and the f head
    where the network has one."""
    layers = [net.get_layer("backbone")]
    try:
        layers.append(net.get_layer("f_head"))
    except ValueError:
        pass
    return layers
