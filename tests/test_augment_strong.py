"""FastReID's strong-baseline augmentation: mean-filled erasing, pad + random crop,
AutoAugment (its operations against PIL, its policy, its seeds), their place in the
training pipeline, and that the defaults leave the paper's pipeline unchanged."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from anet_tf.config import AugmentConfig
from anet_tf.config import DataConfig
from anet_tf.data import augment
from anet_tf.data import autoaugment as aa
from anet_tf.data.decode import read_image
from anet_tf.data.pipeline import build_train_dataset
from anet_tf.data.preprocessing import IMAGENET_MEAN
from anet_tf.data.preprocessing import normalize
from anet_tf.data.preprocessing import resize
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.sampler import PKSampler

SIZE = (32, 24)
MEAN_PIXEL = np.float32(255.0) * np.asarray(IMAGENET_MEAN, np.float32)
OFF = dict(flip_prob=0.0, zoom_prob=0.0, erasing_prob=0.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ReidDataset:
    """4 identities x 3 lossless images of different sizes (noise: no two equal)."""
    root = tmp_path_factory.mktemp("strong")
    rng = np.random.default_rng(7)
    records = []
    for pid in range(4):
        for j in range(3):
            path = os.path.join(root, f"{pid}_{j}.png")
            shape = (40 + 5 * j, 30 + 4 * pid, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
            records.append(Record(path, pid, j, (0, 0), "train"))
    return ReidDataset("strong", str(root), ["a", "b"], [["x"], ["y"]], train=records)


def _cfg(augment: AugmentConfig, seed: int = 3) -> DataConfig:
    return DataConfig(
        image_size=SIZE, batch_size=4, num_instances=2, seed=seed, augment=augment
    )


def _batches(dataset, cfg, n=2, **kwargs) -> list[np.ndarray]:
    ds, _ = build_train_dataset(dataset, cfg, **kwargs)
    return [x.numpy() for x, _ in ds.take(n)]


def _expected(dataset, cfg, n, image_fn) -> list[np.ndarray]:
    """The batches ``build_train_dataset`` must yield, recomputed image by image from
    the sampler and the per-image seed (data.seed, epoch, step, position)."""
    sampler = PKSampler(
        [r.pid for r in dataset.train],
        cfg.num_instances,
        cfg.num_ids_per_batch,
        seed=cfg.seed,
    )
    out = []
    for epoch in range(n):
        for step, indices in enumerate(sampler.iter_epoch(epoch)):
            images = []
            for position, index in enumerate(indices):
                s = tf.constant([cfg.seed, epoch], tf.int64)
                s = tf.random.experimental.stateless_fold_in(
                    s, tf.constant(step, tf.int64)
                )
                s = tf.random.experimental.stateless_fold_in(
                    s, tf.constant(position, tf.int64)
                )
                image = read_image(dataset.train[index].path)
                images.append(normalize(image_fn(image, s, cfg.augment)).numpy())
            out.append(np.stack(images))
            if len(out) == n:
                return out
    return out


def _paper_image(image, image_seed, a):
    """The paper's pipeline as it was before FastReID's augmentations existed."""
    zoom, flip, erase = tf.unstack(
        tf.random.experimental.stateless_split(image_seed, 3)
    )
    image = augment.random_zoom_crop(image, zoom, a.zoom_prob, a.zoom_min_area)
    image = augment.random_flip(resize(image, SIZE), flip, a.flip_prob)
    return augment.random_erasing(
        image, erase, a.erasing_prob, a.erasing_area, a.erasing_aspect
    )


def _strong_image(image, image_seed, a):
    """The documented order: AutoAugment, zoom, resize, flip, pad + crop, erasing."""
    zoom, flip, erase, pad, auto = tf.unstack(
        tf.random.experimental.stateless_split(image_seed, 5)
    )
    image = aa.auto_augment(image, auto, a.autoaugment_prob)
    image = augment.random_zoom_crop(image, zoom, a.zoom_prob, a.zoom_min_area)
    image = augment.random_flip(resize(image, SIZE), flip, a.flip_prob)
    image = augment.random_pad_crop(image, pad, a.pad)
    fill = MEAN_PIXEL if a.erasing_fill == "mean" else None
    return augment.random_erasing(
        image, erase, a.erasing_prob, a.erasing_area, a.erasing_aspect, fill=fill
    )


# ------------------------------------------------------------ the pipeline


def test_seed_split_keeps_the_paper_augmentations_seeds():
    seed = tf.constant([3, 7], tf.int64)
    three = tf.random.experimental.stateless_split(seed, 3).numpy()
    five = tf.random.experimental.stateless_split(seed, 5).numpy()
    np.testing.assert_array_equal(five[:3], three)


def test_default_config_batches_are_the_papers_pipeline(dataset):
    cfg = _cfg(AugmentConfig())
    assert (
        cfg.augment.erasing_fill,
        cfg.augment.pad,
        cfg.augment.autoaugment_prob,
    ) == (
        "random",
        0,
        0.0,
    )
    for got, want in zip(
        _batches(dataset, cfg, 3), _expected(dataset, cfg, 3, _paper_image), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_strong_batches_follow_the_documented_order(dataset):
    strong = AugmentConfig(erasing_fill="mean", pad=3, autoaugment_prob=1.0)
    cfg = _cfg(strong, seed=5)
    got = _batches(dataset, cfg, 4)
    for g, want in zip(got, _expected(dataset, cfg, 4, _strong_image), strict=True):
        np.testing.assert_array_equal(g, want)
    # A run resumed at epoch 1 draws what the full run drew (3 steps an epoch).
    resumed = _batches(dataset, cfg, 1, epoch_seed_offset=1)[0]
    np.testing.assert_array_equal(resumed, got[len(dataset.train) // cfg.batch_size])


def test_erasing_fill_follows_the_config(dataset):
    aug = AugmentConfig(**{**OFF, "erasing_prob": 1.0}, erasing_fill="mean")
    images = _batches(dataset, _cfg(aug), 1)[0]
    zero = np.all(np.abs(images) < 1e-5, axis=-1)  # the mean pixel, normalised
    assert (zero.mean(axis=(1, 2)) >= 0.02 - 1e-6).all()
    # The argument still overrides the config; random noise is never the mean.
    images = _batches(dataset, _cfg(aug), 1, erasing_fill="random")[0]
    assert not np.all(np.abs(images) < 1e-5, axis=-1).any()


def test_erased_rectangle_is_exactly_the_mean_pixel():
    # Integer pixels, so none equals the (fractional) mean pixel by chance.
    image = tf.constant(
        np.random.default_rng(1).integers(0, 256, (30, 40, 3)), tf.float32
    )
    for i in range(20):
        seed = tf.constant([i, 9], tf.int64)
        out = augment.random_erasing(
            image, seed, 1.0, (0.02, 0.4), 0.3, fill=MEAN_PIXEL
        ).numpy()
        erased = np.all(out == MEAN_PIXEL, axis=-1)
        rows, cols = (
            np.nonzero(erased.any(axis=1))[0],
            np.nonzero(erased.any(axis=0))[0],
        )
        assert erased[
            rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1
        ].all()  # a full rectangle
        assert erased.sum() == len(rows) * len(cols)
        np.testing.assert_array_equal(out[~erased], image.numpy()[~erased])


def test_pad_crop_is_a_window_of_the_padded_image():
    h, w, pad = 6, 5, 2
    image = tf.constant(np.arange(1, h * w * 3 + 1).reshape(h, w, 3), tf.float32)
    padded = np.pad(image.numpy(), ((pad, pad), (pad, pad), (0, 0)))
    seen = set()
    for i in range(300):
        out = augment.random_pad_crop(image, tf.constant([i, 1], tf.int64), pad)
        assert out.shape == (h, w, 3) and out.dtype == tf.float32
        found = [
            (y, x)
            for y in range(2 * pad + 1)
            for x in range(2 * pad + 1)
            if np.array_equal(padded[y : y + h, x : x + w], out.numpy())
        ]
        assert len(found) == 1
        seen.add(found[0])
    # Every position of the window inside the padded image occurs, and no other.
    assert seen == {(y, x) for y in range(2 * pad + 1) for x in range(2 * pad + 1)}
    uint8 = tf.constant(np.full((h, w, 3), 7, np.uint8))
    shifted = augment.random_pad_crop(uint8, tf.constant([0, 3], tf.int64), 5)
    assert shifted.dtype == tf.uint8 and shifted.shape == (h, w, 3)


def test_pad_zero_is_a_no_op(dataset):
    image = tf.constant(np.random.default_rng(2).uniform(0, 255, (8, 9, 3)), tf.float32)
    assert augment.random_pad_crop(image, tf.constant([1, 2], tf.int64), 0) is image
    padded = AugmentConfig(**OFF, pad=4)
    plain = _batches(dataset, _cfg(AugmentConfig(**OFF, pad=0)), 2)
    moved = _batches(dataset, _cfg(padded), 2)
    assert plain[0].shape == moved[0].shape == (4, *SIZE, 3)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, moved, strict=True))


def test_autoaugment_prob_zero_leaves_images_untouched(dataset):
    image = tf.constant(
        np.random.default_rng(3).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    )
    for i in range(50):
        out = aa.auto_augment(image, tf.constant([i, 0], tf.int64), 0.0)
        np.testing.assert_array_equal(out.numpy(), image.numpy())
    off = _batches(dataset, _cfg(AugmentConfig(**OFF)), 2)
    zero = _batches(dataset, _cfg(AugmentConfig(**OFF, autoaugment_prob=0.0)), 2)
    for a, b in zip(off, zero, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_builds_its_training_data_from_the_config(
    make_tiny_cfg, tmp_path, monkeypatch
):
    """``fit`` passes ``data`` (with ``augment``) and no erasing override, so all
    three switches reach the pipeline."""
    from anet_tf.data import pipeline
    from anet_tf.training.fit import train

    calls = []

    class Stop(Exception):
        pass

    def record(dataset, cfg, **kwargs):
        calls.append((cfg, kwargs))
        raise Stop

    monkeypatch.setattr(pipeline, "build_train_dataset", record)
    cfg = make_tiny_cfg(
        "data.augment.erasing_fill=mean",
        "data.augment.pad=3",
        "data.augment.autoaugment_prob=0.2",
    )
    with pytest.raises(Stop):
        train(cfg, str(tmp_path / "run"), verbose=0)
    ((data_cfg, kwargs),) = calls
    assert data_cfg.augment == AugmentConfig(
        erasing_fill="mean", pad=3, autoaugment_prob=0.2
    )
    assert "erasing_fill" not in kwargs


# ------------------------------------------------------ AutoAugment operations


def _random_images():
    """Small uint8 images: noise over a random range and smooth fields."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(12):
        h, w = (int(v) for v in rng.integers(3, 20, 2))
        if i % 2:
            lo, hi = sorted(rng.integers(0, 256, 2))
            out.append(rng.integers(lo, hi + 1, (h, w, 3), dtype=np.uint8))
        else:
            coarse = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
            out.append(np.asarray(coarse.resize((w, h), Image.BILINEAR)))
    out.append(
        np.full((5, 4, 3), 77, np.uint8)
    )  # constant: AutoContrast/Equalize keep it
    return out


PIL_OPS = {
    "posterize": (lambda x: aa.posterize(x, 5), lambda im: ImageOps.posterize(im, 5)),
    "posterize4": (lambda x: aa.posterize(x, 4), lambda im: ImageOps.posterize(im, 4)),
    "solarize": (lambda x: aa.solarize(x, 102), lambda im: ImageOps.solarize(im, 102)),
    "invert": (aa.invert, ImageOps.invert),
    "autocontrast": (aa.auto_contrast, ImageOps.autocontrast),
    "equalize": (aa.equalize, ImageOps.equalize),
    **{
        f"{name}{f}": (
            lambda x, op=op, f=f: op(x, f),
            lambda im, enh=enh, f=f: enh(im).enhance(f),
        )
        for f in (0.1, 0.46, 0.82, 1.36, 1.54, 1.9)
        for name, op, enh in (
            ("color", aa.color, ImageEnhance.Color),
            ("contrast", aa.contrast, ImageEnhance.Contrast),
            ("sharpness", aa.sharpness, ImageEnhance.Sharpness),
        )
    },
}


@pytest.mark.parametrize("name", sorted(PIL_OPS))
def test_pixel_operations_match_pil(name):
    ours, pil = PIL_OPS[name]
    for pixels in _random_images():
        got = ours(tf.constant(pixels, tf.float32)).numpy()
        want = np.asarray(pil(Image.fromarray(pixels)), np.float32)
        np.testing.assert_array_equal(got, want)


def test_pixel_operations_hand_examples():
    x = tf.constant(
        [[[10, 20, 250], [40, 60, 200]], [[100, 130, 129], [160, 128, 0]]], tf.float32
    )
    np.testing.assert_array_equal(
        aa.posterize(x, 4).numpy().ravel(),
        [0, 16, 240, 32, 48, 192, 96, 128, 128, 160, 128, 0],
    )
    np.testing.assert_array_equal(
        aa.solarize(x, 128).numpy().ravel(),
        [10, 20, 5, 40, 60, 55, 100, 125, 126, 95, 127, 0],
    )
    # Red spans 10..160: (v - 10) * 255 / 150, truncated.
    np.testing.assert_array_equal(
        aa.auto_contrast(x).numpy()[..., 0].ravel(), [0, 51, 153, 255]
    )
    # Four distinct values: step = (4 - 1) // 255 = 0, so PIL leaves the channel as is.
    np.testing.assert_array_equal(aa.equalize(x).numpy(), x.numpy())
    grey = tf.constant([[[100.0, 100.0, 100.0]]])
    np.testing.assert_array_equal(aa.color(grey, 0.1).numpy(), grey.numpy())


def test_rotate_and_shear_hand_examples():
    rng = np.random.default_rng(4)
    square = rng.integers(0, 256, (7, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        aa.rotate(tf.constant(square), 90.0).numpy(), np.rot90(square)
    )
    np.testing.assert_array_equal(
        aa.rotate(tf.constant(square), -90.0).numpy(), np.rot90(square, -1)
    )
    np.testing.assert_array_equal(aa.rotate(tf.constant(square), 0.0).numpy(), square)
    turned = aa.rotate(tf.constant(square), 45.0).numpy()
    assert (turned[0, 0] == aa.FILL).all() and (turned[-1, -1] == aa.FILL).all()
    # Shear 2: output (x, y) takes input (x + 2 (y + 1/2), y) = (x + 2y + 1, y), whole
    # pixels, so no interpolation; grey where that falls outside.
    image = rng.integers(0, 256, (4, 12, 3)).astype(np.float32)
    want = np.full_like(image, aa.FILL)
    for y in range(4):
        for x in range(12):
            if x + 2 * y + 1 < 12:
                want[y, x] = image[y, x + 2 * y + 1]
    np.testing.assert_array_equal(aa.shear_x(tf.constant(image), 2.0).numpy(), want)


@pytest.mark.parametrize("degrees", [9.0, -27.0])
def test_rotate_is_close_to_pil(degrees):
    pixels = np.asarray(
        Image.fromarray(
            np.random.default_rng(5).integers(0, 256, (3, 3, 3), dtype=np.uint8)
        ).resize((14, 11), Image.BILINEAR)
    )
    ours = aa.rotate(tf.constant(pixels, tf.float32), degrees).numpy()
    pil = Image.fromarray(pixels).rotate(
        degrees, resample=Image.BILINEAR, fillcolor=(128,) * 3
    )
    diff = np.abs(ours - np.asarray(pil, np.float32))
    assert (
        np.median(diff) <= 1.0
    )  # interpolation rounding; PIL blends the border differently


def test_shear_is_close_to_pil():
    pixels = np.random.default_rng(6).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    for factor in (0.15, -0.3):
        ours = aa.shear_x(tf.constant(pixels, tf.float32), factor).numpy()
        pil = Image.fromarray(pixels).transform(
            (12, 9),
            Image.AFFINE,
            (1, factor, 0, 0, 1, 0),
            resample=Image.BILINEAR,
            fillcolor=(128,) * 3,
        )
        assert np.median(np.abs(ours - np.asarray(pil, np.float32))) <= 1.0


# ---------------------------------------------------------- AutoAugment policy


def test_imagenet_policy_and_magnitudes():
    policy = aa.IMAGENET_POLICY
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    names = {name for sub in policy for name, _, _ in sub}
    assert names == {
        "Posterize",
        "Solarize",
        "Invert",
        "AutoContrast",
        "Equalize",
        "Color",
        "Contrast",
        "Sharpness",
        "Rotate",
        "ShearX",
    }
    assert [aa.level_to_arg("Posterize", lv) for lv in (5, 6, 7, 8)] == [6, 6, 6, 7]
    assert [aa.level_to_arg("Solarize", lv) for lv in (3, 4, 5, 7, 8)] == [
        76,
        102,
        128,
        179,
        204,
    ]
    for name in ("Color", "Contrast", "Sharpness"):
        assert aa.level_to_arg(name, 0) == pytest.approx(0.1)
        assert aa.level_to_arg(name, 8) == pytest.approx(1.54)
    assert aa.level_to_arg("Rotate", 9) == pytest.approx(27.0)
    assert aa.level_to_arg("ShearX", 5) == pytest.approx(0.15)
    assert aa.level_to_arg("Equalize", 8) is None
    with pytest.raises(ValueError, match="Brightness"):
        aa.level_to_arg("Brightness", 5)


def test_every_sub_policy_runs_in_a_dataset_map():
    """Each of the 25 sub-policies, both operations applied, traced in tf.data."""
    pixels = np.asarray(
        Image.fromarray(
            np.random.default_rng(8).integers(0, 256, (3, 3, 3), dtype=np.uint8)
        ).resize((13, 17), Image.BILINEAR)
    )
    image = tf.constant(pixels)
    for sub in aa.IMAGENET_POLICY:
        sure = [tuple((name, 1.0, level) for name, _, level in sub)]
        ds = tf.data.Dataset.range(1).map(
            lambda i, sure=sure: aa.auto_augment(image, tf.stack([i, i]), 1.0, sure)
        )
        out = next(iter(ds))
        assert out.dtype == tf.uint8 and out.shape == pixels.shape
        want = tf.cast(image, tf.float32)
        negate = (
            tf.random.stateless_uniform(
                [2],
                tf.random.experimental.stateless_split(
                    tf.constant([0, 0], tf.int64), 4
                )[3],
            )
            < 0.5
        )
        for j, (name, _, level) in enumerate(sub):
            want = aa.apply_op(want, name, level, negate[j])
        np.testing.assert_array_equal(out.numpy(), want.numpy().astype(np.uint8))


def test_autoaugment_is_a_function_of_image_and_seed():
    image = tf.constant(
        np.random.default_rng(9).integers(0, 256, (15, 11, 3), dtype=np.uint8)
    )
    seeds = [tf.constant([i, 5], tf.int64) for i in range(40)]
    first = [aa.auto_augment(image, s, 1.0).numpy() for s in seeds]
    again = [aa.auto_augment(image, s, 1.0).numpy() for s in seeds]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Graph mode (the tf.data map) draws the same as eager mode.
    ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(
        lambda s: aa.auto_augment(image, s, 1.0),
        num_parallel_calls=2,
        deterministic=True,
    )
    for a, b in zip(first, ds, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    distinct = {a.tobytes() for a in first}
    assert len(distinct) > 10


def test_autoaugment_probabilities_and_signs():
    image = tf.constant(
        np.random.default_rng(10).integers(0, 256, (9, 9, 3), dtype=np.uint8)
    )
    x = image.numpy()
    seeds = [tf.constant([i, 11], tf.int64) for i in range(400)]
    # prob 0.5 of augmenting at all; the sub-policy always inverts.
    always = [(("Invert", 1.0, 0), ("Invert", 0.0, 0))]
    inverted = np.mean(
        [
            np.array_equal(aa.auto_augment(image, s, 0.5, always).numpy(), 255 - x)
            for s in seeds
        ]
    )
    assert 0.4 < inverted < 0.6
    # Each operation with its own probability: Invert at 0.3 -> about 30 %.
    some = [(("Invert", 0.3, 0), ("Invert", 0.0, 0))]
    inverted = np.mean(
        [
            np.array_equal(aa.auto_augment(image, s, 1.0, some).numpy(), 255 - x)
            for s in seeds
        ]
    )
    assert 0.2 < inverted < 0.4
    # Sub-policies are chosen uniformly; Rotate's sign is + or - with probability 1/2.
    two = [(("Invert", 1.0, 0),), (("Rotate", 1.0, 10),)]
    plus = aa.rotate(tf.cast(image, tf.float32), 30.0).numpy()
    minus = aa.rotate(tf.cast(image, tf.float32), -30.0).numpy()
    kinds = []
    for s in seeds[:200]:
        out = aa.auto_augment(image, s, 1.0, two).numpy()
        kinds.append(
            "invert"
            if np.array_equal(out, 255 - x)
            else "plus"
            if np.array_equal(out, plus)
            else "minus"
            if np.array_equal(out, minus)
            else "other"
        )
    counts = {k: kinds.count(k) for k in ("invert", "plus", "minus", "other")}
    assert counts["other"] == 0
    assert 70 < counts["invert"] < 130 and counts["plus"] > 30 and counts["minus"] > 30
