"""The strong-baseline heads (``model.head``): GeM pooling, the BNNeck, no-FC heads,
the CircleSoftmax classifier and its identity loss, each against NumPy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from anet_tf import losses
from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.model.anet import build_anet
from anet_tf.model.layers import GeneralizedMeanPooling
from anet_tf.model.layers import ReidHead


def _map(seed=0, shape=(3, 4, 5, 6)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _np_gem(x, p, eps=1e-6):
    return np.mean(np.maximum(x, eps) ** p, axis=(1, 2)) ** (1.0 / p)


def _np_normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _np_circle(cos, labels, s, m):
    onehot = np.eye(cos.shape[1])[labels]
    alpha_p = np.maximum(1 + m - cos, 0)
    alpha_n = np.maximum(cos + m, 0)
    return s * (onehot * alpha_p * (cos - (1 - m)) + (1 - onehot) * alpha_n * (cos - m))


def _np_ce_smooth(logits, labels, eps):
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    target = (1 - eps) * np.eye(logits.shape[1])[labels] + eps / logits.shape[1]
    return -(target * log_p).sum(1)


# ------------------------------------------------------------------------- GeM


@pytest.mark.parametrize("p", [1.0, 3.0, 4.5])
def test_gem_equals_numpy_and_p_one_is_average_pooling(p):
    x = _map(1)
    gem = GeneralizedMeanPooling(p)
    np.testing.assert_allclose(gem(x), _np_gem(x, p), rtol=1e-5)
    if p == 1.0:
        np.testing.assert_allclose(gem(x), np.maximum(x, 1e-6).mean((1, 2)), rtol=1e-5)


def test_gem_does_not_overflow_on_large_maps():
    x = np.full((2, 3, 3, 4), 1e13, "float32")
    x[0, 0, 0, 0] = 2e13
    y = np.asarray(GeneralizedMeanPooling(3.0)(x))
    assert np.isfinite(y).all()
    want = ((2e13**3 + 8 * 1e13**3) / 9) ** (1 / 3)
    np.testing.assert_allclose(y[0, 0], want, rtol=1e-5)
    np.testing.assert_allclose(y[1], 1e13, rtol=1e-6)


def test_gem_p_is_learned():
    x = np.abs(_map(2)) + 0.1
    gem = GeneralizedMeanPooling(3.0)
    gem.build(x.shape)
    assert [w.name for w in gem.trainable_weights] == ["p"]
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(gem(x))
    (grad,) = tape.gradient(y, gem.trainable_weights)
    # d/dp of the power mean at p = 3 by central differences in NumPy.
    h = 1e-3
    want = (_np_gem(x, 3 + h).sum() - _np_gem(x, 3 - h).sum()) / (2 * h)
    np.testing.assert_allclose(float(grad), want, rtol=1e-2)


def test_gem_refuses_a_non_positive_p():
    with pytest.raises(ValueError, match="p > 0"):
        GeneralizedMeanPooling(0.0)


# ---------------------------------------------------------------------- ReidHead


def test_head_without_fc_returns_the_pooled_map():
    x = _map(3)
    head = ReidHead(0, 7)
    feature, logits = head(x)
    np.testing.assert_allclose(feature, x.mean((1, 2)), rtol=1e-6)
    assert logits.shape == (3, 7)
    assert head.fc is None
    assert head.compute_output_shape(x.shape) == ((3, 6), (3, 7))


def test_bnneck_has_no_shift_and_feeds_feature_and_classifier():
    x = _map(4)
    head = ReidHead(5, 4, neck="bnneck")
    head(x)
    names = sorted(w.name for w in head.bnneck.weights)
    assert "beta" not in names and "gamma" in names
    rng = np.random.default_rng(5)
    gamma = rng.uniform(0.5, 2, 5).astype("float32")
    mean = rng.normal(size=5).astype("float32")
    var = rng.uniform(0.5, 2, 5).astype("float32")
    head.bnneck.set_weights([gamma, mean, var])
    feature, logits = head(x, training=False)
    W, b = head.fc.get_weights()
    pre = x.mean((1, 2)) @ W + b
    after = (pre - mean) / np.sqrt(var + 1e-5) * gamma
    np.testing.assert_allclose(feature, after, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, after @ head.classifier.get_weights()[0], rtol=1e-4, atol=1e-5)
    # Training mode normalises with the batch statistics.
    feature_train, _ = head(x, training=True)
    batch = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + 1e-5) * gamma
    np.testing.assert_allclose(feature_train, batch, rtol=1e-3, atol=1e-4)


def test_circle_head_gives_cosines():
    x = _map(6)
    head = ReidHead(0, 9, pooling="gem", classifier="circle")
    feature, cos = head(x)
    np.testing.assert_allclose(feature, _np_gem(x, 3.0), rtol=1e-5)
    W = head.classifier.get_weights()[0]
    want = _np_normalize(np.asarray(feature), 1) @ _np_normalize(W, 0)
    np.testing.assert_allclose(cos, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(cos) <= 1 + 1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(pooling="gem", gem_p=2.5, neck="bnneck", classifier="circle"),
        dict(pooling="avg", neck="none", classifier="circle"),
    ],
)
def test_strong_head_config_round_trip(kwargs):
    x = _map(7)
    head = ReidHead(0, 5, **kwargs)
    before = head(x)
    config = head.get_config()
    clone = ReidHead.from_config(config)
    clone(x)
    clone.set_weights(head.get_weights())
    for a, b in zip(before, clone(x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert clone.get_config() == config


@pytest.mark.parametrize("arg", ["pooling", "neck", "classifier"])
def test_head_refuses_unknown_switch_values(arg):
    with pytest.raises(ValueError, match=arg):
        ReidHead(4, 3, **{arg: "nope"})


# ------------------------------------------------------------ CircleSoftmax loss


def test_circle_logits_equal_numpy_and_alphas_are_constants():
    rng = np.random.default_rng(8)
    cos = rng.uniform(-1, 1, (6, 5)).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 0])
    got = losses.circle_logits(cos, labels, 64.0, 0.35)
    np.testing.assert_allclose(got, _np_circle(cos, labels, 64.0, 0.35), rtol=1e-5, atol=1e-4)
    # FastReID detaches alpha_p and alpha_n: the gradient is scale * alpha.
    c = tf.constant(cos)
    with tf.GradientTape() as tape:
        tape.watch(c)
        y = tf.reduce_sum(losses.circle_logits(c, labels, 64.0, 0.35))
    onehot = np.eye(5)[labels]
    want = 64 * (onehot * np.maximum(1.35 - cos, 0) + (1 - onehot) * np.maximum(cos + 0.35, 0))
    np.testing.assert_allclose(tape.gradient(y, c), want, rtol=1e-5)


def test_circle_logits_refuse_bad_scale_or_margin():
    with pytest.raises(ValueError, match="margin"):
        losses.circle_logits(np.zeros((2, 3), "float32"), np.zeros(2, "int32"), 64.0, 1.0)
    with pytest.raises(ValueError, match="scale"):
        losses.circle_logits(np.zeros((2, 3), "float32"), np.zeros(2, "int32"), 0.0, 0.3)


def _batch(seed=9, b=8, c=6, ids=4):
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(ids), b // ids)
    f = rng.normal(size=(b, c)).astype("float32")
    cos = rng.uniform(-1, 1, (b, ids)).astype("float32")
    return {"f": f, "f_logits": cos}, {"pid": pid}


def test_identity_loss_of_a_circle_head_is_ce_of_circle_logits():
    outputs, targets = _batch()
    terms = losses.compute_losses(
        outputs, targets, attribute_names=[], variant="baseline", stage=1,
        classifier="circle", circle_scale=32.0, circle_margin=0.25, label_smoothing=0.1,
    )
    logits = _np_circle(outputs["f_logits"], targets["pid"], 32.0, 0.25)
    want = _np_ce_smooth(logits, targets["pid"], 0.1).mean()
    np.testing.assert_allclose(float(terms["id_f"]), want, rtol=1e-5)
    linear = losses.compute_losses(
        outputs, targets, attribute_names=[], variant="baseline", stage=1
    )
    assert not np.isclose(float(linear["id_f"]), want)


def test_loss_kwargs_take_the_classifier_from_the_head_config():
    cfg = load_config(
        "synthetic",
        ["model.head.classifier=circle", "model.head.circle_scale=16", "model.head.circle_margin=0.2"],
    )
    kwargs = losses.loss_kwargs_from_config(cfg.loss, cfg.model.head)
    assert (kwargs["classifier"], kwargs["circle_scale"], kwargs["circle_margin"]) == ("circle", 16.0, 0.2)


# --------------------------------------------------------------- whole network


@pytest.mark.parametrize("variant", ["baseline", "van", "anet"])
def test_every_variant_builds_with_the_strong_heads(variant):
    head = dict(pooling="gem", neck="bnneck", classifier="circle")
    net = build_anet(
        num_ids=5, attribute_names=["color", "type"], num_classes=[3, 4], variant=variant,
        backbone="resnet18", base_width=4, s_f=0, s_a=8, s_j=0, image_size=(32, 32),
        head=head,
    )
    out = net(np.zeros((2, 32, 32, 3), "float32"))
    c = 8 * 4  # ResNet-18's output channels at base width 4
    assert out["f"].shape == (2, c)
    assert out["f_logits"].shape == (2, 5)
    if variant == "anet":
        assert out["j"].shape == (2, c)
    p_weights = [w for w in net.trainable_weights if w.name == "p"]
    assert len(p_weights) == (2 if variant == "anet" else 1)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.head.gem_p=0", "model.head.gem_p"),
        ("model.head.circle_margin=1.5", "model.head.circle_margin"),
        ("model.head.circle_scale=-1", "model.head.circle_scale"),
        ("model.head.pooling=max", "model.head.pooling"),
        ("model.s_f=-1", "model.s_f"),
    ],
)
def test_bad_head_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic", [override])


def test_default_head_is_the_papers():
    cfg = load_config("synthetic")
    h = cfg.model.head
    assert (h.pooling, h.neck, h.classifier) == ("avg", "none", "linear")
    net = build_anet(
        num_ids=5, attribute_names=["color"], num_classes=[3], variant="baseline",
        backbone="resnet18", base_width=4, s_f=6, image_size=(32, 32),
    )
    head = net.get_layer("f_head")
    assert head.pool is None and head.bnneck is None
    assert sorted(w.path.split("/", 1)[1] for w in head.weights) == [
        "classifier/kernel", "fc/bias", "fc/kernel",
    ]
    keras.backend.clear_session()
