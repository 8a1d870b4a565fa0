"""The Keras ResNet-50 loader: Keras' ImageNet ResNet-50 (no top) into our
``resnet50`` backbone, conv biases and the "caffe" input convention folded in."""

from __future__ import annotations

import os

import keras
import numpy as np

from anet_tf.model.backbone import NonLocal
from anet_tf.model.layers import BN_EPSILON
from anet_tf.model.weights.common import IMAGENET_MEAN_RGB
from anet_tf.model.weights.common import IMAGENET_STD_RGB
from anet_tf.model.weights.common import WeightsError

# keras.applications ResNet50: BatchNorm epsilon, and its "caffe" input convention
# (BGR, 0-255, minus this per-channel mean in BGR order).
_KERAS_BN_EPSILON = 1.001e-5
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def _keras_resnet50_layer(name: str) -> str:
    """Our layer name for a keras.applications ResNet50 layer with weights."""
    if name in ("conv1_conv", "conv1_bn"):
        return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[name]
    # conv{S}_block{B}_{K}_{conv|bn}: stage S-1, block B-1; K=0 is the shortcut.
    stage, block, k, kind = name.split("_")
    prefix = f"layer{int(stage[4:]) - 1}_{int(block[5:]) - 1}"
    if k == "0":
        return f"{prefix}_downsample_{0 if kind == 'conv' else 1}"
    return f"{prefix}_{kind}{k}"


# long: 26 lines of docstring; 55 lines of code.
def load_keras_resnet50_imagenet(
    backbone_model: keras.Model, path: str, *, fold_caffe_preprocessing: bool = True
) -> None:
    """Load Keras' ImageNet ResNet-50 (no top) into our ``resnet50`` backbone.

    The file is loaded into ``keras.applications.ResNet50(weights=None,
    include_top=False)`` (both the legacy ``.h5`` release and a ``.weights.h5``
    saved from that model work) and copied layer by layer, by name. Keras' ResNet50
    convolutions have biases and its BatchNorm epsilon is 1.001e-5; ours are
    bias-free with epsilon 1e-5, so each conv bias b is folded into the next
    BatchNorm (moving_mean - b) and the variance is shifted by the epsilon
    difference: exact in inference.

    Args:
        backbone_model: ``build_backbone("resnet50", base_width=64, ...)``.
        path: the weights file.
        fold_caffe_preprocessing: Keras' weights expect "caffe" inputs (BGR, 0-255,
            minus the mean pixel) while our pipeline feeds RGB ``(p/255 - mean)/std``.
            When true, the first convolution is rewritten to take our inputs: the
            kernel is reordered RGB<-BGR and scaled by 255*std and the mean offset
            goes into bn1. The result equals the Keras model on caffe inputs except
            within 3 pixels of the border, where zero padding now means the ImageNet
            mean pixel instead of the caffe mean pixel (< 0.5 grey level apart).
            False copies the weights unchanged (then feed caffe inputs).

    Raises:
        WeightsError: the backbone does not have the ResNet-50 layout, or weights are
            left unassigned.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Keras ResNet-50 weights not found: {path}")
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    reference.load_weights(path)
    # Non-local blocks have no ImageNet weights: they keep their initialisation.
    ours = {
        layer.name: layer
        for layer in backbone_model.layers
        if layer.weights and not isinstance(layer, NonLocal)
    }
    assigned: set[str] = set()
    problems = []
    pending_bias = {}
    for layer in reference.layers:
        if not layer.weights:
            continue
        target = ours.get(_keras_resnet50_layer(layer.name))
        if target is None or type(target) is not type(layer):
            problems.append(f"{layer.name} -> {_keras_resnet50_layer(layer.name)}")
            continue
        weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = weights
            if layer.name == "conv1_conv" and fold_caffe_preprocessing:
                kernel, bias = _fold_caffe_preprocessing(kernel, bias)
            weights = [kernel]
            pending_bias[target.name] = bias
        else:
            conv = target.name.replace("downsample_1", "downsample_0")
            conv = {"bn1": "conv1"}.get(conv, conv.replace("_bn", "_conv"))
            gamma, beta, mean, var = weights
            mean = mean - pending_bias.pop(conv)
            var = var + _KERAS_BN_EPSILON - BN_EPSILON
            weights = [gamma, beta, mean, var]
        shapes = [tuple(v.shape) for v in target.weights]
        if shapes != [w.shape for w in weights]:
            problems.append(
                f"{layer.name} {[w.shape for w in weights]} -> {target.name} {shapes}"
            )
            continue
        target.set_weights([w.astype(np.float32) for w in weights])
        assigned.add(target.name)
    unassigned = sorted(set(ours) - assigned)
    if problems or unassigned:
        raise WeightsError(
            f"Keras ResNet-50 weights do not fit backbone {backbone_model.name!r} "
            f"(it must be resnet50 with base_width=64). Not transferable: "
            f"{'; '.join(problems) or 'none'}. Left unassigned: "
            f"{', '.join(unassigned) or 'none'}"
        )


def _fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray):
    """Rewrite conv1 (kernel HWIO over BGR caffe inputs) for RGB normalised inputs.

    caffe(x)[bgr c'] = 255 (std_c x_c + mean_c) - caffe_mean_c with c' = 2 - c, so
    W' = W[:, :, ::-1, :] * 255 std and b' = b + sum W[:, :, ::-1, :] (255 mean -
    caffe_mean), summed over kernel positions and input channels.
    """
    rgb = kernel[:, :, ::-1, :]
    offset = 255.0 * IMAGENET_MEAN_RGB - _CAFFE_MEAN_BGR[::-1]
    new_kernel = rgb * (255.0 * IMAGENET_STD_RGB)[None, None, :, None]
    new_bias = bias + np.einsum("hwco,c->o", rgb, offset)
    return new_kernel, new_bias
