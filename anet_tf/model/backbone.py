"""ResNet backbones (section 3.1, 4.2): image [B, H, W, 3] -> F [B, h, w, c].

All backbones are channels-last functional ``keras.Model`` objects named
``"backbone"`` (so training stage 2 can freeze them with
``model.get_layer("backbone").trainable = False``), without the final pooling layer
(section 4.2). Inputs are float32 images already normalised with the ImageNet
mean/std (RGB).

Layer names follow the PyTorch state-dict keys with ``.`` replaced by ``_``
(``layer1_0_conv1`` <-> ``layer1.0.conv1``), which is what the checkpoint converter in
:mod:`anet_tf.model.weights` relies on.

Two block layouts exist and both are exact ports of their pretrained sources:

* torch layout (``resnet50_ibn_a``, ``resnet18_ibn_a``, ``resnet18``): the official
  IBN-Net / torchvision code. A bottleneck strides in its 3x3 convolution ("ResNet
  v1.5") and stride-2 3x3 convolutions pad one pixel on every side as PyTorch does
  (explicit ``ZeroPadding2D`` + ``valid``; Keras ``same`` would pad only right/bottom).
* Keras layout (``resnet50``): ``keras.applications.ResNet50``, which strides in the
  first 1x1 convolution of a bottleneck, so Keras' own ImageNet weights load exactly
  (:func:`anet_tf.model.weights.load_keras_resnet50_imagenet`). Its convolutions
  carry biases in Keras; ours do not, the loader folds each bias into the following
  BatchNorm's moving mean (exact).

Every convolution is bias-free and followed by BatchNorm with epsilon 1e-5 and
momentum 0.9 (PyTorch's defaults). IBN-a replaces the first normalisation of every
block in stages 1-3 with :class:`~anet_tf.model.layers.IBN`; stage 4 and the stem
keep BatchNorm, as in the official ``resnet50_ibn_a`` / ``resnet18_ibn_a``.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from anet_tf.model.layers import BN_EPSILON
from anet_tf.model.layers import BN_MOMENTUM
from anet_tf.model.layers import IBN


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )


def _norm1(ibn: bool, name: str) -> keras.layers.Layer:
    return IBN(ratio=0.5, name=name) if ibn else _bn(name)


def _conv3x3(x, filters: int, stride: int, name: str):
    """3x3 convolution padded like PyTorch's ``padding=1`` for any stride."""
    if stride == 1:
        return keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=name
        )(x)
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=name)(x)


def _shortcut(x, filters: int, stride: int, prefix: str):
    if stride == 1 and x.shape[-1] == filters:
        return x
    x = keras.layers.Conv2D(
        filters, 1, strides=stride, use_bias=False, name=f"{prefix}_downsample_0"
    )(x)
    return _bn(f"{prefix}_downsample_1")(x)


def _basic_block(x, planes: int, stride: int, ibn: bool, prefix: str, _stride_in_1x1):
    shortcut = _shortcut(x, planes, stride, prefix)
    y = _conv3x3(x, planes, stride, f"{prefix}_conv1")
    y = _norm1(ibn, f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv3x3(y, planes, 1, f"{prefix}_conv2")
    y = _bn(f"{prefix}_bn2")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def _bottleneck(x, planes: int, stride: int, ibn: bool, prefix: str, stride_in_1x1):
    out = planes * 4
    stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
    shortcut = _shortcut(x, out, stride, prefix)
    y = keras.layers.Conv2D(
        planes, 1, strides=stride_1x1, use_bias=False, name=f"{prefix}_conv1"
    )(x)
    y = _norm1(ibn, f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv3x3(y, planes, stride_3x3, f"{prefix}_conv2")
    y = _bn(f"{prefix}_bn2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    y = keras.layers.Conv2D(out, 1, use_bias=False, name=f"{prefix}_conv3")(y)
    y = _bn(f"{prefix}_bn3")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def build_resnet(
    *,
    depth: int,
    ibn: bool,
    base_width: int = 64,
    last_stride: int = 1,
    stride_in_1x1: bool = False,
    input_shape: tuple = (None, None, 3),
) -> keras.Model:
    """A ResNet-18 or ResNet-50 feature extractor, optionally with IBN-a.

    Args:
        depth: 18 (basic blocks [2, 2, 2, 2]) or 50 (bottlenecks [3, 4, 6, 3]).
        ibn: IBN-a in the first normalisation of every block of stages 1-3.
        base_width: channels of the stem and of stage 1 (64 = the standard ResNet);
            stage k has ``base_width * 2**(k-1)`` planes.
        last_stride: stride of stage 4 (1 doubles the resolution of F: 1/16 of the
            input instead of 1/32).
        stride_in_1x1: bottlenecks stride in the first 1x1 convolution (Keras
            layout) instead of the 3x3 (torch layout).
        input_shape: (H, W, 3); a fixed size gives static shapes (summary, TFLite).

    Returns:
        ``keras.Model`` named ``"backbone"``: [B, H, W, 3] -> F [B, h, w, c] with
        c = 8 * base_width (ResNet-18) or 32 * base_width (ResNet-50).
    """
    blocks = {18: (_basic_block, (2, 2, 2, 2)), 50: (_bottleneck, (3, 4, 6, 3))}
    if depth not in blocks:
        raise ValueError(f"depth must be 18 or 50. Received: depth={depth}")
    if base_width < 2:
        raise ValueError(f"base_width must be >= 2. Received: base_width={base_width}")
    if last_stride not in (1, 2):
        raise ValueError(
            f"last_stride must be 1 or 2. Received: last_stride={last_stride}"
        )
    block, repeats = blocks[depth]

    # === Functional Model ===
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(base_width, 7, strides=2, use_bias=False, name="conv1")(x)
    x = _bn("bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here: the input is post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (n, stride) in enumerate(
        zip(repeats, (1, 2, 2, last_stride), strict=True), start=1
    ):
        planes = base_width * 2 ** (stage - 1)
        for i in range(n):
            x = block(
                x,
                planes,
                stride if i == 0 else 1,
                ibn and stage < 4,
                f"layer{stage}_{i}",
                stride_in_1x1,
            )
    return keras.Model(inputs, x, name="backbone")


def resnet50_ibn_a(*, base_width=64, last_stride=1, input_shape=(None, None, 3)):
    """ResNet-50-IBN-a (torch layout), the paper's backbone (section 4.2)."""
    return build_resnet(
        depth=50,
        ibn=True,
        base_width=base_width,
        last_stride=last_stride,
        input_shape=input_shape,
    )


def resnet50(*, base_width=64, last_stride=1, input_shape=(None, None, 3)):
    """Plain ResNet-50 in the Keras layout (stride in the 1x1), for Keras' weights."""
    return build_resnet(
        depth=50,
        ibn=False,
        base_width=base_width,
        last_stride=last_stride,
        stride_in_1x1=True,
        input_shape=input_shape,
    )


def resnet18_ibn_a(*, base_width=64, last_stride=1, input_shape=(None, None, 3)):
    """ResNet-18-IBN-a (torch layout), the CPU default with a reduced base_width."""
    return build_resnet(
        depth=18,
        ibn=True,
        base_width=base_width,
        last_stride=last_stride,
        input_shape=input_shape,
    )


def resnet18(*, base_width=64, last_stride=1, input_shape=(None, None, 3)):
    """Plain ResNet-18 (torch layout)."""
    return build_resnet(
        depth=18,
        ibn=False,
        base_width=base_width,
        last_stride=last_stride,
        input_shape=input_shape,
    )


BACKBONES: dict[str, Callable[..., keras.Model]] = {
    "resnet50_ibn_a": resnet50_ibn_a,
    "resnet50": resnet50,
    "resnet18_ibn_a": resnet18_ibn_a,
    "resnet18": resnet18,
}


def build_backbone(
    name: str, *, base_width=64, last_stride=1, input_shape=(None, None, 3)
) -> keras.Model:
    """Build a backbone by name.

    Raises:
        KeyError: unknown name; the message lists the valid ones.
    """
    if name not in BACKBONES:
        raise KeyError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}"
        )
    return BACKBONES[name](
        base_width=base_width, last_stride=last_stride, input_shape=input_shape
    )
