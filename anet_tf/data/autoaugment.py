"""AutoAugment's ImageNet policy (Cubuk et al., CVPR 2019) in TensorFlow ops.

FastReID's strong baseline (``INPUT.AUTOAUG``, probability 0.1 in its SBS configs)
applies, to a decoded image before its resize, one of the 25 sub-policies of the
paper's ImageNet policy, chosen uniformly; each sub-policy is two operations, each
applied with its own probability at a fixed magnitude level 0..10. This module
does the same inside the tf.data map, on one image, with stateless random numbers
only: the result is a function of the image and its ``seed`` (see
:mod:`anet_tf.data.augment`), so a run stays reproducible and a resumed run draws
what the uninterrupted run drew.

Why not a library: Keras 3 (3.15) ships ``keras.layers.RandAugment`` and the single
operations (``Equalization``, ``AutoContrast``, ``Solarization``,
``RandomPosterization``, ...) but no AutoAugment; RandAugment is a different
method (N random operations at one global magnitude, no learned policy), and the
layers draw their randomness from a ``SeedGenerator`` (a variable, i.e. state
shared across the parallel map) rather than from a per-image stateless seed.
KerasCV and tensorflow-addons are unmaintained. So the operations are written
here, in plain TensorFlow.

Operations: the ImageNet policy uses ten: Posterize, Solarize, Invert,
AutoContrast, Equalize, Color, Contrast, Sharpness, Rotate and ShearX (not
Brightness, ShearY or the translations, which appear only in the CIFAR-10 and
SVHN policies). They follow PIL's ``ImageOps`` / ``ImageEnhance``, which FastReID
(via timm's ``auto_augment.py``) calls, on integer pixel values in [0, 255]:

* Posterize(bits): keep the ``bits`` most significant bits.
* Solarize(threshold): pixels >= threshold become 255 - pixel.
* Invert: 255 - pixel.
* AutoContrast: per channel, stretch [min, max] linearly to [0, 255] (PIL's
  lookup table, truncated; a constant channel is left alone).
* Equalize: per channel histogram equalisation with PIL's lookup table
  ``(step // 2 + pixels below) // step``, ``step = (N - count of the top value) //
  255``; a channel with one value, or step 0, is left alone.
* Color / Contrast / Sharpness(factor): PIL's blend ``degenerate + factor *
  (image - degenerate)``, clipped to [0, 255] and truncated, with the degenerate
  image the grey version (ITU-R 601 luma in PIL's fixed point), the rounded mean
  grey level, and the image smoothed by PIL's SMOOTH kernel ([[1, 1, 1], [1, 5, 1],
  [1, 1, 1]] / 13, border pixels kept).
* Rotate(degrees): counter-clockwise about the image centre; ShearX(s): the
  output pixel (x, y) samples the input at (x + s (y + 1/2), y). Both bilinear, the
  uncovered area filled with grey 128 (timm's fill colour); PIL's bicubic, which
  timm picks half of the time, is not offered by TensorFlow's
  ``ImageProjectiveTransformV3`` and is not used.

Magnitude levels map to values as FastReID's policy (timm's ``original``, which
follows the TensorFlow TPU reference implementation, with Posterize as the paper
states it) does, level L of 10:

* Posterize: int(L / 10 * 4) + 4 bits (4..8; 8 = unchanged).
* Solarize: threshold int(L / 10 * 256).
* Color, Contrast, Sharpness: factor L / 10 * 1.8 + 0.1 (0.1..1.9; 1 = unchanged).
* Rotate: L / 10 * 30 degrees; ShearX: L / 10 * 0.3; each with a random sign.

torchvision's ``AutoAugmentPolicy.IMAGENET`` has the same 25 sub-policies but maps
levels differently (e.g. Color level 0 is factor 1 +- 0, i.e. no change, where
FastReID's is 0.1, nearly grey); FastReID's mapping is the one its results were
obtained with, so it is the one used here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import tensorflow as tf

# Grey that rotation and shear fill the uncovered area with (timm's ``_FILL``).
FILL = 128.0
MAX_LEVEL = 10

# The ImageNet policy of the paper (its Appendix, Table 9): 25 sub-policies of two
# (operation, probability, magnitude level) each; levels of operations without a
# magnitude are ignored. Some sub-policies appear twice, as in the paper.
IMAGENET_POLICY: tuple[tuple[tuple[str, float, int], ...], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)


# ------------------------------------------------------------------- operations
#
# Each takes and returns float32 [H, W, 3] with integer values in [0, 255].


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Keep the ``bits`` most significant bits of every value (PIL posterize)."""
    if bits >= 8:
        return image
    step = float(2 ** (8 - bits))
    return tf.floor(image / step) * step


def solarize(image: tf.Tensor, threshold: float) -> tf.Tensor:
    """Invert the values >= ``threshold`` (PIL solarize)."""
    return tf.where(image < threshold, image, 255.0 - image)


def invert(image: tf.Tensor) -> tf.Tensor:
    """255 - value (PIL invert)."""
    return 255.0 - image


def _apply_lut(image: tf.Tensor, lut: tf.Tensor) -> tf.Tensor:
    """Map each channel c of integer-valued ``image`` through ``lut[c]`` ([3, 256])."""
    channels = tf.unstack(tf.cast(image, tf.int32), axis=-1)
    table = tf.cast(lut, tf.float32)
    return tf.stack([tf.gather(table[c], x) for c, x in enumerate(channels)], axis=-1)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
    """Stretch each channel's [min, max] to [0, 255] (PIL autocontrast, cutoff 0).

    The lookup table is PIL's, ``int(v * scale + offset)`` with ``scale = 255 /
    (max - min)``, ``offset = -min * scale``, in double precision as PIL computes it.
    """
    lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float64)[:, None]
    hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float64)[:, None]
    values = tf.range(256, dtype=tf.float64)[None]
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    lut = tf.clip_by_value(tf.floor(values * scale + -lo * scale), 0.0, 255.0)
    lut = tf.where(hi > lo, lut, values)
    return _apply_lut(image, lut)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Histogram equalisation of each channel (PIL equalize)."""
    luts = []
    for x in tf.unstack(tf.cast(image, tf.int32), axis=-1):
        hist = tf.math.bincount(x, minlength=256, maxlength=256, dtype=tf.int32)
        nonzero = tf.boolean_mask(hist, hist > 0)
        step = (tf.reduce_sum(hist) - nonzero[-1]) // 255
        below = tf.cumsum(hist, exclusive=True)
        lut = tf.minimum((step // 2 + below) // tf.maximum(step, 1), 255)
        keep = (tf.size(nonzero) <= 1) | (step == 0)
        luts.append(tf.where(keep, tf.range(256), lut))
    return _apply_lut(image, tf.stack(luts))


def _blend(
    degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor | float
) -> tf.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)``: float32, clipped, truncated."""
    out = degenerate + factor * (image - degenerate)
    return tf.floor(tf.clip_by_value(out, 0.0, 255.0))


def _grey(image: tf.Tensor) -> tf.Tensor:
    """[H, W] luma of PIL's RGB -> L conversion (ITU-R 601-2, 16-bit fixed point)."""
    x = tf.cast(image, tf.int32)
    luma = x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000
    return tf.cast(tf.bitwise.right_shift(luma, 16), tf.float32)


def color(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Saturation: blend with the grey image (PIL ImageEnhance.Color)."""
    grey = _grey(image)
    return _blend(tf.stack([grey, grey, grey], axis=-1), image, factor)


def contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Contrast: blend with the mean grey level (PIL ImageEnhance.Contrast)."""
    grey = tf.cast(_grey(image), tf.float64)
    mean = tf.cast(tf.floor(tf.reduce_mean(grey) + 0.5), tf.float32)
    return _blend(mean, image, factor)


def sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Sharpness: blend with the smoothed image (PIL ImageEnhance.Sharpness).

    The smoothing is PIL's SMOOTH filter, [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13,
    rounded; the border rows and columns keep their values, as in PIL.
    """
    shape = tf.shape(image)

    def smoothed() -> tf.Tensor:
        kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32)
        kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
        inner = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
        inner = tf.clip_by_value(tf.round(inner / 13.0), 0.0, 255.0)
        band = tf.concat([image[1:-1, :1], inner, image[1:-1, -1:]], axis=1)
        return tf.concat([image[:1], band, image[-1:]], axis=0)

    small = (shape[0] < 3) | (shape[1] < 3)
    degenerate = tf.cond(small, lambda: image, smoothed)
    return _blend(degenerate, image, factor)


def _transform(image: tf.Tensor, matrix: tf.Tensor, fill: float) -> tf.Tensor:
    """Resample [H, W, 3] so output (x, y) takes the input at ``matrix @ (x, y, 1)``
    (bilinear, ``fill`` outside), rounded to integer values."""
    transform = tf.concat(
        [tf.reshape(tf.cast(matrix, tf.float32), [6]), tf.zeros([2])], 0
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=fill,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def rotate(
    image: tf.Tensor, degrees: tf.Tensor | float, fill: float = FILL
) -> tf.Tensor:
    """Rotate counter-clockwise by ``degrees`` about the centre (PIL rotate)."""
    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    cy, cx = (size[0] - 1.0) / 2.0, (size[1] - 1.0) / 2.0
    # Output (x, y) comes from the input at the centre + R(-theta) (x - cx, y - cy),
    # in image coordinates (y down), which turns the picture counter-clockwise.
    matrix = tf.stack(
        [
            cos,
            -sin,
            cx - cos * cx + sin * cy,
            sin,
            cos,
            cy - sin * cx - cos * cy,
        ]
    )
    return _transform(image, matrix, fill)


def shear_x(
    image: tf.Tensor, factor: tf.Tensor | float, fill: float = FILL
) -> tf.Tensor:
    """Horizontal shear: output pixel (x, y) is the input at (x + factor (y + 1/2),
    y), PIL's affine transform (1, factor, 0, 0, 1, 0) in its coordinates, where
    pixel centres lie at +1/2."""
    factor = tf.cast(factor, tf.float32)
    matrix = tf.stack([1.0, factor, 0.5 * factor, 0.0, 1.0, 0.0])
    return _transform(image, matrix, fill)


# ---------------------------------------------------------------------- policy


def level_to_arg(name: str, level: int) -> float | int | None:
    """The value of operation ``name`` at magnitude ``level`` (0..10), before the
    random sign of Rotate and ShearX; None for operations without a magnitude."""
    if name == "Posterize":
        return level * 4 // MAX_LEVEL + 4
    if name == "Solarize":
        return level * 256 // MAX_LEVEL
    if name in ("Color", "Contrast", "Sharpness"):
        return level / MAX_LEVEL * 1.8 + 0.1
    if name == "Rotate":
        return level / MAX_LEVEL * 30.0
    if name == "ShearX":
        return level / MAX_LEVEL * 0.3
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    raise ValueError(f"unknown AutoAugment operation {name!r}")


def apply_op(
    image: tf.Tensor, name: str, level: int, negate: tf.Tensor | bool = False
) -> tf.Tensor:
    """Operation ``name`` at magnitude ``level``; ``negate`` flips the sign of the
    Rotate and ShearX values (each is drawn +- with probability 1/2)."""
    value = level_to_arg(name, level)
    if name in ("Rotate", "ShearX"):
        value = tf.where(negate, -value, value)
    ops = {
        "Posterize": lambda: posterize(image, value),
        "Solarize": lambda: solarize(image, float(value)),
        "Invert": lambda: invert(image),
        "AutoContrast": lambda: auto_contrast(image),
        "Equalize": lambda: equalize(image),
        "Color": lambda: color(image, value),
        "Contrast": lambda: contrast(image, value),
        "Sharpness": lambda: sharpness(image, value),
        "Rotate": lambda: rotate(image, value),
        "ShearX": lambda: shear_x(image, value),
    }
    return ops[name]()


def _sub_policy(image, sub_policy, coins, negate) -> tf.Tensor:
    for i, (name, prob, level) in enumerate(sub_policy):
        if prob <= 0.0:
            continue
        op = functools.partial(apply_op, name=name, level=level, negate=negate[i])
        image = tf.cond(
            coins[i] < prob, lambda x=image, op=op: op(x), lambda x=image: x
        )
    return image


def auto_augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    prob: float,
    policy: Sequence[Sequence[tuple[str, float, int]]] = IMAGENET_POLICY,
) -> tf.Tensor:
    """With probability ``prob``, apply one uniformly chosen sub-policy of ``policy``.

    FastReID's ``T.RandomApply([AutoAugment()], p=AUTOAUG.PROB)``: each of the
    sub-policy's two operations is applied with its own probability, in order.

    Args:
        image: [H, W, 3] pixels in [0, 255], uint8 or float (float values are
            rounded first: the operations work on integer levels, as PIL's).
        seed: int [2], stateless seed.
        prob: probability of augmenting the image at all.
        policy: sub-policies of (operation, probability, level) pairs.

    Returns:
        The image, same shape and dtype.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    apply = tf.random.stateless_uniform([], seeds[0]) < prob
    dtype = image.dtype
    width = max(len(sub) for sub in policy)

    def augment() -> tf.Tensor:
        x = tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0)
        index = tf.random.stateless_uniform(
            [], seeds[1], minval=0, maxval=len(policy), dtype=tf.int32
        )
        coins = tf.random.stateless_uniform([width], seeds[2])
        negate = tf.random.stateless_uniform([width], seeds[3]) < 0.5
        branches = [
            functools.partial(_sub_policy, x, sub, coins, negate) for sub in policy
        ]
        x = tf.switch_case(index, branches)
        return tf.cast(x, dtype)

    out = tf.cond(apply, augment, lambda: image)
    out.set_shape(image.shape)
    return out
