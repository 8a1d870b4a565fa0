"""Training augmentation of section 4.2 (flip, zoom, random erasing), batch-wise.

The ops work on a whole batch ``[B, H, W, 3]`` of float pixels in [0, 255] (before
normalisation), with the per-image random parameters drawn as vectors. One
vectorised op per augmentation is much cheaper on a CPU than a chain of small ops per
image, which is what lets the input pipeline outrun the model.

Every random number comes from a stateless op, so the output is a function of the
images and the ``seed`` alone: the pipeline derives that seed from (data.seed, epoch,
step), which makes a run reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

# Aspect-ratio range of the zoom crop (log-uniform): the paper says only "random
# zoom"; we keep the jitter mild so a vehicle is not visibly squashed.
ZOOM_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
# Vectorised stand-in for the retry loop of random erasing (Zhong et al. retry up to
# 100 times until the box fits; with the default ranges 10 tries all fail with
# probability below 1e-6, and then the image is left as it is).
ERASING_ATTEMPTS = 10


def _uniform(shape, seed, minval=0.0, maxval=1.0) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def flip_zoom(
    images: tf.Tensor,
    seed: tf.Tensor,
    flip_prob: float,
    zoom_prob: float,
    zoom_min_area: float,
    zoom_aspect: Sequence[float] = ZOOM_ASPECT,
) -> tf.Tensor:
    """Random horizontal flip and random zoom, as one ``crop_and_resize``.

    Zoom (with probability ``zoom_prob``) keeps a random box whose area is a
    uniform fraction in [zoom_min_area, 1] of the image and whose aspect ratio
    (relative to the image) is log-uniform in ``zoom_aspect``, and resizes it back to
    the full image. A flip (with probability ``flip_prob``) is the same box with its
    left and right edges swapped. An image with neither gets the box [0, 0, 1, 1],
    which ``crop_and_resize`` samples exactly at the pixel centres, so it passes
    through unchanged.

    Args:
        images: float [B, H, W, 3].
        seed: int [2], stateless seed.
    """
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    flip = _uniform([b], seeds[0]) < flip_prob
    zoom = _uniform([b], seeds[1]) < zoom_prob
    area = _uniform([b], seeds[2], zoom_min_area, 1.0)
    log_ratio = _uniform(
        [b], seeds[3], math.log(zoom_aspect[0]), math.log(zoom_aspect[1])
    )
    ratio = tf.exp(log_ratio)
    box_h = tf.where(zoom, tf.minimum(tf.sqrt(area * ratio), 1.0), 1.0)
    box_w = tf.where(zoom, tf.minimum(tf.sqrt(area / ratio), 1.0), 1.0)
    y0 = _uniform([b], seeds[4]) * (1.0 - box_h)
    x0 = _uniform([b], seeds[5]) * (1.0 - box_w)
    y1 = y0 + box_h
    x1 = x0 + box_w
    left = tf.where(flip, x1, x0)
    right = tf.where(flip, x0, x1)
    boxes = tf.stack([y0, left, y1, right], axis=1)
    return tf.image.crop_and_resize(
        images, boxes, tf.range(b), tf.stack([h, w]), method="bilinear"
    )


def random_erasing(
    images: tf.Tensor,
    seed: tf.Tensor,
    prob: float,
    area: Sequence[float],
    aspect: float,
    fill: Sequence[float] | None = None,
    pixel_max: float = 255.0,
) -> tf.Tensor:
    """Random erasing (Zhong et al., AAAI 2020, Algorithm 1), vectorised.

    With probability ``prob`` an image gets one rectangle of area S_e ~ U(area) of
    the image and aspect ratio r_e ~ U(aspect, 1/aspect), placed uniformly where it
    fits, and filled with per-pixel uniform random values in [0, pixel_max] (the
    paper's choice) or, with ``fill``, a constant pixel (e.g. the dataset mean, which
    is zero after normalisation).

    Args:
        images: float [B, H, W, 3] in [0, pixel_max].
        seed: int [2], stateless seed.
        prob: p, the erasing probability.
        area: (s_l, s_h), the range of the erased area fraction.
        aspect: r_1; the aspect ratio is drawn in (r_1, 1 / r_1).
        fill: None for random values, else the C fill values.
    """
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    hf = tf.cast(h, tf.float32)
    wf = tf.cast(w, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 6)
    erase = _uniform([b], seeds[0]) < prob
    tries = [b, ERASING_ATTEMPTS]
    target = _uniform(tries, seeds[1], area[0], area[1]) * hf * wf
    ratio = _uniform(tries, seeds[2], min(aspect, 1 / aspect), max(aspect, 1 / aspect))
    eh = tf.round(tf.sqrt(target * ratio))
    ew = tf.round(tf.sqrt(target / ratio))
    fits = (eh < hf) & (ew < wf) & (eh > 0) & (ew > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    eh = tf.gather(eh, first, batch_dims=1)
    ew = tf.gather(ew, first, batch_dims=1)
    erase &= tf.reduce_any(fits, axis=1)
    y0 = tf.floor(_uniform([b], seeds[3]) * (hf - eh + 1.0))
    x0 = tf.floor(_uniform([b], seeds[4]) * (wf - ew + 1.0))
    ys = tf.range(hf)[None, :]
    xs = tf.range(wf)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None]) & erase[:, None]
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = in_y[:, :, None, None] & in_x[:, None, :, None]
    if fill is None:
        values = _uniform(tf.shape(images), seeds[5], 0.0, pixel_max)
    else:
        values = tf.constant(fill, tf.float32)
    return tf.where(mask, values, images)


def augment_batch(
    images: tf.Tensor,
    seed: tf.Tensor,
    *,
    flip_prob: float,
    zoom_prob: float,
    zoom_min_area: float,
    erasing_prob: float,
    erasing_area: Sequence[float],
    erasing_aspect: float,
    erasing_fill: Sequence[float] | None = None,
) -> tf.Tensor:
    """Flip + zoom, then random erasing, on float pixels [B, H, W, 3] in [0, 255].

    The keyword arguments are those of ``AugmentConfig``; a probability of 0 skips
    the op entirely (nothing is traced for it).
    """
    flip_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if flip_prob > 0 or zoom_prob > 0:
        images = flip_zoom(images, flip_seed, flip_prob, zoom_prob, zoom_min_area)
    if erasing_prob > 0:
        images = random_erasing(
            images,
            erase_seed,
            erasing_prob,
            erasing_area,
            erasing_aspect,
            fill=erasing_fill,
        )
    return images
