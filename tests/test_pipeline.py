"""The tf.data pipelines: P x K sampler, augmentation, labels, eval order, errors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from anet_tf.config import AugmentConfig
from anet_tf.config import DataConfig
from anet_tf.data import augment
from anet_tf.data.decode import header_pixels
from anet_tf.data.decode import read_image
from anet_tf.data.pipeline import build_eval_dataset
from anet_tf.data.pipeline import build_train_dataset
from anet_tf.data.pipeline import label_arrays
from anet_tf.data.pipeline import pid_label_map
from anet_tf.data.preprocessing import IMAGENET_MEAN
from anet_tf.data.preprocessing import IMAGENET_STD
from anet_tf.data.preprocessing import decode_and_preprocess
from anet_tf.data.preprocessing import flip_horizontal
from anet_tf.data.preprocessing import normalize
from anet_tf.data.preprocessing import preprocess_for_inference
from anet_tf.data.preprocessing import preprocess_image_bytes
from anet_tf.data.records import DataError
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import pattern_index
from anet_tf.data.sampler import PKSampler

SIZE = (32, 32)
NUM_CLASSES = [3, 2]
# Dataset pid -> images; two identities have fewer than K=2 / K=4 images.
COUNTS = {11: 1, 22: 2, 33: 3, 44: 4, 55: 5, 66: 6}
# Dataset pid -> attributes (-1 = unknown).
ATTRIBUTES = {11: (0, 1), 22: (2, 0), 33: (1, -1), 44: (-1, -1), 55: (2, 1), 66: (0, 0)}
LOW = (0.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
HIGH = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)


def _pixels(pid: int) -> np.ndarray:
    """One picture per identity: a smooth colour field, distinct per identity and
    not left-right symmetric."""
    rng = np.random.default_rng(pid)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(SIZE, Image.BILINEAR))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ReidDataset:
    """Every image of an identity is the same picture, half of them PNG, half JPEG."""
    root = tmp_path_factory.mktemp("reid")
    records = []
    for pid, count in COUNTS.items():
        for j in range(count):
            ext = "png" if j % 2 == 0 else "jpg"
            path = os.path.join(root, f"{pid}_{j}.{ext}")
            Image.fromarray(_pixels(pid)).save(path)
            records.append(Record(path, pid, j % 3, ATTRIBUTES[pid], "train"))
    return ReidDataset(
        "tiny",
        str(root),
        ["color", "type"],
        [["red", "blue", "white"], ["car", "van"]],
        train=records,
    )


def _cfg(**kwargs) -> DataConfig:
    base = dict(image_size=SIZE, batch_size=6, num_instances=2, test_batch_size=4)
    return DataConfig(**{**base, **kwargs})


def _no_augment() -> AugmentConfig:
    return AugmentConfig(flip_prob=0.0, zoom_prob=0.0, erasing_prob=0.0)


def _assert_pk(pids: np.ndarray, p: int, k: int) -> None:
    groups = pids.reshape(p, k)
    assert (groups == groups[:, :1]).all(), groups
    assert len(set(groups[:, 0])) == p, groups


# ------------------------------------------------------------------------ sampler


def _sampler_pids() -> list[int]:
    return [pid for pid, count in COUNTS.items() for _ in range(count)]


@pytest.mark.parametrize("replicas", [1, 2])
def test_sampler_every_replica_slice_is_p_by_k(replicas):
    pids = np.array(_sampler_pids())
    sampler = PKSampler(
        pids, num_instances=4, num_ids_per_batch=3, num_replicas=replicas
    )
    assert sampler.global_batch_size == replicas * 12
    for epoch in range(3):
        batches = sampler.epoch_batches(epoch)
        assert batches.shape == (sampler.steps_per_epoch, replicas * 12)
        for batch in batches:
            for part in batch.reshape(replicas, 12):
                _assert_pk(pids[part], 3, 4)


def test_sampler_small_identities_sampled_with_replacement():
    pids = np.array(_sampler_pids())
    sampler = PKSampler(pids, num_instances=4, num_ids_per_batch=3, seed=1)
    seen = {11: 0, 22: 0, 33: 0}
    for epoch in range(4):
        for batch in sampler.epoch_batches(epoch):
            for chunk in batch.reshape(3, 4):
                pid = pids[chunk[0]]
                own = set(np.flatnonzero(pids == pid))
                assert set(chunk) <= own
                if len(own) >= 4:
                    assert len(set(chunk)) == 4  # no repeats where avoidable
                else:
                    assert set(chunk) == own  # all its images, some repeated
                    seen[pid] += 1
    assert all(seen.values())


def test_sampler_is_reproducible():
    pids = _sampler_pids()
    a = PKSampler(pids, 2, 3, seed=5).epoch_batches(0)
    b = PKSampler(pids, 2, 3, seed=5).epoch_batches(0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, PKSampler(pids, 2, 3, seed=6).epoch_batches(0))
    assert not np.array_equal(a, PKSampler(pids, 2, 3, seed=5).epoch_batches(1))


def test_sampler_epoch_is_one_pass():
    # 12 identities x K images: an epoch uses every image exactly once.
    pids = np.repeat(np.arange(12), 4)
    sampler = PKSampler(pids, num_instances=4, num_ids_per_batch=3, seed=3)
    assert sampler.steps_per_epoch == 4
    for epoch in range(3):
        flat = np.sort(sampler.epoch_batches(epoch).ravel())
        np.testing.assert_array_equal(flat, np.arange(48))
    # Uneven identities: len // batch steps, all identities used, and a few epochs
    # reach every image.
    uneven = PKSampler(_sampler_pids(), num_instances=2, num_ids_per_batch=3)
    assert uneven.steps_per_epoch == 21 // 6
    seen = set()
    for epoch in range(6):
        seen |= set(uneven.epoch_batches(epoch).ravel())
    assert seen == set(range(21))
    assert PKSampler([1, 1, 2], 2, 2).steps_per_epoch == 1


def test_sampler_needs_p_identities():
    with pytest.raises(ValueError, match="only 2"):
        PKSampler([1, 1, 2, 2], num_instances=2, num_ids_per_batch=3)


# ---------------------------------------------------------------- train pipeline


def test_train_batches_structure_and_labels(dataset):
    ds, steps = build_train_dataset(dataset, _cfg(), num_replicas=2)
    assert steps == max(1, 21 // 12)
    label_of = pid_label_map(dataset)
    assert label_of == {11: 0, 22: 1, 33: 2, 44: 3, 55: 4, 66: 5}
    pid_of = {v: k for k, v in label_of.items()}
    for images, targets in ds.take(3):
        assert images.shape == (12, *SIZE, 3) and images.dtype == tf.float32
        assert set(targets) == {"pid", "camid", "attributes", "pattern"}
        for key in targets:
            assert targets[key].dtype == tf.int32
        assert targets["attributes"].shape == (12, 2)
        x = images.numpy()
        assert (x.min(axis=(0, 1, 2)) >= LOW - 1e-5).all()
        assert (x.max(axis=(0, 1, 2)) <= HIGH + 1e-5).all()
        labels = targets["pid"].numpy()
        for part in labels.reshape(2, 6):
            _assert_pk(part, 3, 2)
        for label, attrs, pattern in zip(
            labels,
            targets["attributes"].numpy(),
            targets["pattern"].numpy(),
            strict=True,
        ):
            assert tuple(attrs) == ATTRIBUTES[pid_of[label]]
            assert pattern == pattern_index(ATTRIBUTES[pid_of[label]], NUM_CLASSES)


def test_pattern_index_column():
    records = [
        Record(f"/x/{i}.jpg", 1, 0, attrs, "train")
        for i, attrs in enumerate([(0, 0), (2, 1), (1, -1), (-1, 0)])
    ]
    cols = label_arrays(records, NUM_CLASSES)
    np.testing.assert_array_equal(cols["pattern"], [0, 5, -1, -1])
    with pytest.raises(DataError, match="/x/bad.jpg"):
        label_arrays([Record("/x/bad.jpg", 1, 0, (0,), "train")], NUM_CLASSES)
    with pytest.raises(DataError, match="/x/big.jpg"):
        label_arrays([Record("/x/big.jpg", 1, 0, (3, 0), "train")], NUM_CLASSES)


def test_train_stream_is_reproducible(dataset):
    def first(seed, offset=0):
        ds, _ = build_train_dataset(dataset, _cfg(seed=seed), epoch_seed_offset=offset)
        return [(x.numpy(), y["pid"].numpy()) for x, y in ds.take(4)]

    a, b = first(0), first(0)
    for (xa, pa), (xb, pb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(pa, pb)
    c = first(1)
    assert any(
        not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True)
    )
    # A run resumed at epoch 1 continues the stream of the full run.
    steps = build_train_dataset(dataset, _cfg())[1]
    resumed = first(0, offset=1)
    np.testing.assert_array_equal(resumed[0][0], a[steps][0])


def test_train_without_augmentation_matches_inference_preprocessing(dataset):
    cfg = _cfg(augment=_no_augment())
    ds, _ = build_train_dataset(dataset, cfg)
    pid_of = {v: k for k, v in pid_label_map(dataset).items()}
    images, targets = next(iter(ds))
    for image, label in zip(images.numpy(), targets["pid"].numpy(), strict=True):
        # The identity's PNG or its JPEG (lossy, so a little different).
        candidates = [
            preprocess_for_inference(read_image(r.path), SIZE).numpy()
            for r in dataset.train
            if r.pid == pid_of[label]
        ]
        assert min(np.abs(image - c).max() for c in candidates) < 1e-5


def test_erasing_fill_mean_is_zero_after_normalisation(dataset):
    aug = AugmentConfig(flip_prob=0.0, zoom_prob=0.0, erasing_prob=1.0)
    ds, _ = build_train_dataset(dataset, _cfg(augment=aug), erasing_fill="mean")
    images, _ = next(iter(ds))
    zero = np.all(np.abs(images.numpy()) < 1e-5, axis=-1)
    fraction = zero.mean(axis=(1, 2))
    assert (fraction >= 0.02 - 1e-6).all() and (fraction < 0.45).all()
    with pytest.raises(ValueError, match="erasing_fill"):
        build_train_dataset(dataset, _cfg(), erasing_fill="noise")


# ---------------------------------------------------------------- augmentations


def _image(h=24, w=32) -> tf.Tensor:
    return tf.constant(np.random.default_rng(0).uniform(0, 255, (h, w, 3)), tf.float32)


def test_flip_flips():
    image = _image()
    seed = tf.constant([1, 2], tf.int64)
    flipped = augment.random_flip(image, seed, prob=1.0)
    np.testing.assert_array_equal(flipped.numpy(), image.numpy()[:, ::-1])
    np.testing.assert_array_equal(augment.random_flip(image, seed, 0.0), image)
    np.testing.assert_array_equal(flip_horizontal(image), image.numpy()[:, ::-1])


def test_zoom_keeps_a_window():
    image = _image(40, 40)
    for i in range(20):
        seed = tf.constant([i, 7], tf.int64)
        window = augment.random_zoom_crop(image, seed, prob=1.0, min_area=0.64)
        h, w = window.shape[:2]
        assert 0.64 * 0.8 <= h * w / 1600 <= 1.0
        found = [
            (y, x)
            for y in range(41 - h)
            for x in range(41 - w)
            if np.array_equal(image.numpy()[y : y + h, x : x + w], window.numpy())
        ]
        assert found
    unchanged = augment.random_zoom_crop(image, seed, prob=0.0, min_area=0.64)
    np.testing.assert_array_equal(unchanged, image)


def test_erasing_changes_one_rectangle():
    image = _image(32, 32)
    changed = 0
    for i in range(10):
        seed = tf.constant([i, 3], tf.int64)
        out = augment.random_erasing(image, seed, 1.0, (0.02, 0.4), 0.3).numpy()
        assert ((out >= 0) & (out <= 255)).all()
        diff = np.any(out != image.numpy(), axis=-1)
        if diff.any():
            changed += 1
            ys, xs = np.nonzero(diff)
            box = diff[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            assert box.mean() > 0.9  # a rectangle (a few random values may match)
            assert 0.02 * 0.8 <= box.size / 1024 <= 0.4 * 1.2
        again = augment.random_erasing(image, seed, 1.0, (0.02, 0.4), 0.3)
        np.testing.assert_array_equal(out, again)
    assert changed >= 9
    untouched = augment.random_erasing(image, seed, 0.0, (0.02, 0.4), 0.3)
    np.testing.assert_array_equal(untouched, image)


def test_normalize_bounds():
    pixels = tf.constant([[[0.0, 0.0, 0.0], [255.0, 255.0, 255.0]]])
    out = normalize(pixels).numpy()
    np.testing.assert_allclose(out[0, 0], LOW, rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], HIGH, rtol=1e-5)


# ------------------------------------------------------------------ eval / serve


def test_eval_keeps_order_and_last_partial_batch(dataset):
    records = dataset.train[:7]
    ds = build_eval_dataset(records, _cfg(test_batch_size=3), NUM_CLASSES)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    index = np.concatenate([t["index"].numpy() for _, t in batches])
    np.testing.assert_array_equal(index, np.arange(7))
    pids = np.concatenate([t["pid"].numpy() for _, t in batches])
    np.testing.assert_array_equal(pids, [r.pid for r in records])
    assert set(batches[0][1]) >= {"index", "pid", "camid", "attributes"}
    images = np.concatenate([b[0].numpy() for b in batches])
    for image, r in zip(images, records, strict=True):
        expected = preprocess_for_inference(read_image(r.path), SIZE).numpy()
        np.testing.assert_allclose(image, expected, atol=1e-6)
    flipped = build_eval_dataset(
        records, _cfg(test_batch_size=3), NUM_CLASSES, flip=True
    )
    mirrored = np.concatenate([b[0].numpy() for b in flipped])
    np.testing.assert_allclose(mirrored, images[:, :, ::-1], atol=1e-6)


def test_preprocess_image_bytes_in_tf_function(dataset):
    paths = [dataset.train[0].path, dataset.train[2].path]  # a PNG and a JPEG
    blobs = [open(p, "rb").read() for p in paths]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(contents):
        return preprocess_image_bytes(contents, (16, 24))

    out = serve(tf.constant(blobs))
    assert out.shape == (2, 16, 24, 3)
    for image, blob in zip(out.numpy(), blobs, strict=True):
        np.testing.assert_allclose(
            image, decode_and_preprocess(blob, (16, 24)), atol=1e-6
        )


@pytest.mark.parametrize("kind", ["empty", "text", "truncated_jpeg", "truncated_png"])
def test_unreadable_image_error_names_the_path(dataset, tmp_path, kind):
    good = dataset.train[2].path if kind == "truncated_jpeg" else dataset.train[0].path
    data = {
        "empty": b"",
        "text": b"this is not an image",
        "truncated_jpeg": open(good, "rb").read()[:-40],
        "truncated_png": open(good, "rb").read()[:-20],
    }[kind]
    path = str(tmp_path / f"broken_{kind}.jpg")
    with open(path, "wb") as fh:
        fh.write(data)
    bad = [dataset.train[0], Record(path, 11, 0, (0, 1), "query")]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"broken_{kind}.jpg"):
        list(build_eval_dataset(bad, _cfg(), NUM_CLASSES))


def test_train_error_names_the_path(dataset, tmp_path):
    path = str(tmp_path / "broken.png")
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
    train = dataset.train + [Record(path, 77, 0, (0, 0), "train")]
    ds, _ = build_train_dataset(dataclasses.replace(dataset, train=train), _cfg())
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.png"):
        for _ in ds.take(30):
            pass


@pytest.mark.parametrize(
    "fmt, options, mode",
    [
        ("JPEG", {}, "RGB"),
        ("PNG", {}, "RGB"),
        ("GIF", {}, "RGB"),
        ("BMP", {}, "RGB"),
        ("WEBP", {}, "RGB"),  # lossy: 'VP8 ' chunk
        ("WEBP", {"lossless": True}, "RGB"),  # 'VP8L'
        ("WEBP", {}, "RGBA"),  # lossy with alpha: 'VP8X'
    ],
)
def test_header_pixels_reads_every_supported_format(tmp_path, fmt, options, mode):
    """The pixel cap reads width x height from the header alone, WebP included."""
    import io

    pixels = np.random.default_rng(0).integers(0, 255, (37, 53, len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, fmt, **options)
    assert int(header_pixels(tf.constant(buf.getvalue()))) == 37 * 53
