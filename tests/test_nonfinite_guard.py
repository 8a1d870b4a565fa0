"""The check before a checkpoint (finite weights, finite inference-mode outputs on a
probe batch) says which output and which layer failed, and why."""

from __future__ import annotations

import keras
import numpy as np

from anet_tf.model.backbone import NonLocal
from anet_tf.training.callbacks import first_non_finite_layer
from anet_tf.training.callbacks import unusable_weights


def _net(kernel_scale: float, nl_gamma: float = 1.0) -> keras.Model:
    """Two convolutions -> BatchNorm -> non-local block -> GAP, as the strong backbone
    stacks them; the BatchNorm keeps its initial moving statistics (mean 0, variance
    1), each convolution kernel is scaled by ``kernel_scale``."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="conv")(image)
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    nl = NonLocal(1, name="nl")
    x = nl(x)
    f = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    net = keras.Model(image, {"f": f, "x": x}, name="net")
    for name in ("conv", "conv2"):
        conv = net.get_layer(name)
        conv.kernel.assign(conv.kernel * kernel_scale)
    nl.W_1.gamma.assign(np.full(16, nl_gamma, "float32"))
    return net


def test_stale_moving_statistics_are_named_not_blamed_on_the_weights():
    # Conv outputs of |x| ~ 1e14 that BatchNorm's batch statistics normalise, but its
    # initial moving statistics (0, 1) pass through: y = theta (phi^T g) / N is then
    # ~1e42, beyond float32's 3.4e38.
    net = _net(kernel_scale=1e7)
    before = [keras.ops.convert_to_numpy(v).copy() for v in net.weights]
    problem = unusable_weights(net)
    assert problem is not None
    assert "output 'f'" in problem and "inference-mode probe batch" in problem
    assert "first at layer 'nl'" in problem
    assert "finite with batch statistics" in problem and "moving statistics" in problem
    assert "too large" not in problem
    # The training-mode probe moved no moving statistic.
    for v, b in zip(net.weights, before, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b, err_msg=v.path)


def test_weights_too_large_for_either_mode_are_called_that():
    # The second convolution's output (|x| ~ 1e40) is not finite before any BatchNorm.
    net = _net(kernel_scale=1e20)
    problem = unusable_weights(net)
    assert problem is not None and "output 'f'" in problem
    assert "first at layer 'conv2'" in problem and "too large to use" in problem


def test_usable_weights_pass_and_the_first_bad_layer_is_found_inside_a_nested_model():
    assert unusable_weights(_net(kernel_scale=1.0)) is None
    inner = _net(kernel_scale=1e7)
    image = keras.Input((8, 8, 3), name="outer_image")
    outer = keras.Model(
        image, keras.layers.Activation("linear", name="head")(inner(image)["f"])
    )
    probe = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    assert first_non_finite_layer(outer, probe) == "net/nl"
