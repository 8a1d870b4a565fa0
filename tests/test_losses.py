"""Tests of anet_tf.losses against NumPy references and hand-computed tiny cases.

Most tests run in this process, on TensorFlow. The ``backend_run`` tests at the end
repeat the reference comparisons, gradient and stop-gradient checks on every
installed Keras backend (TensorFlow, and JAX when installed: ``pip install
"jax[cpu]"``), each in a fresh process running tests/loss_backend_probe.py, since
Keras picks its backend once per process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from anet_tf import losses
from anet_tf.config import LossConfig
from anet_tf.data.records import pattern_index

ATOL = 1e-5
ATTRIBUTES = ["color", "type"]
NUM_CLASSES = [5, 3]  # m_i of each attribute
NUM_IDS = 6  # identity classes of the fake classifiers
P, K = 4, 4
B = P * K


# ----------------------------------------------------------- NumPy references


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_ce_ls(logits, labels, epsilon):
    logp = np_log_softmax(logits)
    c = logp.shape[-1]
    out = []
    for row, label in zip(logp, labels, strict=True):
        target = np.full(c, epsilon / c)
        target[label] += 1.0 - epsilon
        out.append(-(target * row).sum())
    return np.array(out)


def np_attr_ce(logits, labels, epsilon=0.0):
    loss = np.zeros(len(labels))
    mask = np.zeros(len(labels))
    for i, label in enumerate(labels):
        if label >= 0:
            loss[i] = np_ce_ls(logits[i : i + 1], [label], epsilon)[0]
            mask[i] = 1.0
    return loss, mask


def np_masked_mean(values, mask):
    return float((values * mask).sum() / mask.sum()) if mask.sum() > 0 else 0.0


def np_distance(x, y=None, metric="euclidean"):
    x = np.asarray(x, np.float64)
    y = x if y is None else np.asarray(y, np.float64)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        yn = y / np.linalg.norm(y, axis=1, keepdims=True)
        return 1.0 - xn @ yn.T
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return np.sqrt(np.maximum(d2, 1e-12))


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_batch_hard(features, labels, margin, soft_margin):
    """Loop over anchors: farthest other same-label sample, closest other label."""
    dist = np_distance(features)
    n = len(labels)
    loss, pos_idx, neg_idx = np.zeros(n), np.zeros(n, int), np.zeros(n, int)
    for a in range(n):
        pos = [k for k in range(n) if labels[k] == labels[a] and k != a]
        neg = [k for k in range(n) if labels[k] != labels[a]]
        if pos:
            pos_idx[a] = max(pos, key=lambda k: dist[a, k])
            d_ap = dist[a, pos_idx[a]]
        else:
            pos_idx[a], d_ap = a, 0.0
        if not neg:
            neg_idx[a] = a
            continue
        neg_idx[a] = min(neg, key=lambda k: dist[a, k])
        d_an = dist[a, neg_idx[a]]
        loss[a] = (
            np_softplus(d_ap - d_an) if soft_margin else max(0, d_ap - d_an + margin)
        )
    return loss, pos_idx, neg_idx


def np_pattern_triplet(g, patterns, margin):
    dist = np_distance(g)
    n = len(patterns)
    loss, mask = np.zeros(n), np.zeros(n)
    for a in range(n):
        if patterns[a] < 0:
            continue
        pos = [k for k in range(n) if k != a and patterns[k] == patterns[a]]
        neg = [k for k in range(n) if patterns[k] >= 0 and patterns[k] != patterns[a]]
        if pos and neg:
            d_ap = max(dist[a, k] for k in pos)
            d_an = min(dist[a, k] for k in neg)
            loss[a], mask[a] = max(0.0, d_ap - d_an + margin), 1.0
    return loss, mask


def np_ac_id(ce_j, ce_f):
    return np_softplus(np.asarray(ce_j, np.float64) - np.asarray(ce_f, np.float64))


def np_ac_tri(f, j, pos_idx, neg_idx):
    f = np.asarray(f, np.float64)
    j = np.asarray(j, np.float64)

    def d(x, a, b):
        return math.sqrt(max(((x[a] - x[b]) ** 2).sum(), 1e-12))

    return np.array(
        [
            np_softplus(d(j, a, p) - d(f, a, p)) + np_softplus(d(f, a, q) - d(j, a, q))
            for a, (p, q) in enumerate(zip(pos_idx, neg_idx, strict=True))
        ]
    )


def np_compute_losses(outputs, targets, variant, stage, kw):
    """The terms and total of compute_losses, composed from the NumPy references."""
    pid = targets["pid"]
    ce_f = np_ce_ls(outputs["f_logits"], pid, kw["label_smoothing"])
    tri_f, _, _ = np_batch_hard(
        outputs["f"], pid, kw["triplet_margin"], kw["soft_margin"]
    )
    t = {"id_f": ce_f.mean(), "tri_f": tri_f.mean()}
    if variant == "baseline":
        t["total"] = t["id_f"] + t["tri_f"]
        return t
    for i, name in enumerate(ATTRIBUTES):
        loss, mask = np_attr_ce(
            outputs[f"a_{name}_logits"], targets["attributes"][:, i]
        )
        t[f"att_{name}"] = np_masked_mean(loss, mask)
    att = sum(t[f"att_{name}"] for name in ATTRIBUTES)
    l_van = t["tri_f"] + t["id_f"] + kw["lambda_a"] * att
    if variant == "van":
        t["total"] = l_van
        return t
    t["tri_g"] = np_masked_mean(
        *np_pattern_triplet(outputs["g"], targets["pattern"], kw["pattern_margin"])
    )
    ce_j = np_ce_ls(outputs["j_logits"], pid, kw["label_smoothing"])
    tri_j, pos_idx, neg_idx = np_batch_hard(
        outputs["j"], pid, kw["triplet_margin"], kw["soft_margin"]
    )
    t["id_j"], t["tri_j"] = ce_j.mean(), tri_j.mean()
    l_jm = t["tri_j"] + t["id_j"] + kw["lambda_g"] * t["tri_g"]
    if stage == 1:
        t["total"] = l_jm + kw["lambda_van"] * l_van
        return t
    t["total"] = l_jm + kw["lambda_van"] * kw["lambda_a"] * att
    if kw["use_ac"]:
        t["ac_id"] = np_ac_id(ce_j, ce_f).mean()
        t["ac_tri"] = np_ac_tri(outputs["f"], outputs["j"], pos_idx, neg_idx).mean()
        t["total"] += t["ac_id"] + t["ac_tri"]
    return t


# -------------------------------------------------------------------- fixtures


def pk_labels(p=P, k=K):
    return np.repeat(np.arange(p), k).astype(np.int32)


def fake_batch(seed=0, unknown_rows=(1, 6, 7)):
    """Random model outputs and targets of a P x K batch; some attributes unknown."""
    rng = np.random.default_rng(seed)
    pid = pk_labels()
    id_attrs = np.stack([rng.integers(0, m, P) for m in NUM_CLASSES], axis=1)
    attributes = id_attrs[pid].astype(np.int32)
    attributes[unknown_rows[0], 0] = -1
    attributes[list(unknown_rows[1:]), 1] = -1
    pattern = np.array(
        [pattern_index(tuple(row), NUM_CLASSES) for row in attributes], np.int32
    )
    outputs = {
        "f": rng.normal(size=(B, 8)).astype(np.float32),
        "f_logits": rng.normal(size=(B, NUM_IDS)).astype(np.float32),
        "g": rng.normal(size=(B, 6)).astype(np.float32),
        "j": rng.normal(size=(B, 8)).astype(np.float32),
        "j_logits": rng.normal(size=(B, NUM_IDS)).astype(np.float32),
    }
    for name, m in zip(ATTRIBUTES, NUM_CLASSES, strict=True):
        outputs[f"a_{name}"] = rng.normal(size=(B, 4)).astype(np.float32)
        outputs[f"a_{name}_logits"] = rng.normal(size=(B, m)).astype(np.float32)
    targets = {
        "pid": pid,
        "attributes": attributes,
        "pattern": pattern,
        "camid": rng.integers(0, 3, B).astype(np.int32),
    }
    return outputs, targets


def assert_no_gradient(grad):
    assert grad is None or not np.any(grad.numpy()), grad


def assert_finite(*tensors):
    for t in tensors:
        assert t is not None and np.all(np.isfinite(t.numpy())), t


# --------------------------------------------------------------- cross entropy


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_cross_entropy_label_smooth_matches_numpy(epsilon):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(B, 7)).astype(np.float32)
    labels = rng.integers(0, 7, B).astype(np.int32)
    got = losses.cross_entropy_label_smooth(logits, labels, epsilon)
    assert got.shape == (B,) and got.dtype == tf.float32
    np.testing.assert_allclose(got, np_ce_ls(logits, labels, epsilon), atol=ATOL)


def test_cross_entropy_label_smooth_by_hand():
    # Uniform logits over 4 classes: log p = -log 4 for every class and every eps.
    got = losses.cross_entropy_label_smooth(tf.zeros([1, 4]), [2], 0.1)
    np.testing.assert_allclose(got, [math.log(4.0)], atol=ATOL)
    # logits [0, log 3]: p = [1/4, 3/4]; eps=0.2 -> target [0.1, 0.9] for label 1.
    got = losses.cross_entropy_label_smooth([[0.0, math.log(3.0)]], [1], 0.2)
    want = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    np.testing.assert_allclose(got, [want], atol=ATOL)


def test_cross_entropy_float16_computed_in_float32():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(B, 5)).astype(np.float16)
    labels = rng.integers(0, 5, B)
    got = losses.cross_entropy_label_smooth(tf.constant(logits), labels)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(
        got, np_ce_ls(logits.astype(np.float64), labels, 0.1), atol=ATOL
    )


def test_cross_entropy_rejects_bad_epsilon():
    with pytest.raises(ValueError, match="epsilon=1.0"):
        losses.cross_entropy_label_smooth(tf.zeros([1, 3]), [0], 1.0)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_attribute_cross_entropy_matches_numpy(epsilon):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(B, 5)).astype(np.float32)
    labels = rng.integers(-1, 5, B).astype(np.int32)
    labels[:2] = [-1, 4]
    loss, mask = losses.attribute_cross_entropy(logits, labels, epsilon)
    want_loss, want_mask = np_attr_ce(logits, labels, epsilon)
    np.testing.assert_allclose(loss, want_loss, atol=ATOL)
    np.testing.assert_array_equal(mask, want_mask)
    assert mask.dtype == tf.float32
    np.testing.assert_allclose(
        losses.masked_mean(loss, mask), np_masked_mean(want_loss, want_mask), atol=ATOL
    )


def test_attribute_cross_entropy_unknown_rows_have_no_gradient():
    logits = tf.constant(np.random.default_rng(4).normal(size=(4, 3)), tf.float32)
    labels = tf.constant([0, -1, 2, -1])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss, mask = losses.attribute_cross_entropy(logits, labels)
        mean = losses.masked_mean(loss, mask)
    grad = tape.gradient(mean, logits).numpy()
    assert loss.numpy()[1] == 0.0 and loss.numpy()[3] == 0.0
    assert not np.any(grad[[1, 3]]) and np.all(np.any(grad[[0, 2]], axis=1))


def test_attribute_cross_entropy_all_unknown_is_exactly_zero():
    logits = tf.constant(np.random.default_rng(5).normal(size=(4, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss, mask = losses.attribute_cross_entropy(logits, tf.fill([4], -1))
        mean = losses.masked_mean(loss, mask)
    grad = tape.gradient(mean, logits)
    assert float(mean) == 0.0 and not np.any(loss.numpy()) and not np.any(mask.numpy())
    assert_finite(grad)
    assert not np.any(grad.numpy())


def test_attribute_cross_entropy_never_one_hots_an_unknown_label(monkeypatch):
    seen = []
    one_hot = losses.ops.one_hot

    def spy(indices, *args, **kwargs):
        seen.append(np.asarray(indices))
        return one_hot(indices, *args, **kwargs)

    monkeypatch.setattr(losses.ops, "one_hot", spy)
    losses.attribute_cross_entropy(tf.zeros([3, 4]), [-1, 3, -1])
    assert seen and all(np.all(s >= 0) for s in seen)


def test_masked_mean_by_hand_and_ignores_masked_non_finite_values():
    values = tf.constant([1.0, 2.0, np.nan, np.inf])
    mask = tf.constant([1.0, 1.0, 0.0, 0.0])
    with tf.GradientTape() as tape:
        tape.watch(values)
        mean = losses.masked_mean(values, mask)
    assert float(mean) == 1.5
    np.testing.assert_array_equal(tape.gradient(mean, values), [0.5, 0.5, 0.0, 0.0])
    assert float(losses.masked_mean(values, tf.zeros([4]))) == 0.0


# ------------------------------------------------------------------ distances


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distance_matches_numpy(metric):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(B, 8)).astype(np.float32)
    y = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(
        losses.pairwise_distance(x, metric=metric),
        np_distance(x, metric=metric),
        atol=ATOL,
    )
    got = losses.pairwise_distance(x, y, metric=metric)
    assert got.shape == (B, 5)
    np.testing.assert_allclose(got, np_distance(x, y, metric), atol=ATOL)


def test_pairwise_distance_by_hand():
    x = [[0.0, 0.0], [3.0, 4.0]]
    np.testing.assert_allclose(
        losses.pairwise_distance(x), [[1e-6, 5.0], [5.0, 1e-6]], atol=1e-7
    )
    np.testing.assert_allclose(
        losses.pairwise_distance(
            [[1.0, 0.0]], [[0.0, 2.0], [-3.0, 0.0], [5.0, 0.0]], "cosine"
        ),
        [[1.0, 2.0, 0.0]],
        atol=ATOL,
    )


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distance_gradient_finite_for_identical_features(metric):
    x = tf.constant([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        dist = losses.pairwise_distance(x, metric=metric)
    assert_finite(dist, tape.gradient(dist, x))


def test_pairwise_distance_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric='manhattan'"):
        losses.pairwise_distance(tf.zeros([2, 2]), metric="manhattan")


# ------------------------------------------------------------------- triplets


@pytest.mark.parametrize("soft_margin", [False, True])
def test_batch_hard_triplet_matches_numpy(soft_margin):
    rng = np.random.default_rng(7)
    features = rng.normal(size=(B, 8)).astype(np.float32)
    labels = pk_labels()
    loss, pos_idx, neg_idx = losses.batch_hard_triplet(
        features, labels, 0.3, soft_margin
    )
    want_loss, want_pos, want_neg = np_batch_hard(features, labels, 0.3, soft_margin)
    assert loss.dtype == tf.float32 and pos_idx.dtype == neg_idx.dtype == tf.int32
    np.testing.assert_allclose(loss, want_loss, atol=ATOL)
    np.testing.assert_array_equal(pos_idx, want_pos)
    np.testing.assert_array_equal(neg_idx, want_neg)
    assert np.any(want_loss > 0)


def test_batch_hard_triplet_by_hand_1d():
    # Distances: 0-1: 1, 0-2: 3, 0-3: 7, 1-2: 2, 1-3: 6, 2-3: 4.
    features = [[0.0], [1.0], [3.0], [7.0]]
    loss, pos_idx, neg_idx = losses.batch_hard_triplet(features, [0, 0, 1, 1], 0.3)
    np.testing.assert_allclose(loss, [0.0, 0.0, 2.3, 0.0], atol=ATOL)
    np.testing.assert_array_equal(pos_idx, [1, 0, 3, 2])
    np.testing.assert_array_equal(neg_idx, [2, 2, 1, 1])
    soft, _, _ = losses.batch_hard_triplet(features, [0, 0, 1, 1], soft_margin=True)
    np.testing.assert_allclose(
        soft, [math.log1p(math.exp(d)) for d in (-2.0, -1.0, 2.0, -2.0)], atol=ATOL
    )


def test_batch_hard_triplet_anchor_without_positive_uses_itself():
    # Anchors 0 and 3 are alone: d_ap = 0, pos_idx = self; margin 2.
    features = [[0.0], [1.0], [3.0], [7.0]]
    loss, pos_idx, neg_idx = losses.batch_hard_triplet(features, [0, 1, 1, 2], 2.0)
    np.testing.assert_allclose(loss, [1.0, 3.0, 1.0, 0.0], atol=ATOL)
    np.testing.assert_array_equal(pos_idx, [0, 2, 1, 3])
    np.testing.assert_array_equal(neg_idx, [1, 0, 0, 2])


def test_batch_hard_triplet_without_negatives_is_zero():
    features = tf.constant([[0.0, 1.0], [2.0, 0.0], [5.0, 5.0]])
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss, pos_idx, neg_idx = losses.batch_hard_triplet(features, [3, 3, 3], 0.3)
    assert not np.any(loss.numpy())
    np.testing.assert_array_equal(neg_idx, [0, 1, 2])
    assert_finite(tape.gradient(loss, features))


@pytest.mark.parametrize("soft_margin", [False, True])
def test_batch_hard_triplet_gradient_finite_for_identical_features(soft_margin):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    x[1] = x[0]  # identical positive
    x[4] = x[0]  # identical negative
    for features in (x, np.ones((8, 4), np.float32)):
        features = tf.constant(features)
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss, _, _ = losses.batch_hard_triplet(
                features, pk_labels(2, 4), 0.3, soft_margin
            )
            total = tf.reduce_sum(loss)
        assert_finite(loss, tape.gradient(total, features))


def test_batch_hard_triplet_float16_input():
    rng = np.random.default_rng(9)
    features = rng.normal(size=(B, 8)).astype(np.float16)
    loss, _, _ = losses.batch_hard_triplet(tf.constant(features), pk_labels())
    assert loss.dtype == tf.float32
    want, _, _ = np_batch_hard(features.astype(np.float64), pk_labels(), 0.3, False)
    np.testing.assert_allclose(loss, want, atol=1e-4)


def test_pattern_triplet_matches_numpy():
    _, targets = fake_batch(seed=10)
    rng = np.random.default_rng(10)
    g = rng.normal(size=(B, 6)).astype(np.float32)
    patterns = targets["pattern"]
    assert np.any(patterns < 0)
    loss, mask = losses.pattern_triplet(g, patterns, 0.3)
    want_loss, want_mask = np_pattern_triplet(g, patterns, 0.3)
    np.testing.assert_allclose(loss, want_loss, atol=ATOL)
    np.testing.assert_array_equal(mask, want_mask)
    assert mask.dtype == tf.float32 and 0 < want_mask.sum() < B


def test_pattern_triplet_by_hand_excludes_unknown_and_unique_patterns():
    # Sample 3 (pattern -1) is the closest sample to anchor 0 but is no negative;
    # samples 2 and 4 have patterns seen once: no positive, masked as anchors.
    g = [[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [0.0, 0.5], [0.0, 2.0]]
    loss, mask = losses.pattern_triplet(g, [0, 0, 1, -1, 2], 0.3)
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 0])
    np.testing.assert_allclose(
        loss, [5.0 - 1.0 + 0.3, 5.0 - math.sqrt(13.0) + 0.3, 0, 0, 0], atol=ATOL
    )


def test_pattern_triplet_no_valid_anchor_gives_zero_and_finite_gradient():
    g = tf.constant([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    for patterns in ([-1, -1, -1, -1], [5, 5, 5, -1], [0, 1, 2, -1]):
        with tf.GradientTape() as tape:
            tape.watch(g)
            loss, mask = losses.pattern_triplet(g, patterns)
            mean = losses.masked_mean(loss, mask)
        grad = tape.gradient(mean, g)
        assert float(mean) == 0.0 and not np.any(mask.numpy())
        assert_finite(grad)
        assert not np.any(grad.numpy())


# ---------------------------------------------------- amelioration constraint


def test_ac_id_matches_numpy_and_by_hand():
    rng = np.random.default_rng(11)
    ce_j, ce_f = rng.uniform(0, 3, (2, B)).astype(np.float32)
    np.testing.assert_allclose(
        losses.ac_id(ce_j, ce_f), np_ac_id(ce_j, ce_f), atol=ATOL
    )
    np.testing.assert_allclose(
        losses.ac_id([1.0, 2.0], [1.0, 2.0 + math.log(3.0)]),
        [math.log(2.0), math.log(4.0 / 3.0)],
        atol=ATOL,
    )


def test_ac_id_gradient_flows_to_j_only():
    rng = np.random.default_rng(12)
    f_logits = tf.constant(rng.normal(size=(B, NUM_IDS)), tf.float32)
    j_logits = tf.constant(rng.normal(size=(B, NUM_IDS)), tf.float32)
    pid = pk_labels()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([f_logits, j_logits])
        ce_f = losses.cross_entropy_label_smooth(f_logits, pid)
        ce_j = losses.cross_entropy_label_smooth(j_logits, pid)
        total = tf.reduce_mean(losses.ac_id(ce_j, ce_f))
    assert_no_gradient(tape.gradient(total, f_logits))
    grad_j = tape.gradient(total, j_logits)
    assert_finite(grad_j)
    assert np.any(grad_j.numpy())


def test_ac_tri_matches_numpy():
    rng = np.random.default_rng(13)
    f = rng.normal(size=(B, 8)).astype(np.float32)
    j = rng.normal(size=(B, 5)).astype(np.float32)
    _, pos_idx, neg_idx = losses.batch_hard_triplet(j, pk_labels())
    np.testing.assert_allclose(
        losses.ac_tri(f, j, pos_idx, neg_idx),
        np_ac_tri(f, j, pos_idx.numpy(), neg_idx.numpy()),
        atol=ATOL,
    )


def test_ac_tri_by_hand():
    # 1-D, anchor 0, positive 1, negative 2:
    # j: D(j0, j1) = 1, D(j0, j2) = 4; f: D(f0, f1) = 2, D(f0, f2) = 3.
    f = [[0.0], [2.0], [3.0]]
    j = [[0.0], [1.0], [4.0]]
    got = losses.ac_tri(f, j, [1, 0, 0], [2, 2, 1])
    want0 = math.log1p(math.exp(1.0 - 2.0)) + math.log1p(math.exp(3.0 - 4.0))
    np.testing.assert_allclose(got[0], want0, atol=ATOL)


def test_ac_tri_gradient_flows_to_j_only_and_is_finite():
    rng = np.random.default_rng(14)
    f_np = rng.normal(size=(8, 4)).astype(np.float32)
    j_np = rng.normal(size=(8, 4)).astype(np.float32)
    j_np[1] = j_np[0]
    f_np[1] = f_np[0]
    f, j = tf.constant(f_np), tf.constant(j_np)
    labels = [0, 0, 1, 1, 2, 2, 3, 4]  # 3 and 4 have no other positive: self
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([f, j])
        _, pos_idx, neg_idx = losses.batch_hard_triplet(j, labels)
        total = tf.reduce_sum(losses.ac_tri(f, j, pos_idx, neg_idx))
    assert_no_gradient(tape.gradient(total, f))
    grad_j = tape.gradient(total, j)
    assert_finite(total, grad_j)
    assert np.any(grad_j.numpy())


# ---------------------------------------------------------------- composition

CASES = [
    ("baseline", 1, True),
    ("van", 1, True),
    ("anet", 1, True),
    ("anet", 2, True),
    ("anet", 2, False),
]
NON_DEFAULT = dict(
    label_smoothing=0.2,
    triplet_margin=0.5,
    soft_margin=False,
    pattern_margin=0.4,
    lambda_van=0.7,
    lambda_a=1.3,
    lambda_g=0.6,
)


def run_compute_losses(outputs, targets, variant, stage, **kwargs):
    """compute_losses under a tape watching every output; returns terms and tape."""
    tensors = {k: tf.constant(v) for k, v in outputs.items()}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(list(tensors.values()))
        terms = losses.compute_losses(
            tensors,
            targets,
            attribute_names=ATTRIBUTES,
            variant=variant,
            stage=stage,
            **kwargs,
        )
    return terms, tensors, tape


@pytest.mark.parametrize("variant,stage,use_ac", CASES)
@pytest.mark.parametrize("soft_margin", [False, True])
def test_compute_losses_matches_numpy_composition(variant, stage, use_ac, soft_margin):
    outputs, targets = fake_batch(seed=15)
    kw = dict(NON_DEFAULT, use_ac=use_ac, soft_margin=soft_margin)
    terms, _, _ = run_compute_losses(outputs, targets, variant, stage, **kw)
    want = np_compute_losses(outputs, targets, variant, stage, kw)
    assert list(terms) == losses.loss_term_names(ATTRIBUTES, variant, stage, use_ac)
    assert sorted(terms) == sorted(want)
    for name, value in terms.items():
        assert value.shape == () and value.dtype == tf.float32, name
        np.testing.assert_allclose(value, want[name], atol=ATOL, err_msg=name)


@pytest.mark.parametrize("variant,stage,use_ac", CASES)
def test_compute_losses_total_is_the_papers_sum_of_its_terms(variant, stage, use_ac):
    outputs, targets = fake_batch(seed=16)
    kw = dict(NON_DEFAULT, use_ac=use_ac)
    t = {
        k: float(v)
        for k, v in run_compute_losses(outputs, targets, variant, stage, **kw)[
            0
        ].items()
    }
    att = sum(t[f"att_{n}"] for n in ATTRIBUTES) if variant != "baseline" else 0.0
    lam, lam_a, lam_g = kw["lambda_van"], kw["lambda_a"], kw["lambda_g"]
    l_van = t["tri_f"] + t["id_f"] + lam_a * att  # eq. (4)
    if variant == "baseline":
        want = t["id_f"] + t["tri_f"]
    elif variant == "van":
        want = l_van
    else:
        l_jm = t["tri_j"] + t["id_j"] + lam_g * t["tri_g"]  # eq. (9)
        want = l_jm + lam * l_van  # eq. (10)
        if stage == 2:  # eq. (13)
            want -= lam * (t["tri_f"] + t["id_f"])
            if use_ac:
                want += t["ac_tri"] + t["ac_id"]
    np.testing.assert_allclose(t["total"], want, atol=ATOL)


@pytest.mark.parametrize("variant,stage,use_ac", CASES)
def test_compute_losses_gradients(variant, stage, use_ac):
    outputs, targets = fake_batch(seed=17)
    terms, tensors, tape = run_compute_losses(
        outputs, targets, variant, stage, use_ac=use_ac
    )
    grads = {k: tape.gradient(terms["total"], v) for k, v in tensors.items()}
    for name in ("a_color", "a_type", "G", "camid"):
        assert_no_gradient(grads.get(name))
    used = ["f", "f_logits"]
    if variant != "baseline":
        used += [f"a_{n}_logits" for n in ATTRIBUTES]
    if variant == "anet":
        used += ["g", "j", "j_logits"]
    if variant == "anet" and stage == 2:
        # Stage 2: the f terms are disabled and f is AC's fixed reference.
        for name in ("f", "f_logits"):
            assert_no_gradient(grads[name])
            used.remove(name)
        for name in ("id_f", "tri_f"):
            assert_no_gradient(tape.gradient(terms[name], tensors["f"]))
            assert_no_gradient(tape.gradient(terms[name], tensors["f_logits"]))
            assert float(terms[name]) > 0.0
    for name in used:
        assert_finite(grads[name])
        assert np.any(grads[name].numpy()), name
    for name in set(grads) - {"f", "f_logits"} - set(used):
        assert_no_gradient(grads[name])


def test_compute_losses_unknown_attributes_and_patterns_everywhere():
    outputs, targets = fake_batch(seed=18)
    targets = dict(
        targets,
        attributes=np.full_like(targets["attributes"], -1),
        pattern=np.full_like(targets["pattern"], -1),
    )
    terms, tensors, tape = run_compute_losses(outputs, targets, "anet", 2)
    for name in ("att_color", "att_type", "tri_g"):
        assert float(terms[name]) == 0.0
    for name in ("a_color_logits", "a_type_logits", "g"):
        grad = tape.gradient(terms["total"], tensors[name])
        assert grad is None or (np.all(np.isfinite(grad)) and not np.any(grad))
    assert_finite(terms["total"], tape.gradient(terms["total"], tensors["j"]))


def test_compute_losses_float16_outputs():
    outputs, targets = fake_batch(seed=19)
    half = {k: v.astype(np.float16) for k, v in outputs.items()}
    terms, _, _ = run_compute_losses(half, targets, "anet", 2)
    full, _, _ = run_compute_losses(
        {k: v.astype(np.float16).astype(np.float32) for k, v in outputs.items()},
        targets,
        "anet",
        2,
    )
    for name in terms:
        assert terms[name].dtype == tf.float32
        np.testing.assert_allclose(terms[name], full[name], atol=1e-4, err_msg=name)


def test_compute_losses_in_xla_function_with_unknown_batch():
    outputs, targets = fake_batch(seed=20)
    keys = ["f", "f_logits", "g", "j", "j_logits", "a_color_logits", "a_type_logits"]

    @tf.function(jit_compile=True, reduce_retracing=True)
    def step(outs, tgts):
        return losses.compute_losses(
            outs, tgts, attribute_names=ATTRIBUTES, variant="anet", stage=2
        )

    outs = {k: tf.constant(outputs[k]) for k in keys}
    tgts = {k: tf.constant(targets[k]) for k in ("pid", "attributes", "pattern")}
    got = step.get_concrete_function(
        {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype) for k, v in outs.items()},
        {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype) for k, v in tgts.items()},
    )(outs, tgts)
    eager = losses.compute_losses(
        outs, tgts, attribute_names=ATTRIBUTES, variant="anet", stage=2
    )
    for name, value in eager.items():
        np.testing.assert_allclose(got[name], value, atol=ATOL, err_msg=name)


def test_compute_losses_errors_name_the_problem():
    outputs, targets = fake_batch()
    with pytest.raises(ValueError, match="variant='vanilla'"):
        losses.compute_losses(
            outputs, targets, attribute_names=ATTRIBUTES, variant="vanilla", stage=1
        )
    with pytest.raises(ValueError, match="stage=3"):
        losses.compute_losses(
            outputs, targets, attribute_names=ATTRIBUTES, variant="anet", stage=3
        )
    del outputs["j_logits"]
    with pytest.raises(ValueError, match="'j_logits'"):
        losses.compute_losses(
            outputs, targets, attribute_names=ATTRIBUTES, variant="anet", stage=1
        )
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        losses.compute_losses(
            outputs,
            targets,
            attribute_names=ATTRIBUTES + ["model"],
            variant="van",
            stage=1,
        )


def test_loss_term_names():
    assert losses.loss_term_names(ATTRIBUTES, "baseline", 2) == [
        "id_f",
        "tri_f",
        "total",
    ]
    assert losses.loss_term_names(ATTRIBUTES, "anet", 2, use_ac=False) == [
        "id_f",
        "tri_f",
        "att_color",
        "att_type",
        "tri_g",
        "id_j",
        "tri_j",
        "total",
    ]


def test_loss_kwargs_from_config_maps_every_field():
    cfg = LossConfig(
        label_smoothing=0.05,
        triplet_margin=0.7,
        soft_margin=True,
        pattern_margin=0.2,
        lambda_van=0.5,
        lambda_a=2.0,
        lambda_g=3.0,
        use_ac=False,
    )
    kwargs = losses.loss_kwargs_from_config(cfg)
    assert kwargs == dataclasses.asdict(cfg)
    assert sorted(kwargs) == sorted(f.name for f in dataclasses.fields(LossConfig))
    outputs, targets = fake_batch(seed=21)
    terms = losses.compute_losses(
        outputs, targets, attribute_names=ATTRIBUTES, variant="anet", stage=2, **kwargs
    )
    want = np_compute_losses(outputs, targets, "anet", 2, kwargs)
    assert sorted(terms) == sorted(want)
    for name in terms:
        np.testing.assert_allclose(terms[name], want[name], atol=ATOL, err_msg=name)


def test_every_variant_stage_combination_has_names():
    for variant, stage, use_ac in itertools.product(
        ("baseline", "van", "anet"), (1, 2), (True, False)
    ):
        names = losses.loss_term_names(ATTRIBUTES, variant, stage, use_ac)
        assert names[-1] == "total" and names[:2] == ["id_f", "tri_f"]


# ------------------------------------------------------ every installed backend

PROBE = Path(__file__).with_name("loss_backend_probe.py")
BACKENDS = [
    "tensorflow",
    pytest.param(
        "jax",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("jax") is None,
            reason='JAX is not installed (pip install "jax[cpu]")',
        ),
    ),
]
BATCH_OUTPUTS = [
    "f",
    "f_logits",
    "g",
    "j",
    "j_logits",
    "a_color",
    "a_color_logits",
    "a_type",
    "a_type_logits",
]


def backend_inputs():
    """The fixed inputs of loss_backend_probe.py (its keys are its contract)."""
    rng = np.random.default_rng(30)

    def normal(*shape, dtype=np.float32):
        return rng.normal(size=shape).astype(dtype)

    identical = normal(8, 4)
    identical[[1, 4]] = identical[0]  # an identical positive and negative
    ac_f, ac_j = normal(8, 4), normal(8, 4)
    ac_f[1], ac_j[1] = ac_f[0], ac_j[0]
    att_labels = rng.integers(-1, 5, B).astype(np.int32)
    att_labels[:2] = [-1, 4]
    outputs, targets = fake_batch(seed=31)
    x = {
        "ce/logits": normal(B, 7) * 3.0,
        "ce/labels": rng.integers(0, 7, B).astype(np.int32),
        "ce16/logits": normal(B, 5, dtype=np.float16),
        "ce16/labels": rng.integers(0, 5, B).astype(np.int32),
        "att/logits": normal(B, 5),
        "att/labels": att_labels,
        "att_some/labels": np.array([0, -1, 2, -1], np.int32),
        "att_none/labels": np.full(4, -1, np.int32),
        "mm/values": np.array([1.0, 2.0, np.nan, np.inf], np.float32),
        "mm/mask": np.array([1.0, 1.0, 0.0, 0.0], np.float32),
        "dist/x": normal(B, 8),
        "dist/y": normal(5, 8),
        "dist/identical": np.array([[1, 2], [1, 2], [1, 2], [0, 0]], np.float32),
        "tri/x": normal(B, 8),
        "tri/labels": pk_labels(),
        "tri16/x": normal(B, 8, dtype=np.float16),
        "tri_ident/x": identical,
        "tri_ident/labels": pk_labels(2, 4),
        "tri_ones/x": np.ones((8, 4), np.float32),
        "tri_small/x": np.array([[0.0], [1.0], [3.0], [7.0]], np.float32),
        "tri_alone/labels": np.array([0, 1, 1, 2], np.int32),
        "tri_noneg/x": np.array([[0, 1], [2, 0], [5, 5]], np.float32),
        "tri_noneg/labels": np.array([3, 3, 3], np.int32),
        "pattern/g": normal(B, 6),
        "pattern/patterns": targets["pattern"],
        "pattern_none/g": np.array([[0, 1], [0, 1], [2, 0], [1, 1]], np.float32),
        "ac_id/ce_j": rng.uniform(0, 3, B).astype(np.float32),
        "ac_id/ce_f": rng.uniform(0, 3, B).astype(np.float32),
        "ac_tri/f": normal(B, 8),
        "ac_tri/j": normal(B, 5),
        "ac_grad/pid": pk_labels(),
        "ac_grad/f_logits": normal(B, NUM_IDS),
        "ac_grad/j_logits": normal(B, NUM_IDS),
        "ac_tri_grad/f": ac_f,
        "ac_tri_grad/j": ac_j,
        "ac_tri_grad/labels": np.array([0, 0, 1, 1, 2, 2, 3, 4], np.int32),
    }
    for i, patterns in enumerate(([-1, -1, -1, -1], [5, 5, 5, -1], [0, 1, 2, -1])):
        x[f"pattern_none{i}/patterns"] = np.array(patterns, np.int32)
    # ac_tri gets the triplets the NumPy batch-hard mines on j.
    _, x["ac_tri/pos"], x["ac_tri/neg"] = np_batch_hard(
        x["ac_tri/j"], pk_labels(), 0.3, False
    )
    x.update({f"batch/out/{k}": outputs[k] for k in BATCH_OUTPUTS})
    x.update({f"batch/tgt/{k}": v for k, v in targets.items()})
    return x


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, tmp_path_factory):
    """Runs loss_backend_probe.py under one backend; ``(backend, inputs, results)``."""
    backend = request.param
    folder = tmp_path_factory.mktemp(f"losses-{backend}")
    x = backend_inputs()
    np.savez(folder / "inputs.npz", **x)
    spec = {
        "attributes": ATTRIBUTES,
        "outputs": BATCH_OUTPUTS,
        "cases": CASES,
        "kwargs": {k: v for k, v in NON_DEFAULT.items() if k != "soft_margin"},
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [
            sys.executable,
            str(PROBE),
            *(str(folder / n) for n in ("inputs.npz", "spec.json", "out.npz")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    with np.load(folder / "out.npz") as data:
        results = dict(data)
    return backend, x, results


def assert_float32(results, name):
    assert str(results[f"{name}/dtype"]) == "float32", name


def assert_zero_and_finite(grad, name=""):
    assert np.all(np.isfinite(grad)) and not np.any(grad), name


def assert_nonzero_and_finite(grad, name=""):
    assert np.all(np.isfinite(grad)) and np.any(grad), name


def test_backend_needs_no_tensorflow(backend_run):
    backend, _, r = backend_run
    # Under JAX the probe refused every TensorFlow import before importing Keras.
    assert bool(r["tensorflow_imported"]) == (backend == "tensorflow")


def test_backend_cross_entropies(backend_run):
    _, x, r = backend_run
    for eps in (0.0, 0.1, 0.5):
        assert_float32(r, f"ce/{eps}")
        np.testing.assert_allclose(
            r[f"ce/{eps}"], np_ce_ls(x["ce/logits"], x["ce/labels"], eps), atol=ATOL
        )
    assert_float32(r, "ce16")
    want = np_ce_ls(x["ce16/logits"].astype(np.float64), x["ce16/labels"], 0.1)
    np.testing.assert_allclose(r["ce16"], want, atol=ATOL)
    for eps in (0.0, 0.1):
        want_loss, want_mask = np_attr_ce(x["att/logits"], x["att/labels"], eps)
        np.testing.assert_allclose(r[f"att/{eps}/0"], want_loss, atol=ATOL)
        np.testing.assert_array_equal(r[f"att/{eps}/1"], want_mask)
        assert_float32(r, f"att/{eps}/1")
        np.testing.assert_allclose(
            r[f"att/{eps}/2"], np_masked_mean(want_loss, want_mask), atol=ATOL
        )


def test_backend_masking_of_unknown_labels(backend_run):
    _, _, r = backend_run
    # Labels [0, -1, 2, -1]: the unknown rows lose nothing and get no gradient.
    grad = r["att_some/grad/logits"]
    assert r["att_some/loss"][1] == 0.0 and r["att_some/loss"][3] == 0.0
    np.testing.assert_array_equal(r["att_some/mask"], [1, 0, 1, 0])
    assert not np.any(grad[[1, 3]]) and np.all(np.any(grad[[0, 2]], axis=1))
    # All unknown: exactly 0, with a zero (finite) gradient.
    assert float(r["att_none"]) == 0.0 and not np.any(r["att_none/mask"])
    assert_zero_and_finite(r["att_none/grad/logits"])
    # masked_mean ignores masked NaN/inf and is 0 on an empty mask.
    assert float(r["masked_mean"]) == 1.5
    np.testing.assert_array_equal(r["masked_mean/grad/values"], [0.5, 0.5, 0, 0])
    assert float(r["masked_mean_empty"]) == 0.0


def test_backend_distances(backend_run):
    _, x, r = backend_run
    for metric in losses.METRICS:
        assert_float32(r, f"dist/{metric}/xx")
        np.testing.assert_allclose(
            r[f"dist/{metric}/xx"], np_distance(x["dist/x"], metric=metric), atol=ATOL
        )
        np.testing.assert_allclose(
            r[f"dist/{metric}/xy"],
            np_distance(x["dist/x"], x["dist/y"], metric),
            atol=ATOL,
        )
        grad = r[f"dist/{metric}/identical/grad/x"]
        assert np.all(np.isfinite(grad)) and np.isfinite(r[f"dist/{metric}/identical"])


def test_backend_batch_hard_triplets(backend_run):
    _, x, r = backend_run
    for soft in (False, True):
        want = np_batch_hard(x["tri/x"], x["tri/labels"], 0.3, soft)
        np.testing.assert_allclose(r[f"tri/{soft}/0"], want[0], atol=ATOL)
        np.testing.assert_array_equal(r[f"tri/{soft}/1"], want[1])
        np.testing.assert_array_equal(r[f"tri/{soft}/2"], want[2])
        assert_float32(r, f"tri/{soft}/0")
        assert str(r[f"tri/{soft}/1/dtype"]) == str(r[f"tri/{soft}/2/dtype"]) == "int32"
        for name in ("tri_ident", "tri_ones"):
            assert np.isfinite(r[f"{name}/{soft}"]), name
            assert np.all(np.isfinite(r[f"{name}/{soft}/grad/x"])), name
    want, _, _ = np_batch_hard(x["tri16/x"].astype(np.float64), pk_labels(), 0.3, False)
    assert_float32(r, "tri16/0")
    np.testing.assert_allclose(r["tri16/0"], want, atol=1e-4)
    # Degenerate batches: anchors alone with their label, and no negative at all.
    want = np_batch_hard(x["tri_small/x"], x["tri_alone/labels"], 2.0, False)
    for i in range(3):
        np.testing.assert_allclose(r[f"tri_alone/{i}"], want[i], atol=ATOL)
    np.testing.assert_allclose(r["tri_alone/0"], [1.0, 3.0, 1.0, 0.0], atol=ATOL)
    assert float(r["tri_noneg"]) == 0.0
    assert np.all(np.isfinite(r["tri_noneg/grad/x"]))


def test_backend_pattern_triplet(backend_run):
    _, x, r = backend_run
    want_loss, want_mask = np_pattern_triplet(
        x["pattern/g"], x["pattern/patterns"], 0.3
    )
    np.testing.assert_allclose(r["pattern/0"], want_loss, atol=ATOL)
    np.testing.assert_array_equal(r["pattern/1"], want_mask)
    assert_float32(r, "pattern/1")
    assert 0 < want_mask.sum() < B
    for i in range(3):  # no valid anchor: 0 with a zero, finite gradient
        assert float(r[f"pattern_none{i}"]) == 0.0
        assert_zero_and_finite(r[f"pattern_none{i}/grad/g"])


def test_backend_amelioration_constraint(backend_run):
    _, x, r = backend_run
    np.testing.assert_allclose(
        r["ac_id"], np_ac_id(x["ac_id/ce_j"], x["ac_id/ce_f"]), atol=ATOL
    )
    want = np_ac_tri(x["ac_tri/f"], x["ac_tri/j"], x["ac_tri/pos"], x["ac_tri/neg"])
    np.testing.assert_allclose(r["ac_tri"], want, atol=ATOL)
    assert_float32(r, "ac_id")
    assert_float32(r, "ac_tri")
    # f is the fixed reference: the gradient reaches j only.
    assert_zero_and_finite(r["ac_id_grad/grad/f_logits"])
    assert_nonzero_and_finite(r["ac_id_grad/grad/j_logits"])
    assert np.isfinite(r["ac_tri_grad"])
    assert_zero_and_finite(r["ac_tri_grad/grad/f"])
    assert_nonzero_and_finite(r["ac_tri_grad/grad/j"])


@pytest.mark.parametrize("variant,stage,use_ac", CASES)
def test_backend_compute_losses(backend_run, variant, stage, use_ac):
    """Terms against the NumPy composition; gradients of the total against central
    differences of the NumPy total along a random direction (compiled: jax.jit or
    tf.function); zero gradient exactly where the paper has none."""
    _, x, r = backend_run
    outputs = {k: x[f"batch/out/{k}"] for k in BATCH_OUTPUTS}
    targets = {k: x[f"batch/tgt/{k}"] for k in ("pid", "attributes", "pattern")}
    rng = np.random.default_rng(32)
    direction = {k: rng.normal(size=v.shape) for k, v in outputs.items()}
    if variant == "anet" and stage == 2:
        # The NumPy total has no stop-gradient: move only what L' may change.
        for k in ("f", "f_logits"):
            direction[k] = np.zeros_like(direction[k])
    for soft in (False, True):
        name = f"cl/{variant}/{stage}/{use_ac}/{soft}"
        kw = dict(NON_DEFAULT, use_ac=use_ac, soft_margin=soft)
        want = np_compute_losses(outputs, targets, variant, stage, kw)
        assert list(r[f"{name}/names"]) == losses.loss_term_names(
            ATTRIBUTES, variant, stage, use_ac
        )
        for term in want:
            np.testing.assert_allclose(r[f"{name}/{term}"], want[term], atol=ATOL)

        h = 1e-4

        def total_at(step, kw=kw):
            moved = {
                k: v.astype(np.float64) + step * direction[k]
                for k, v in outputs.items()
            }
            return np_compute_losses(moved, targets, variant, stage, kw)["total"]

        numeric = (total_at(h) - total_at(-h)) / (2 * h)
        analytic = sum(
            float((r[f"{name}/grad/{k}"] * direction[k]).sum()) for k in outputs
        )
        np.testing.assert_allclose(
            analytic, numeric, rtol=1e-3, atol=1e-4, err_msg=name
        )

        used = {"f", "f_logits"}
        if variant != "baseline":
            used |= {f"a_{n}_logits" for n in ATTRIBUTES}
        if variant == "anet":
            used |= {"g", "j", "j_logits"}
        if variant == "anet" and stage == 2:
            used -= {"f", "f_logits"}  # disabled in L'; AC's fixed reference
        for k in BATCH_OUTPUTS:
            check = assert_nonzero_and_finite if k in used else assert_zero_and_finite
            check(r[f"{name}/grad/{k}"], f"{name}: {k}")
        if variant == "anet" and stage == 2 and not soft:
            # id_f and tri_f are reported, under stop-gradient (their sum's gradient).
            assert float(r[f"{name}/id_f"]) > 0.0 and float(r[f"{name}/tri_f"]) > 0.0
            for k in BATCH_OUTPUTS:
                assert_zero_and_finite(r[f"{name}/f_terms/grad/{k}"], k)


def test_backend_compiled_compute_losses_matches_eager(backend_run):
    """As a training step runs it: under jax.jit or tf.function."""
    _, _, r = backend_run
    name = "cl/anet/2/True/False"
    assert list(r[f"{name}/compiled/names"]) == list(r[f"{name}/names"])
    for term in r[f"{name}/names"]:
        np.testing.assert_allclose(
            r[f"{name}/compiled/{term}"], r[f"{name}/{term}"], atol=ATOL, err_msg=term
        )
    for k in BATCH_OUTPUTS:
        np.testing.assert_allclose(
            r[f"{name}/compiled/grad/{k}"], r[f"{name}/grad/{k}"], atol=ATOL, err_msg=k
        )


def test_backend_compute_losses_float16_and_unknown_everywhere(backend_run):
    _, x, r = backend_run
    outputs = {k: x[f"batch/out/{k}"] for k in BATCH_OUTPUTS}
    targets = {k: x[f"batch/tgt/{k}"] for k in ("pid", "attributes", "pattern")}
    half = {k: v.astype(np.float16).astype(np.float64) for k, v in outputs.items()}
    kw = {  # the probe uses the defaults of compute_losses here
        name: param.default
        for name, param in inspect.signature(losses.compute_losses).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    want = np_compute_losses(half, targets, "anet", 2, kw)
    assert sorted(r["cl16/names"]) == sorted(want)
    for i, term in enumerate(r["cl16/names"]):
        assert_float32(r, f"cl16/{i}")
        np.testing.assert_allclose(r[f"cl16/{i}"], want[term], atol=1e-4, err_msg=term)
    for term in ("att_color", "att_type", "tri_g"):
        assert float(r[f"cl_unknown/{term}"]) == 0.0
    for k in ("a_color_logits", "a_type_logits", "g"):
        assert_zero_and_finite(r[f"cl_unknown/grad/{k}"], k)
    assert np.isfinite(r["cl_unknown"])
    assert_nonzero_and_finite(r["cl_unknown/grad/j"])


def test_backend_errors_name_the_problem(backend_run):
    _, _, r = backend_run
    assert "variant='vanilla'" in str(r["error/variant"])
    assert "stage=3" in str(r["error/stage"])
    assert "'j_logits'" in str(r["error/output"])
    assert "[B, 3]" in str(r["error/attributes"])
