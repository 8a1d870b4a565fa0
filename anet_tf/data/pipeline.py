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
:func:`~anet_tf.data.preprocessing.preprocess_for_inference`, the one place that
defines how a raw image becomes network input (:mod:`anet_tf.data.preprocessing`,
which serving export shares); decoding and its checks are :mod:`anet_tf.data.decode`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from anet_tf.config import DataConfig
from anet_tf.data.augment import random_erasing
from anet_tf.data.augment import random_flip
from anet_tf.data.augment import random_pad_crop
from anet_tf.data.augment import random_zoom_crop
from anet_tf.data.autoaugment import auto_augment
from anet_tf.data.decode import read_image
from anet_tf.data.preprocessing import IMAGENET_MEAN
from anet_tf.data.preprocessing import flip_horizontal
from anet_tf.data.preprocessing import normalize
from anet_tf.data.preprocessing import preprocess_for_inference
from anet_tf.data.preprocessing import resize
from anet_tf.data.records import DataError
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import pattern_index
from anet_tf.data.sampler import PKSampler

ERASING_FILLS = ("random", "mean")


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


# long: 27 lines of docstring; the body is the tf.data chain (sample, decode, augment, batch) in the order the data flows.
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
