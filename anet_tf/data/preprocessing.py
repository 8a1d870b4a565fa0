"""Preprocessing shared by training, evaluation and serving: how a decoded image
becomes network input.

:func:`preprocess_for_inference` (resize, then :func:`normalize`) is the one place
that defines it: evaluation (:func:`anet_tf.data.pipeline.build_eval_dataset`)
calls it on each decoded record, the training pipeline uses the same
:func:`resize` and :func:`normalize` around its augmentation, and serving export
calls it (or :func:`preprocess_image_bytes` on a batch of encoded images), so
training, evaluation and serving normalise identically.

Pixel scale: decoded images are uint8; after :func:`resize` they are float32 in
[0, 255]; :func:`normalize` maps them to ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from anet_tf.data.decode import decode_image
from anet_tf.data.decode import decode_pixels
from anet_tf.data.decode import image_bytes_problem
from anet_tf.data.image_rules import DAMAGED

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Images a served batch decodes at once (tf.map_fn's default parallel_iterations).
_DECODE_THREADS = 10


def normalize(images: tf.Tensor) -> tf.Tensor:
    """ImageNet normalisation of float pixels in [0, 255]: (x/255 - mean) / std.

    Where the image shape is static the per-channel scale and offset are full-size
    constants: TensorFlow's CPU broadcast of a [3] vector over [H, W, 3] measured
    ~10x slower than a plain elementwise multiply-add.
    """
    images = tf.cast(images, tf.float32)
    shape = images.shape
    if shape.rank is not None and shape.rank >= 3 and shape[-3:].is_fully_defined():
        scale, offset = _normalize_constants(tuple(shape[-3:]))
    else:
        scale, offset = _normalize_constants((3,))
    return images * scale - offset


@functools.lru_cache(maxsize=8)
def _normalize_constants(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    scale = np.broadcast_to(1.0 / (255.0 * std), shape)
    offset = np.broadcast_to(mean / std, shape)
    return np.ascontiguousarray(scale), np.ascontiguousarray(offset)


def resize(images: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Bilinear resize of [H, W, 3] or [B, H, W, 3] pixels to ``image_size`` (h, w);
    returns float32 in the input's pixel scale."""
    out = tf.image.resize(images, tuple(image_size), method="bilinear")
    return tf.cast(out, tf.float32)


def preprocess_for_inference(images: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Resize and normalise decoded images: the network input of eval and serving.

    Args:
        images: uint8 pixels, or float pixels in [0, 255], [H, W, 3] or [B, H, W, 3].
        image_size: (height, width) of the network input.

    Returns:
        float32 [..., height, width, 3], ImageNet-normalised.
    """
    return normalize(resize(images, image_size))


def decode_and_preprocess(
    contents: tf.Tensor,
    image_size: Sequence[int],
    source: tf.Tensor | str = "<bytes>",
    max_pixels: int | None = None,
) -> tf.Tensor:
    """One encoded image (scalar string) -> normalised float32 [h, w, 3]."""
    return preprocess_for_inference(decode_image(contents, source, max_pixels), image_size)


def preprocess_image_bytes(
    contents: tf.Tensor, image_size: Sequence[int], max_pixels: int | None = None
) -> tf.Tensor:
    """A batch of encoded images (string [B]) -> normalised float32 [B, h, w, 3].

    Works eagerly and inside ``tf.function`` (serving signatures take raw bytes). An
    image that cannot be decoded fails the batch naming its index: ``cannot decode
    image image_bytes[3]: ...`` (the first such image of the batch). Each image is
    checked as :func:`decode_image` checks a file (:func:`image_bytes_problem`,
    with ``max_pixels`` the size its header announces, so that an oversized image
    is never decoded) and decoded only if it passed. The decoders run in a tf.data
    pipeline that drops a failing image (:func:`_decode_each`), because their own
    errors (damage inside a file whose header and end marker are intact) name no
    image.
    """
    h, w = image_size
    n = tf.size(contents)

    def check_and_decode(c):
        problem = image_bytes_problem(c, max_pixels)
        image = tf.cond(
            problem == "",
            lambda: preprocess_for_inference(decode_pixels(c), image_size),
            lambda: tf.zeros([h, w, 3], tf.float32),
        )
        return problem, image

    decoded, index, (problems, images) = _decode_each(
        check_and_decode,
        contents,
        (tf.TensorSpec([], tf.string), tf.TensorSpec([h, w, 3], tf.float32)),
    )
    problems = tf.tensor_scatter_nd_update(
        tf.fill([n], "decoder"), index[:, None], problems
    )
    bad = ~decoded | (problems != "")
    # Padded by one entry, so that "the first bad image" exists in every case.
    first = tf.argmax(tf.cast(tf.concat([bad, [True]], 0), tf.int32), output_type=tf.int32)
    problem = tf.concat([problems, [""]], 0)[first]
    reason = tf.where(problem == "decoder", DAMAGED, problem)
    message = tf.strings.join(
        ["cannot decode image image_bytes[", tf.strings.as_string(first), "]: ", reason]
    )
    with tf.control_dependencies([tf.debugging.Assert(~tf.reduce_any(bad), [message])]):
        return tf.identity(images)


def _decode_each(fn, contents: tf.Tensor, spec):
    """(ok bool [B], index, values): ``fn`` is mapped over the images in a tf.data
    pipeline whose failing elements are dropped, so a decoder's error gives ok
    False instead of failing the graph. ``values`` (of structure ``spec``) are
    ``fn`` of the images with ok True, in order, and ``index`` their places in the
    batch: all B of them when every ok is True."""
    n = tf.size(contents)
    each = tf.data.Dataset.from_tensor_slices((tf.range(n), contents))
    each = each.map(
        lambda i, c: (i, fn(c)), num_parallel_calls=_DECODE_THREADS, deterministic=True
    )
    each = each.ignore_errors().batch(tf.cast(tf.maximum(n, 1), tf.int64))
    # A batch of none after it: the first batch exists when every image fails.
    none = (
        tf.zeros([0], tf.int32),
        tf.nest.map_structure(lambda t: tf.zeros([0, *t.shape], t.dtype), spec),
    )
    first = each.concatenate(tf.data.Dataset.from_tensors(none)).take(1)
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    index, values = first.with_options(options).get_single_element()
    ok = tf.scatter_nd(index[:, None], tf.ones_like(index), [n]) > 0
    return ok, index, values


def flip_horizontal(images: tf.Tensor) -> tf.Tensor:
    """Mirror [..., H, W, C] images left-right (test-time flip augmentation)."""
    return tf.reverse(images, axis=[-2])
