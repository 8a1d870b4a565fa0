"""tf.data input pipelines: identity-balanced training batches and evaluation batches.

Training (:func:`build_train_dataset`)::

    PKSampler (NumPy, per epoch) -> record indices -> per image, in a parallel map:
    read + decode -> AutoAugment -> random zoom (a window) -> resize -> random flip
    -> zero pad + random crop -> random erasing -> ImageNet normalisation
    (stateless seeds from (data.seed, epoch, step, position)) -> batch of R x P x K
    -> prefetch

The steps are switched by ``data.augment``; AutoAugment and pad + crop (FastReID's
strong baseline) are off by default. Their order is FastReID's
(``fastreid/data/transforms/build.py``: AutoAugment on the decoded image, resize,
pad + random crop, flip, ..., random erasing last), with two differences: the
paper's zoom, which FastReID lacks, stays a window of the decoded image before the
resize; and the flip stays right after the resize, before pad + crop (FastReID's
current order puts it after, its earlier releases before; with symmetric padding
and a uniform crop both orders give the same distribution of images).

Evaluation (:func:`build_eval_dataset`) decodes the records in order with
:func:`preprocess_for_inference`, the one place that defines how a raw image becomes
network input; serving export calls the same function (or
:func:`preprocess_image_bytes` on a batch of encoded images), so training, evaluation
and serving normalise identically.

Pixel scale: decoded images are uint8; after :func:`resize` they are float32 in
[0, 255]; :func:`normalize` maps them to ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from anet_tf.config import DataConfig
from anet_tf.data.augment import random_erasing
from anet_tf.data.augment import random_flip
from anet_tf.data.augment import random_pad_crop
from anet_tf.data.augment import random_zoom_crop
from anet_tf.data.autoaugment import auto_augment
from anet_tf.data.records import DataError
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import pattern_index
from anet_tf.data.sampler import PKSampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASING_FILLS = ("random", "mean")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A truncated file lacks its end marker; it is looked for in this many last bytes
# (JPEG entropy data never contains FF D9, so a match there is the real marker).
_TAIL_BYTES = 256
# Images a served batch decodes at once (tf.map_fn's default parallel_iterations).
_DECODE_THREADS = 10


# ------------------------------------------------------------------ preprocessing


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


def _tail_contains(tail: tf.Tensor, marker: bytes) -> tf.Tensor:
    n = len(marker)
    hit = tf.ones_like(tail[: tf.size(tail) - n + 1], tf.bool)
    for i, byte in enumerate(marker):
        part = tail[i : tf.size(tail) - n + 1 + i]
        hit &= tf.equal(part, byte)
    return tf.reduce_any(hit)


def check_image_bytes(contents: tf.Tensor, source: tf.Tensor | str) -> tf.Operation:
    """An assertion that ``contents`` is a complete JPEG, PNG, GIF, BMP or WebP file.

    The decoders' own errors do not say which file failed; this check runs first and
    fails with ``cannot decode image <source>: <reason>`` for an empty file, an
    unknown format, and a JPEG or PNG cut short (no end-of-image marker / IEND
    chunk). Damage inside a complete-looking file is left to the decoder, whose
    error does not name the file: a check that decodes every file of a dataset
    before training names those by path, :func:`preprocess_image_bytes` by their
    index in a served batch.
    """
    problem = image_bytes_problem(contents)
    message = tf.strings.join(["cannot decode image ", source, ": ", problem])
    return tf.debugging.Assert(tf.equal(problem, ""), [message])


def image_bytes_problem(contents: tf.Tensor) -> tf.Tensor:
    """What :func:`check_image_bytes` finds wrong with ``contents`` (a scalar
    string: "" when nothing), computed with string operations that cannot fail."""
    size = tf.strings.length(contents)
    head = tf.strings.join([tf.strings.substr(contents, 0, 12), b"\0" * 12])
    is_jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    is_png = tf.strings.substr(head, 0, 8) == _PNG_SIGNATURE
    is_gif = tf.strings.substr(head, 0, 3) == b"GIF"
    is_bmp = tf.strings.substr(head, 0, 2) == b"BM"
    is_webp = (tf.strings.substr(head, 0, 4) == b"RIFF") & (
        tf.strings.substr(head, 8, 4) == b"WEBP"
    )
    start = tf.maximum(size - _TAIL_BYTES, 0)
    tail = tf.io.decode_raw(tf.strings.substr(contents, start, _TAIL_BYTES), tf.uint8)
    known = is_jpeg | is_png | is_gif | is_bmp | is_webp
    reason = tf.where(
        size == 0,
        "the file is empty",
        tf.where(
            ~known,
            "not a JPEG, PNG, GIF, BMP or WebP file",
            tf.where(
                is_jpeg & ~_tail_contains(tail, b"\xff\xd9"),
                "truncated JPEG (no end-of-image marker)",
                tf.where(
                    is_png & ~_tail_contains(tail, b"IEND"),
                    "truncated PNG (no IEND chunk)",
                    "",
                ),
            ),
        ),
    )
    return reason


def _header_int(header: tf.Tensor, offset: int, size: int, big_endian: bool) -> tf.Tensor:
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(header, offset, size), tf.uint8), tf.int64)
    weights = [256 ** (size - 1 - i) if big_endian else 256**i for i in range(size)]
    return tf.reduce_sum(raw * tf.constant(weights, tf.int64))


def _webp_pixels(header: tf.Tensor) -> tf.Tensor:
    """Width x height of a WebP file from its first chunk: 'VP8 ' (lossy: 14-bit sizes
    after the 9d 01 2a start code), 'VP8L' (lossless: 14-bit width-1, height-1 packed
    after the 0x2f signature) or 'VP8X' (extended: 24-bit canvas width-1, height-1)."""
    chunk = tf.strings.substr(header, 12, 4)
    lossy = (_header_int(header, 26, 2, False) % 16384) * (_header_int(header, 28, 2, False) % 16384)
    bits = _header_int(header, 21, 4, False)
    lossless = (bits % 16384 + 1) * ((bits // 16384) % 16384 + 1)
    extended = (_header_int(header, 24, 3, False) + 1) * (_header_int(header, 27, 3, False) + 1)
    return tf.case(
        [(chunk == b"VP8 ", lambda: lossy), (chunk == b"VP8L", lambda: lossless), (chunk == b"VP8X", lambda: extended)],
        default=lambda: tf.constant(0, tf.int64),
    )


def _header(contents: tf.Tensor) -> tf.Tensor:
    """The first 32 bytes of a file, zero-padded to 32."""
    return tf.strings.join([tf.strings.substr(contents, 0, 32), b"\0" * 32])


def _fixed_header_pixels(header: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Width x height as PNG (IHDR), GIF and BMP headers give it, at fixed offsets
    (string ops only: nothing here can fail)."""
    png = _header_int(header, 16, 4, True) * _header_int(header, 20, 4, True)
    gif = _header_int(header, 6, 2, False) * _header_int(header, 8, 2, False)
    bmp_h = _header_int(header, 22, 4, False)
    bmp_h = tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h)  # top-down BMPs: negative
    bmp = _header_int(header, 18, 4, False) * bmp_h
    return png, gif, bmp


def header_pixels(contents: tf.Tensor) -> tf.Tensor:
    """Width x height (int64) from an image file's header, without decoding it: JPEG
    (its SOF), PNG (IHDR), GIF, BMP and WebP (VP8, VP8L, VP8X); 0 where the header
    says nothing usable. Call after :func:`check_image_bytes` has passed."""
    header = _header(contents)
    head3, head8 = tf.strings.substr(header, 0, 3), tf.strings.substr(header, 0, 8)
    png, gif, bmp = _fixed_header_pixels(header)
    webp = (tf.strings.substr(header, 0, 4) == b"RIFF") & (tf.strings.substr(header, 8, 4) == b"WEBP")
    return tf.case(
        [
            (head3 == b"\xff\xd8\xff",
             lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64))),
            (head8 == _PNG_SIGNATURE, lambda: png),
            (head3 == b"GIF", lambda: gif),
            (tf.strings.substr(header, 0, 2) == b"BM", lambda: bmp),
            (webp, lambda: _webp_pixels(header)),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def decode_image(
    contents: tf.Tensor,
    source: tf.Tensor | str = "<bytes>",
    max_pixels: int | None = None,
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes (scalar string) -> uint8 [H, W, 3].

    Args:
        contents: the encoded file.
        source: what to call the image in an error message (its path).
        max_pixels: refuse an image whose header announces more pixels, before any
            decoding (a 10000 x 10000 JPEG costs 300 MB decoded); None = no limit.
    """
    with tf.control_dependencies([check_image_bytes(contents, source)]):
        contents = tf.identity(contents)
    if max_pixels is not None:
        pixels = header_pixels(contents)
        too_large = tf.debugging.Assert(
            pixels <= max_pixels,
            [tf.strings.join([
                "cannot decode image ", source, ": ", tf.strings.as_string(pixels),
                f" pixels, more than the limit of {max_pixels} (data.max_image_pixels)",
            ])],
        )
        with tf.control_dependencies([too_large]):
            contents = tf.identity(contents)
    return _decode_pixels(contents)


def _decode_pixels(contents: tf.Tensor) -> tf.Tensor:
    """The decoder alone: encoded bytes -> uint8 [H, W, 3]."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def read_image(path: tf.Tensor | str) -> tf.Tensor:
    """Read and decode one image file -> uint8 [H, W, 3]; errors name the path."""
    return decode_image(tf.io.read_file(path), path)


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
    then, with ``max_pixels``, the size its header announces, so that an oversized
    image is never decoded) and decoded only if it passed. The decoders run in a
    tf.data pipeline that drops a failing image (:func:`_decode_each`), because
    their own errors (damage inside a file whose header and end marker are intact,
    a PNG of 0 x 0 pixels) name no image.
    """
    h, w = image_size
    n = tf.size(contents)

    def check_and_decode(c):
        problem = image_bytes_problem(c)
        if max_pixels is not None:
            pixels = tf.cond(
                problem == "", lambda: header_pixels(c), lambda: tf.constant(0, tf.int64)
            )
            problem = tf.where(
                (problem == "") & (pixels > max_pixels),
                tf.strings.join([
                    tf.strings.as_string(pixels),
                    f" pixels, more than the limit of {max_pixels} "
                    "(data.max_image_pixels)",
                ]),
                problem,
            )
        image = tf.cond(
            problem == "",
            lambda: preprocess_for_inference(_decode_pixels(c), image_size),
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
    padded = tf.concat([contents, [b""]], 0)
    problem = tf.concat([problems, [""]], 0)[first]
    reason = tf.where(problem == "decoder", _decoder_failure(padded[first]), problem)
    message = tf.strings.join(
        ["cannot decode image image_bytes[", tf.strings.as_string(first), "]: ", reason]
    )
    with tf.control_dependencies([tf.debugging.Assert(~tf.reduce_any(bad), [message])]):
        return tf.identity(images)


def _decoder_failure(contents: tf.Tensor) -> tf.Tensor:
    """Why a decoder (or a JPEG's size reader) may have refused ``contents``, which
    passed :func:`image_bytes_problem`: a PNG, GIF or BMP header that announces no
    pixels, or else damage inside the file."""
    header = _header(contents)
    png, gif, bmp = _fixed_header_pixels(header)
    empty = (
        ((tf.strings.substr(header, 0, 8) == _PNG_SIGNATURE) & (png == 0))
        | ((tf.strings.substr(header, 0, 3) == b"GIF") & (gif == 0))
        | ((tf.strings.substr(header, 0, 2) == b"BM") & (bmp == 0))
    )
    return tf.where(
        empty,
        "its header announces no pixels (width or height 0)",
        "the decoder refused the data after a valid header (damaged inside the file)",
    )


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


# ------------------------------------------------------------------------- labels


def pid_label_map(dataset: ReidDataset) -> dict[int, int]:
    """Dataset identity -> ID-classifier label: index in the sorted train pids."""
    return {pid: label for label, pid in enumerate(dataset.train_pids())}


def label_arrays(
    records: Sequence[Record],
    num_classes: Sequence[int],
    pid_map: dict[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The per-record columns the pipelines gather from.

    Args:
        records: the images.
        num_classes: m_i of each attribute (defines the pattern index).
        pid_map: maps dataset pids to labels; None keeps the dataset pids.

    Returns:
        "path" (str), "pid", "camid", "pattern" (int32 [N]) and "attributes"
        (int32 [N, n]); pattern is -1 where an attribute is unknown.

    Raises:
        DataError: a record with the wrong number of attributes or a class out of
            range, naming the image.
    """
    n = len(num_classes)
    attributes = np.zeros((len(records), n), np.int32)
    pattern = np.zeros(len(records), np.int32)
    for i, r in enumerate(records):
        if len(r.attributes) != n:
            raise DataError(
                f"{r.path}: has {len(r.attributes)} attributes, the dataset defines "
                f"{n} ({list(num_classes)} classes)"
            )
        try:
            pattern[i] = pattern_index(r.attributes, list(num_classes))
        except ValueError as exc:
            raise DataError(f"{r.path}: {exc}") from None
        attributes[i] = r.attributes
    pids = [r.pid for r in records]
    if pid_map is not None:
        missing = sorted({p for p in pids if p not in pid_map})
        if missing:
            raise DataError(f"pids {missing[:10]} are not in the label map")
        pids = [pid_map[p] for p in pids]
    return {
        "path": np.array([r.path for r in records], dtype=object),
        "pid": np.asarray(pids, np.int32).reshape(-1),
        "camid": np.asarray([r.camid for r in records], np.int32).reshape(-1),
        "attributes": attributes,
        "pattern": pattern,
    }


# ----------------------------------------------------------------------- datasets


def _parallel(num_parallel_calls: int) -> int:
    return tf.data.AUTOTUNE if num_parallel_calls < 0 else max(1, num_parallel_calls)


def _check_fill(erasing_fill: str) -> Sequence[float] | None:
    if erasing_fill not in ERASING_FILLS:
        raise ValueError(
            f"erasing_fill must be one of {', '.join(ERASING_FILLS)}. Received: "
            f"erasing_fill={erasing_fill!r}"
        )
    return None if erasing_fill == "random" else [255.0 * m for m in IMAGENET_MEAN]


def build_train_dataset(
    dataset: ReidDataset,
    cfg: DataConfig,
    *,
    num_replicas: int = 1,
    epoch_seed_offset: int = 0,
    erasing_fill: str | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """The endless stream of augmented, identity-balanced training batches.

    Each element is ``(images, targets)``: images float32 [G, h, w, 3] (normalised)
    with G = num_replicas x P x K, and targets a dict of
    "pid" (int32 [G], label 0..num_train_ids-1, see :func:`pid_label_map`),
    "camid" (int32 [G]), "attributes" (int32 [G, n], -1 unknown) and
    "pattern" (int32 [G], :func:`pattern_index`, -1 if any attribute is unknown).
    Every contiguous slice of P x K (one replica's share) holds P identities with K
    images each, identity j at positions j*K .. j*K+K-1 of the slice.

    Args:
        dataset: the dataset; its ``train`` records are used.
        cfg: data settings (image_size, batch_size = P x K, num_instances = K,
            num_parallel_calls, seed, augment).
        num_replicas: replicas the global batch is split across (tf.distribute).
        epoch_seed_offset: number of the first epoch; epoch e's batches and
            augmentations depend only on (cfg.seed, e), so a run resumed at epoch e
            passes e here and continues the same stream.
        erasing_fill: random (per-pixel uniform, the paper) | mean (the ImageNet
            mean, i.e. zero after normalisation); None = ``cfg.augment.erasing_fill``,
            which is what ``fit`` uses.
        steps_per_epoch: batches per training epoch when not the sampler's own
            (``train.stageN.steps_per_epoch``); None = the sampler's epoch.

    Returns:
        (dataset, steps_per_epoch); an epoch is about one pass over the train images.
    """
    aug = cfg.augment
    fill = _check_fill(aug.erasing_fill if erasing_fill is None else erasing_fill)
    if not dataset.train:
        raise DataError(f"{dataset.root}: the train split has no images")
    cols = label_arrays(dataset.train, dataset.num_classes, pid_label_map(dataset))
    sampler = PKSampler(
        [r.pid for r in dataset.train],
        num_instances=cfg.num_instances,
        num_ids_per_batch=cfg.num_ids_per_batch,
        num_replicas=num_replicas,
        seed=cfg.seed,
    )
    global_batch = sampler.global_batch_size
    image_size = tuple(cfg.image_size)
    parallel = _parallel(cfg.num_parallel_calls)
    paths = tf.constant(cols["path"].astype(str))
    targets = {
        k: tf.constant(cols[k]) for k in ("pid", "camid", "attributes", "pattern")
    }
    seed = tf.constant(cfg.seed, tf.int64)

    steps = steps_per_epoch or sampler.steps_per_epoch
    rounds = -(-steps // sampler.steps_per_epoch)  # sampler epochs per training epoch

    def index_batches():
        # Training epoch e takes its batches from sampler epochs e*rounds ..
        # e*rounds+rounds-1 only, so its batches depend on (seed, e) alone also
        # when train.stageN.steps_per_epoch differs from the sampler's epoch: a run
        # resumed at epoch e draws what the uninterrupted run drew.
        epoch = epoch_seed_offset
        while True:
            taken = 0
            for r in range(rounds):
                sampler_epoch = epoch * rounds + r
                for step, indices in enumerate(sampler.iter_epoch(sampler_epoch)):
                    if taken == steps:
                        break
                    yield sampler_epoch, step, indices
                    taken += 1
            epoch += 1

    def spread(epoch, step, indices):
        n = global_batch
        return tf.data.Dataset.from_tensor_slices(
            (
                indices,
                tf.fill([n], epoch),
                tf.fill([n], step),
                tf.range(n, dtype=tf.int64),
            )
        )

    def load(index, epoch, step, position):
        image_seed = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(tf.stack([seed, epoch]), step),
            position,
        )
        # The first three parts of a split into 5 are the split into 3 that the
        # paper's augmentations have always used (stateless_split draws its parts
        # in order), so adding pad and AutoAugment left a default run's images as
        # they were.
        zoom_seed, flip_seed, erase_seed, pad_seed, autoaug_seed = tf.unstack(
            tf.random.experimental.stateless_split(image_seed, 5)
        )
        image = read_image(tf.gather(paths, index))
        if aug.autoaugment_prob > 0:
            image = auto_augment(image, autoaug_seed, aug.autoaugment_prob)
        if aug.zoom_prob > 0:
            image = random_zoom_crop(image, zoom_seed, aug.zoom_prob, aug.zoom_min_area)
        image = resize(image, image_size)
        if aug.flip_prob > 0:
            image = random_flip(image, flip_seed, aug.flip_prob)
        if aug.pad > 0:
            image = random_pad_crop(image, pad_seed, aug.pad)
        if aug.erasing_prob > 0:
            image = random_erasing(
                image,
                erase_seed,
                aug.erasing_prob,
                aug.erasing_area,
                aug.erasing_aspect,
                fill=fill,
            )
        image.set_shape([*image_size, 3])
        image = normalize(image)
        return image, {k: tf.gather(v, index) for k, v in targets.items()}

    scalar = tf.TensorSpec([], tf.int64)
    ds = tf.data.Dataset.from_generator(
        index_batches,
        output_signature=(scalar, scalar, tf.TensorSpec([global_batch], tf.int64)),
    )
    ds = ds.flat_map(spread)
    # deterministic: batch boundaries must fall between identities' P x K groups.
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(global_batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE), sampler.steps_per_epoch


def build_eval_dataset(
    records: Sequence[Record],
    cfg: DataConfig,
    num_classes: Sequence[int],
    flip: bool = False,
) -> tf.data.Dataset:
    """Evaluation batches in record order, without augmentation.

    Each element is ``(images, targets)``: images float32 [B, h, w, 3] from
    :func:`preprocess_for_inference` (mirrored when ``flip``), targets a dict of
    "index" (int32 [B], position in ``records``), "pid" (the dataset's own ids),
    "camid", "attributes" ([B, n]) and "pattern", all int32. B is
    cfg.test_batch_size; the last batch keeps the remainder.

    Args:
        records: the images (e.g. query + gallery).
        cfg: data settings (image_size, test_batch_size, num_parallel_calls).
        num_classes: m_i of each attribute.
        flip: yield the horizontally mirrored images (for flip test-time
            augmentation, run once with flip=False and once with flip=True).
    """
    cols = label_arrays(records, num_classes)
    image_size = tuple(cfg.image_size)
    columns = {
        "index": np.arange(len(records), dtype=np.int32),
        "path": cols["path"].astype(str).reshape(-1),
        **{k: cols[k] for k in ("pid", "camid", "attributes", "pattern")},
    }

    def load(row):
        images = preprocess_for_inference(read_image(row.pop("path")), image_size)
        if flip:
            images = flip_horizontal(images)
        return images, row

    ds = tf.data.Dataset.from_tensor_slices(columns)
    ds = ds.map(load, num_parallel_calls=_parallel(cfg.num_parallel_calls))
    ds = ds.batch(cfg.test_batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
