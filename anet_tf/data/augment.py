"""Training augmentation of section 4.2: random zoom, horizontal flip, random erasing;
and the zero padding + random crop of FastReID's strong baseline (AutoAugment, the
third of its additions, is in :mod:`anet_tf.data.autoaugment`).

The functions work on one image at a time, inside the parallel ``map`` of the input
pipeline (:func:`anet_tf.data.pipeline.build_train_dataset` composes them with the
shared resize and normalisation). Per image, a 256x256 image stays in the CPU cache
from decoding to normalisation, and each op is a slice, a concat or a plain
elementwise op: TensorFlow's CPU broadcasts and ``tf.where`` with a broadcast mask
measured ~10x slower than these on 2 cores.

Every random number comes from a stateless op, so an output is a function of the
image and its ``seed`` alone; the pipeline derives the seed from (data.seed, epoch,
step, position in the batch), which makes a run reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

# Aspect-ratio range of the zoom window (log-uniform, relative to the image's own):
# the paper says only "random zoom"; the jitter is kept mild so a vehicle is not
# visibly squashed.
ZOOM_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
# Vectorised stand-in for the retry loop of random erasing (Zhong et al. retry up to
# 100 times until the box fits; with the default ranges 10 tries all fail with
# probability below 1e-6, and then the image is left as it is).
ERASING_ATTEMPTS = 10


def _uniform(shape, seed, minval=0.0, maxval=1.0) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def random_zoom_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    prob: float,
    min_area: float,
    aspect: Sequence[float] = ZOOM_ASPECT,
) -> tf.Tensor:
    """Random zoom: with probability ``prob``, keep a random window of the image.

    The window's area is a uniform fraction in [min_area, 1] of the image and its
    aspect ratio, relative to the image's, log-uniform in ``aspect`` (each side
    capped at the image's); it is placed uniformly. Resizing the window back to the
    network input (done once, by the pipeline's resize) zooms in. The paper gives no
    parameters beyond "zoom"; the area range is ``AugmentConfig.zoom_min_area``.

    Args:
        image: [H, W, C] pixels, any dtype.
        seed: int [2], stateless seed.

    Returns:
        [h, w, C] window, the whole image when not zoomed.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    zoom = _uniform([], seeds[0]) < prob
    area = _uniform([], seeds[1], min_area, 1.0)
    ratio = tf.exp(_uniform([], seeds[2], math.log(aspect[0]), math.log(aspect[1])))
    frac = tf.minimum(tf.stack([tf.sqrt(area * ratio), tf.sqrt(area / ratio)]), 1.0)
    frac = tf.where(zoom, frac, 1.0)
    extent = tf.maximum(tf.round(frac * size), 1.0)
    start = tf.floor(_uniform([2], seeds[3]) * (size - extent + 1.0))
    start = tf.minimum(start, size - extent)
    window = tf.slice(
        image,
        tf.concat([tf.cast(start, tf.int32), [0]], 0),
        tf.concat([tf.cast(extent, tf.int32), [-1]], 0),
    )
    window.set_shape([None, None, image.shape[-1]])
    return window


def random_flip(image: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
    """Mirror [H, W, C] left-right with probability ``prob``."""
    flip = _uniform([], seed) < prob
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def random_pad_crop(image: tf.Tensor, seed: tf.Tensor, pad: int) -> tf.Tensor:
    """Pad ``pad`` pixels of zeros on every side, then crop the original size back at
    a uniformly random position: torchvision's ``Pad(pad)`` + ``RandomCrop(size)``,
    FastReID's ``PADDING`` (constant mode). The image shifts by up to ``pad``
    pixels in each direction, with black (0, not the mean) where it moved away.

    Args:
        image: [H, W, C] pixels, any dtype.
        seed: int [2], stateless seed.
        pad: the padding; 0 returns the image as it is.

    Returns:
        [H, W, C], a window of the padded image, same dtype.
    """
    if pad <= 0:
        return image
    offset = tf.random.stateless_uniform(
        [2], seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    window = tf.slice(
        padded, tf.concat([offset, [0]], 0), tf.concat([tf.shape(image)[:2], [-1]], 0)
    )
    window.set_shape(image.shape)
    return window


def random_erasing(
    image: tf.Tensor,
    seed: tf.Tensor,
    prob: float,
    area: Sequence[float],
    aspect: float,
    fill: Sequence[float] | None = None,
    pixel_max: float = 255.0,
) -> tf.Tensor:
    """Random erasing (Zhong et al., AAAI 2020, Algorithm 1).

    With probability ``prob`` the image gets one rectangle of area S_e ~ U(area) of
    the image and aspect ratio r_e ~ U(aspect, 1/aspect), placed uniformly where it
    fits, filled with per-pixel uniform random values in [0, pixel_max] (the
    paper's choice) or, with ``fill``, a constant pixel (e.g. the dataset mean, which
    is zero after normalisation).

    Args:
        image: float [H, W, 3] in [0, pixel_max].
        seed: int [2], stateless seed.
        prob: p, the erasing probability.
        area: (s_l, s_h), the range of the erased area fraction.
        aspect: r_1; the aspect ratio is drawn in (r_1, 1 / r_1).
        fill: None for random values, else the 3 fill values.
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    hf = tf.cast(h, tf.float32)
    wf = tf.cast(w, tf.float32)
    target = _uniform([ERASING_ATTEMPTS], seeds[1], area[0], area[1]) * hf * wf
    r_lo, r_hi = sorted((aspect, 1.0 / aspect))
    ratio = _uniform([ERASING_ATTEMPTS], seeds[2], r_lo, r_hi)
    eh = tf.round(tf.sqrt(target * ratio))
    ew = tf.round(tf.sqrt(target / ratio))
    fits = (eh < hf) & (ew < wf) & (eh > 0) & (ew > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    erase = (_uniform([], seeds[0]) < prob) & tf.reduce_any(fits)

    def apply() -> tf.Tensor:
        rh = tf.cast(eh[first], tf.int32)
        rw = tf.cast(ew[first], tf.int32)
        y0 = tf.cast(_uniform([], seeds[3]) * tf.cast(h - rh + 1, tf.float32), tf.int32)
        x0 = tf.cast(_uniform([], seeds[4]) * tf.cast(w - rw + 1, tf.float32), tf.int32)
        y0 = tf.minimum(y0, h - rh)
        x0 = tf.minimum(x0, w - rw)
        if fill is None:
            patch = _uniform(tf.stack([rh, rw, 3]), seeds[5], 0.0, pixel_max)
        else:
            patch = tf.tile(tf.constant(fill, tf.float32)[None, None], [rh, rw, 1])
        band = image[y0 : y0 + rh]
        band = tf.concat([band[:, :x0], patch, band[:, x0 + rw :]], axis=1)
        return tf.concat([image[:y0], band, image[y0 + rh :]], axis=0)

    return tf.cond(erase, apply, lambda: image)
