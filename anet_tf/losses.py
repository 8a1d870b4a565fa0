"""The loss terms of ANet (section 3, eq. 4 and 9-13) as backend-agnostic functions.

They are written with ``keras.ops`` only, so they run on whichever Keras backend is
active (TensorFlow or JAX; this module never imports TensorFlow), eagerly, inside
``tf.function`` / XLA and under ``jax.jit`` / ``jax.grad``.

Every building block returns one value per sample (shape ``[B]``), computed in
float32 whatever the input dtype (float16 under mixed precision), so that a training
step can average it however its distribution strategy needs. :func:`compute_losses`
composes them into the scalar terms of one variant and stage, each averaged over the
local batch, plus ``"total"``; :func:`loss_kwargs_from_config` is the one place that
reads :class:`~anet_tf.config.LossConfig`.

Names follow the paper: ``f`` (eq. 1), ``a_i`` (eq. 3), ``g`` (GAP of G, eq. 5),
``j`` (eq. 8); ``id_f`` is L_ID^f, ``tri_f`` L_tri^f, ``att_{name}`` L_att^i,
``tri_g`` L_tri^g, ``id_j`` L_ID^j, ``tri_j`` L_tri^j, ``ac_id`` AC_ID (eq. 11),
``ac_tri`` AC_tri (eq. 12).

Choices where the paper is open (each repeated where it is made):

* Identity cross entropies use label smoothing (section 4.2, after Bag of Tricks);
  the attribute cross entropies L_att^i do not (``LossConfig.label_smoothing`` is
  the identity epsilon).
* Triplets are batch-hard (Hermans et al. 2017) on Euclidean distances of the
  un-normalised features, as Bag of Tricks / FastReID.
* Samples with an unknown attribute (-1) give no L_att^i, and samples with an
  unknown pattern give no L_tri^g (section 4.2); masked terms are averaged over
  their valid samples and are 0 (with zero gradient) when there are none.
* AC_ID and AC_tri treat every f-branch quantity as a fixed reference
  (``ops.stop_gradient``): AC can only be lowered by improving j, never by making f
  worse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from anet_tf.config import LossConfig
from anet_tf.model.names import VARIANTS

# A tensor of the active Keras backend (tf.Tensor, jax.Array), or anything
# ``keras.ops`` converts to one (NumPy arrays, nested lists).
Tensor = Any

METRICS = ("euclidean", "cosine")
STAGES = (1, 2)

# The clamp under the square root of Euclidean distances: sqrt has an infinite
# derivative at 0, which would turn the gradient of identical features into NaN.
_MIN_SQUARED_DISTANCE = 1e-12
# The floor of the squared norm in the L2 normalisation of cosine distances (the
# epsilon of tf.math.l2_normalize).
_MIN_SQUARED_NORM = 1e-12
# Fills the non-candidates before the argmin of batch-hard mining: larger than any
# distance, and finite.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------ cross entropy


def cross_entropy_label_smooth(
    logits: Tensor, labels: Tensor, epsilon: float = 0.1
) -> Tensor:
    """Per-sample cross entropy with label smoothing (Szegedy et al. 2016).

    The identity loss L_ID of the paper (L_ID^f on f, L_ID^j on j; section 4.2 uses
    label smoothing after Bag of Tricks). The target is
    ``(1 - epsilon) * onehot(label) + epsilon / num_classes``.

    Args:
        logits: ``[B, C]`` classifier outputs (any float dtype; computed in float32).
        labels: ``[B]`` integer class indices in ``[0, C)``. Use
            :func:`attribute_cross_entropy` where labels can be unknown (-1).
        epsilon: smoothing in ``[0, 1)``; 0 gives the plain cross entropy.

    Returns:
        ``[B]`` float32 losses.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1). Received: epsilon={epsilon}")
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    if num_classes is None:  # unknown in a TensorFlow graph: the dynamic size
        num_classes = ops.shape(logits)[-1]
    log_probs = ops.log_softmax(logits, axis=-1)
    onehot = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    uniform = 1.0 / ops.cast(num_classes, "float32")
    targets = (1.0 - epsilon) * onehot + epsilon * uniform
    return -ops.sum(targets * log_probs, axis=-1)


def circle_logits(
    cosine: Tensor, labels: Tensor, scale: float = 64.0, margin: float = 0.35
) -> Tensor:
    """CircleSoftmax logits (Sun et al., CVPR 2020, eq. 5), as FastReID's
    ``CircleSoftmax`` classifier computes them from cosine similarities.

    For the target class the logit is ``scale * alpha_p * (s - (1 - margin))`` with
    ``alpha_p = max(1 + margin - s, 0)``; for the other classes
    ``scale * alpha_n * (s - margin)`` with ``alpha_n = max(s + margin, 0)``. The
    weights alpha are constants for the gradient (FastReID detaches them). The cross
    entropy of these logits is the identity loss of a ``classifier: circle`` head.

    Args:
        cosine: ``[B, C]`` cosine similarities of features and class weights.
        labels: ``[B]`` class indices.
        scale: s (64 in FastReID's SBS configs).
        margin: m (0.35).

    Returns:
        ``[B, C]`` float32 logits.
    """
    if not scale > 0 or not 0.0 <= margin < 1.0:
        raise ValueError(
            f"circle_logits needs scale > 0 and margin in [0, 1). Received: "
            f"scale={scale}, margin={margin}"
        )
    cosine = ops.cast(cosine, "float32")
    num_classes = cosine.shape[-1]
    if num_classes is None:
        num_classes = ops.shape(cosine)[-1]
    fixed = ops.stop_gradient(cosine)
    alpha_p = ops.maximum(1.0 + margin - fixed, 0.0)
    alpha_n = ops.maximum(fixed + margin, 0.0)
    onehot = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    positive = alpha_p * (cosine - (1.0 - margin))
    negative = alpha_n * (cosine - margin)
    return scale * (onehot * positive + (1.0 - onehot) * negative)


def attribute_cross_entropy(
    logits: Tensor, labels: Tensor, epsilon: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Per-sample attribute cross entropy L_att^i of eq. (4), with unknown labels.

    A negative label (-1) means the attribute is unknown for that image (VehicleID,
    section 4.2: "we simply do not backpropagate the losses from L_att^i"): its loss
    is exactly 0 and its mask 0. Unknown labels are replaced by class 0 before the
    one-hot, so -1 is never used as a class index; the replaced loss is then
    discarded with ``ops.where``, which also gives it a zero (finite) gradient.

    Args:
        logits: ``[B, m_i]`` attribute classifier outputs.
        labels: ``[B]`` integer classes in ``[0, m_i)``, or -1 for unknown.
        epsilon: label smoothing; 0 (the default, and what :func:`compute_losses`
            uses) is the plain cross entropy of the paper.

    Returns:
        ``(loss, mask)``: ``[B]`` float32 losses (0 where unknown) and ``[B]`` float32
        mask (1 = known). Average with :func:`masked_mean`.
    """
    labels = ops.cast(labels, "int32")
    known = ops.greater_equal(labels, 0)
    safe_labels = ops.where(known, labels, ops.zeros_like(labels))
    loss = cross_entropy_label_smooth(logits, safe_labels, epsilon)
    return ops.where(known, loss, ops.zeros_like(loss)), ops.cast(known, "float32")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the samples where ``mask`` is non-zero.

    ``sum(values * mask) / sum(mask)``; 0 (not NaN) when the mask is all zero, and
    then the gradient with respect to ``values`` is 0 as well. Values at masked-out
    positions never reach the result, even when they are not finite.

    Args:
        values: ``[B]`` per-sample values.
        mask: ``[B]`` weights, normally 0/1 (bool is accepted).

    Returns:
        float32 scalar.
    """
    values = ops.cast(values, "float32")
    mask = ops.cast(mask, "float32")
    kept = ops.where(ops.greater(mask, 0.0), values * mask, ops.zeros_like(values))
    return ops.divide_no_nan(ops.sum(kept), ops.sum(mask))


# -------------------------------------------------------------------- distances


def pairwise_distance(
    x: Tensor, y: Tensor | None = None, metric: str = "euclidean"
) -> Tensor:
    """Distance matrix ``D[i, k] = D(x_i, y_k)``, the D(., .) of eq. (12).

    Args:
        x: ``[B, d]`` features.
        y: ``[N, d]`` features; None means ``x`` (then the diagonal of the squared
            Euclidean distance is exactly 0 before the clamp).
        metric: ``euclidean``: ``sqrt(max(|x|^2 + |y|^2 - 2 x.y, 1e-12))``, the clamp
            keeping the gradient finite for identical features (it makes the smallest
            distance 1e-6); ``cosine``: ``1 - cos(x, y)`` of the L2-normalised
            features.

    Returns:
        ``[B, N]`` float32 distances.
    """
    if metric not in METRICS:
        raise ValueError(
            f"metric must be one of {', '.join(METRICS)}. Received: metric={metric!r}"
        )
    x = ops.cast(x, "float32")
    same = y is None
    y = x if same else ops.cast(y, "float32")
    if metric == "cosine":
        x = _l2_normalize(x)
        y = _l2_normalize(y)
        return 1.0 - ops.matmul(x, ops.transpose(y))
    x2 = ops.sum(ops.square(x), axis=-1, keepdims=True)
    y2 = ops.sum(ops.square(y), axis=-1, keepdims=True)
    d2 = x2 + ops.transpose(y2) - 2.0 * ops.matmul(x, ops.transpose(y))
    if same:
        d2 = ops.where(_eye(ops.shape(d2)[0]), ops.zeros_like(d2), d2)
    return ops.sqrt(ops.maximum(d2, _MIN_SQUARED_DISTANCE))


def _l2_normalize(x: Tensor) -> Tensor:
    """``x / max(|x|, 1e-6)`` along the last axis, as ``tf.math.l2_normalize``."""
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, _MIN_SQUARED_NORM))


def _eye(n: Tensor) -> Tensor:
    """``[n, n]`` boolean identity; ``n`` may be a dynamic size (TensorFlow graph)."""
    idx = ops.arange(n, dtype="int32")
    return ops.equal(idx[:, None], idx[None, :])


def _paired_distance(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Euclidean ``D(a_i, b_i)`` with the same clamp as pairwise_distance."""
    d2 = ops.sum(ops.square(a - b), axis=-1)
    return ops.sqrt(ops.maximum(d2, _MIN_SQUARED_DISTANCE))


def _hardest(dist: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> tuple[Tensor, ...]:
    """Batch-hard mining: farthest candidate positive, closest candidate negative.

    Returns ``(d_ap, d_an, pos_idx, neg_idx, has_pos, has_neg)``; where a row has no
    candidate its index is meaningless (callers replace it). The indices come from
    argmax/argmin (the first index among ties), so the gradient flows only through
    the two chosen distances. Non-candidates are filled with -1 (below any distance)
    for the argmax and with the largest float32 for the argmin.
    """
    pos_idx = ops.cast(
        ops.argmax(ops.where(pos_mask, dist, ops.full_like(dist, -1.0)), axis=1),
        "int32",
    )
    neg_idx = ops.cast(
        ops.argmin(
            ops.where(neg_mask, dist, ops.full_like(dist, _FLOAT32_MAX)), axis=1
        ),
        "int32",
    )
    d_ap = ops.take_along_axis(dist, pos_idx[:, None], axis=1)[:, 0]
    d_an = ops.take_along_axis(dist, neg_idx[:, None], axis=1)[:, 0]
    has_pos = ops.any(pos_mask, axis=1)
    has_neg = ops.any(neg_mask, axis=1)
    return d_ap, d_an, pos_idx, neg_idx, has_pos, has_neg


# --------------------------------------------------------------------- triplets


def batch_hard_triplet(
    features: Tensor,
    labels: Tensor,
    margin: float = 0.3,
    soft_margin: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-anchor batch-hard triplet loss (Hermans et al. 2017): L_tri^f and L_tri^j.

    For each anchor, the hardest positive is the farthest other sample of the same
    label and the hardest negative the closest sample of another label (Euclidean
    distance of the un-normalised features, as Bag of Tricks / FastReID). The loss is
    ``max(0, d_ap - d_an + margin)``, or ``softplus(d_ap - d_an)`` with
    ``soft_margin``.

    Degenerate batches (never produced by the P x K sampler with P, K >= 2):

    * an anchor with no other sample of its label uses itself as positive with
      ``d_ap = 0`` (``pos_idx`` = its own index), so it still pushes its negatives
      beyond the margin, as FastReID does by counting the anchor among its positives;
    * an anchor with no negative has loss 0 (``d_an`` taken as infinite) and
      ``neg_idx`` = its own index.

    Gradients are finite for identical features (see :func:`pairwise_distance`).

    Args:
        features: ``[B, d]`` features (f or j).
        labels: ``[B]`` integer identities.
        margin: hinge margin (unused with ``soft_margin``).
        soft_margin: use the soft-margin (softplus) form.

    Returns:
        ``(loss, pos_idx, neg_idx)``: ``[B]`` float32 losses and the ``[B]`` int32
        indices of the mined positive and negative of each anchor, reused by
        :func:`ac_tri`.
    """
    labels = ops.cast(labels, "int32")
    dist = pairwise_distance(features, metric="euclidean")
    batch = ops.shape(dist)[0]
    self_idx = ops.arange(batch, dtype="int32")
    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(_eye(batch))
    d_ap, d_an, pos_idx, neg_idx, has_pos, has_neg = _hardest(
        dist, ops.logical_and(same, not_self), ops.logical_not(same)
    )
    d_ap = ops.where(has_pos, d_ap, ops.zeros_like(d_ap))
    pos_idx = ops.where(has_pos, pos_idx, self_idx)
    neg_idx = ops.where(has_neg, neg_idx, self_idx)
    if soft_margin:
        loss = ops.softplus(d_ap - d_an)
    else:
        loss = ops.relu(d_ap - d_an + margin)
    loss = ops.where(has_neg, loss, ops.zeros_like(loss))
    return loss, pos_idx, neg_idx


def pattern_triplet(
    g: Tensor, patterns: Tensor, margin: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Per-anchor Attribute-based Triplet Loss L_tri^g of eq. (9) (section 3.2).

    Batch-hard triplet on g = GAP(G(I)) whose classes are attribute PATTERNS (the
    combination of all attribute classes, :func:`anet_tf.data.records.pattern_index`),
    pulling together features of the same pattern and pushing apart different ones.
    A sample whose pattern is unknown (-1, any attribute unknown) is neither anchor,
    positive nor negative (section 4.2). An anchor with no other sample of its
    pattern, or no sample of another known pattern, is masked out: unlike identities,
    a pattern often occurs once in a batch, and such an anchor has no triplet. Always
    a hinge with ``margin`` (``LossConfig.soft_margin`` concerns the identity
    triplets only), on Euclidean distances.

    Args:
        g: ``[B, c]`` pooled attribute features.
        patterns: ``[B]`` integer pattern indices, -1 for unknown.
        margin: hinge margin (``LossConfig.pattern_margin``).

    Returns:
        ``(loss, mask)``: ``[B]`` float32 losses (0 where masked) and ``[B]`` float32
        mask of the anchors that have a triplet. Average with :func:`masked_mean`.
    """
    patterns = ops.cast(patterns, "int32")
    dist = pairwise_distance(g, metric="euclidean")
    known = ops.greater_equal(patterns, 0)
    both_known = ops.logical_and(known[:, None], known[None, :])
    same = ops.equal(patterns[:, None], patterns[None, :])
    not_self = ops.logical_not(_eye(ops.shape(dist)[0]))
    pos_mask = ops.logical_and(ops.logical_and(same, not_self), both_known)
    neg_mask = ops.logical_and(ops.logical_not(same), both_known)
    d_ap, d_an, _, _, has_pos, has_neg = _hardest(dist, pos_mask, neg_mask)
    valid = ops.logical_and(known, ops.logical_and(has_pos, has_neg))
    loss = ops.relu(d_ap - d_an + margin)
    return ops.where(valid, loss, ops.zeros_like(loss)), ops.cast(valid, "float32")


# ------------------------------------------------------- amelioration constraint


def ac_id(ce_j: Tensor, ce_f: Tensor) -> Tensor:
    """Per-sample AC for the cross entropy, eq. (11): softplus(L_ID^j(I) - L_ID^f(I)).

    ``ce_f`` is under ``ops.stop_gradient``: in L' (eq. 13) the f-branch losses are
    disabled and f serves as a fixed reference, so AC_ID can only be lowered by
    making j classify better, never by making f worse.

    Args:
        ce_j: ``[B]`` per-sample identity cross entropy of j.
        ce_f: ``[B]`` per-sample identity cross entropy of f.

    Returns:
        ``[B]`` float32.
    """
    ce_j = ops.cast(ce_j, "float32")
    ce_f = ops.stop_gradient(ops.cast(ce_f, "float32"))
    return ops.softplus(ce_j - ce_f)


def ac_tri(f: Tensor, j: Tensor, pos_idx: Tensor, neg_idx: Tensor) -> Tensor:
    """Per-anchor AC for the triplet loss, eq. (12).

    ``softplus(D(j_a, j_p) - D(f_a, f_p)) + softplus(D(f_a, f_n) - D(j_a, j_n))``
    with Euclidean D. The paper leaves the pairs (I, I+, I-) open: we use one triple
    per anchor, the same for f and j, mined batch-hard on j (``pos_idx``/``neg_idx``
    from :func:`batch_hard_triplet` on j). The f distances are under
    ``ops.stop_gradient`` (f is the fixed reference of eq. 13, see :func:`ac_id`). An
    anchor whose mined positive or negative is itself (degenerate batch) gets the
    constant ``softplus(0)`` with zero gradient for that half.

    Args:
        f: ``[B, s_f]`` V-ReID features before compensation.
        j: ``[B, s_j]`` joint features.
        pos_idx: ``[B]`` int index of each anchor's positive.
        neg_idx: ``[B]`` int index of each anchor's negative.

    Returns:
        ``[B]`` float32.
    """
    f = ops.stop_gradient(ops.cast(f, "float32"))
    j = ops.cast(j, "float32")
    pos_idx = ops.cast(pos_idx, "int32")
    neg_idx = ops.cast(neg_idx, "int32")
    d_j_pos = _paired_distance(j, ops.take(j, pos_idx, axis=0))
    d_f_pos = _paired_distance(f, ops.take(f, pos_idx, axis=0))
    d_j_neg = _paired_distance(j, ops.take(j, neg_idx, axis=0))
    d_f_neg = _paired_distance(f, ops.take(f, neg_idx, axis=0))
    return ops.softplus(d_j_pos - d_f_pos) + ops.softplus(d_f_neg - d_j_neg)


# ----------------------------------------------------------------- distillation
# The terms of ``anet-tf distill`` (anet_tf.training.distill): a student without the
# Joint Module learns the test feature and attribute predictions of a frozen ANet
# teacher. Every teacher quantity is under ``ops.stop_gradient``.


def feature_hint(student: Tensor, teacher: Tensor) -> Tensor:
    """Per-sample feature hint ``1 - cos(s_i, t_i)``: the student's test feature
    regresses the teacher's, as FitNets' hints (Romero et al., ICLR 2015) regress a
    teacher's intermediate map. We take the hint on the final embedding and on the
    L2-normalised features, i.e. what evaluation compares (cosine on normalised
    features), so the student is not asked to match the teacher's norms; for unit
    vectors ``|s - t|^2 = 2 (1 - cos)``, so this is half the MSE of the normalised
    features. Both features must have the same dimension (FitNets' regressor is left
    out: the student's own embedding is the one served).

    Args:
        student: ``[B, d]`` the student's features.
        teacher: ``[B, d]`` the teacher's features (a fixed target).

    Returns:
        ``[B]`` float32 in ``[0, 2]``.
    """
    s = _l2_normalize(ops.cast(student, "float32"))
    t = ops.stop_gradient(_l2_normalize(ops.cast(teacher, "float32")))
    return 1.0 - ops.sum(s * t, axis=-1)


def rkd_distance(student: Tensor, teacher: Tensor, delta: float = 1.0) -> Tensor:
    """Per-anchor distance-wise relational loss RKD-D (Park et al., "Relational
    Knowledge Distillation", CVPR 2019, eq. 4-5): the student's pairwise distances
    within the batch follow the teacher's, each matrix divided by its mean over
    the pairs ``i != k`` (the paper's mu), compared with the Huber loss (smooth L1,
    threshold ``delta``).

    Choices the paper leaves open: distances are Euclidean between the
    L2-normalised features (the geometry evaluation ranks by); the Huber loss is
    averaged over the ``B - 1`` other samples of each anchor, so the mean over
    anchors is the mean over the ``B (B - 1)`` ordered pairs. The dimensions of
    student and teacher may differ.

    Args:
        student: ``[B, d_s]`` the student's features.
        teacher: ``[B, d_t]`` the teacher's features (a fixed target).
        delta: the Huber threshold (1 in the paper's code).

    Returns:
        ``[B]`` float32.
    """
    if not delta > 0:
        raise ValueError(f"delta must be positive. Received: delta={delta}")

    def normalised_distances(x):
        d = pairwise_distance(_l2_normalize(ops.cast(x, "float32")), metric="euclidean")
        off = ops.logical_not(_eye(ops.shape(d)[0]))
        d = ops.where(off, d, ops.zeros_like(d))
        mean = ops.divide_no_nan(ops.sum(d), ops.sum(ops.cast(off, "float32")))
        return ops.divide_no_nan(d, mean), off

    d_s, off = normalised_distances(student)
    d_t, _ = normalised_distances(ops.stop_gradient(teacher))
    diff = ops.abs(d_s - d_t)
    huber = ops.where(
        ops.less(diff, delta), 0.5 * ops.square(diff) / delta, diff - 0.5 * delta
    )
    huber = ops.where(off, huber, ops.zeros_like(huber))
    others = ops.cast(ops.shape(huber)[0] - 1, "float32")
    return ops.divide_no_nan(ops.sum(huber, axis=1), others)


def soft_label_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0
) -> Tensor:
    """Per-sample knowledge distillation of class probabilities (Hinton, Vinyals and
    Dean 2015): ``T^2 * KL(softmax(t / T) || softmax(s / T))``. The ``T^2`` keeps
    the gradient's scale independent of ``T`` (section 2 of the paper). Used for the
    attribute classifiers: the teacher's attribute probabilities are soft labels
    for every image, those whose attribute is unknown included.

    Args:
        student_logits: ``[B, m]`` the student's logits.
        teacher_logits: ``[B, m]`` the teacher's logits (a fixed target).
        temperature: T > 0.

    Returns:
        ``[B]`` float32, >= 0.
    """
    if not temperature > 0:
        raise ValueError(
            f"temperature must be positive. Received: temperature={temperature}"
        )
    log_s = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    t = ops.stop_gradient(ops.cast(teacher_logits, "float32")) / temperature
    log_t = ops.log_softmax(t, axis=-1)
    return temperature**2 * ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)


def distill_term_names(attribute_names: list[str]) -> list[str]:
    """The keys :func:`compute_distill_losses` returns, in order (``total`` last)."""
    return ["kd_feature", "kd_relation", *[f"kd_{n}" for n in attribute_names], "total"]


def compute_distill_losses(
    student: dict[str, Tensor],
    teacher: dict[str, Tensor],
    *,
    attribute_names: list[str],
    lambda_feature: float = 1.0,
    lambda_relation: float = 1.0,
    lambda_attribute: float = 1.0,
    temperature: float = 4.0,
) -> dict[str, Tensor]:
    """The distillation terms of one batch, each averaged over it, and their
    weighted ``total`` (which the trainer adds to the student's own loss).

    * ``kd_feature``: :func:`feature_hint` of the test features;
    * ``kd_relation``: :func:`rkd_distance` of the test features;
    * ``kd_{name}``: :func:`soft_label_kl` of each attribute's logits.

    Total: ``lambda_feature * kd_feature + lambda_relation * kd_relation +
    lambda_attribute * sum(kd_{name})``.

    Args:
        student, teacher: ``feature`` ([B, d], the test feature) and
            ``a_{name}_logits`` for each of ``attribute_names``.
        attribute_names: the attributes distilled (none for a baseline student).
        lambda_feature, lambda_relation, lambda_attribute: the weights.
        temperature: T of :func:`soft_label_kl`.
    """
    terms: dict[str, Tensor] = {
        "kd_feature": ops.mean(feature_hint(student["feature"], teacher["feature"])),
        "kd_relation": ops.mean(rkd_distance(student["feature"], teacher["feature"])),
    }
    att_sum = ops.zeros((), "float32")
    for name in attribute_names:
        key = f"a_{name}_logits"
        terms[f"kd_{name}"] = ops.mean(
            soft_label_kl(student[key], teacher[key], temperature)
        )
        att_sum += terms[f"kd_{name}"]
    terms["total"] = (
        lambda_feature * terms["kd_feature"]
        + lambda_relation * terms["kd_relation"]
        + lambda_attribute * att_sum
    )
    return terms


# ------------------------------------------------------------------ composition


def loss_term_names(
    attribute_names: list[str], variant: str, stage: int, use_ac: bool = True
) -> list[str]:
    """The keys :func:`compute_losses` returns for a variant and stage, in order
    (for creating one metric per term before training)."""
    _check_variant_stage(variant, stage)
    names = ["id_f", "tri_f"]
    if variant in ("van", "anet"):
        names += [f"att_{name}" for name in attribute_names]
    if variant == "anet":
        names += ["tri_g", "id_j", "tri_j"]
        if stage == 2 and use_ac:
            names += ["ac_id", "ac_tri"]
    return names + ["total"]


# long: 44 lines are the docstring mapping each term to its equation; the body is eq. (1)-(13) summed in the paper's order, one term after another.
def compute_losses(
    outputs: dict[str, Tensor],
    targets: dict[str, Tensor],
    *,
    attribute_names: list[str],
    variant: str,
    stage: int,
    label_smoothing: float = 0.1,
    triplet_margin: float = 0.3,
    soft_margin: bool = False,
    pattern_margin: float = 0.3,
    lambda_van: float = 1.0,
    lambda_a: float = 1.0,
    lambda_g: float = 1.0,
    use_ac: bool = True,
    classifier: str = "linear",
    circle_scale: float = 64.0,
    circle_margin: float = 0.35,
) -> dict[str, Tensor]:
    """The scalar loss terms of one variant and stage, and their weighted ``total``.

    Each term is averaged over the local batch; masked terms (``att_*``, ``tri_g``)
    over their valid samples, 0 when there are none. Totals:

    * ``baseline``: ``id_f + tri_f``.
    * ``van``: L_VAN of eq. (4) = ``tri_f + id_f + lambda_a * sum(att_i)``.
    * ``anet``, stage 1: L of eq. (10) = L_JM + lambda_van * L_VAN, with L_JM of
      eq. (9) = ``tri_j + id_j + lambda_g * tri_g``.
    * ``anet``, stage 2: L' of eq. (13) = L + AC_tri + AC_ID - lambda_van * (tri_f +
      id_f) = ``L_JM + lambda_van * lambda_a * sum(att_i) + ac_tri + ac_id``; with
      ``use_ac=False`` the AC terms are left out (the "ANet w/o AC" ablation) and not
      reported. ``id_f`` and ``tri_f`` are still reported, computed under
      ``ops.stop_gradient`` for monitoring only; they do not enter the total.

    ``stage`` only matters for ``anet``: baseline and VAN have no second stage, so
    they minimise the same loss in both. Identity cross entropies use
    ``label_smoothing``; attribute cross entropies use none. AC_tri uses the
    triplets mined on j for ``tri_j``.

    Args:
        outputs: model outputs: ``f``, ``f_logits``; for van/anet also
            ``a_{name}_logits`` per attribute; for anet also ``g``, ``j``,
            ``j_logits``. Other keys are ignored.
        targets: ``pid`` [B] identity class, ``attributes`` [B, n] (-1 unknown, in
            the order of ``attribute_names``), ``pattern`` [B] (-1 unknown).
        attribute_names: the n attributes, one per branch.
        variant: baseline | van | anet.
        stage: 1 (minimise L) or 2 (minimise L', backbone frozen by the trainer).
        label_smoothing: epsilon of the identity cross entropies.
        triplet_margin: margin of tri_f and tri_j (unused with soft_margin).
        soft_margin: softplus form of tri_f and tri_j.
        pattern_margin: margin of tri_g.
        lambda_van: lambda of eq. (10); lambda_a: lambda_A of eq. (4);
            lambda_g: lambda_G of eq. (9).
        use_ac: add AC_ID and AC_tri in stage 2.
        classifier: linear (``*_logits`` are logits) | circle (``f_logits`` and
            ``j_logits`` are cosine similarities; the identity cross entropies, and
            so AC_ID, use :func:`circle_logits` with ``circle_scale`` and
            ``circle_margin``).

    Returns:
        ``{name: float32 scalar}`` with the keys of :func:`loss_term_names`.
    """
    _check_variant_stage(variant, stage)
    freeze_f = variant == "anet" and stage == 2

    def output(key: str) -> Tensor:
        if key not in outputs:
            raise ValueError(
                f"compute_losses(variant={variant!r}) needs model output {key!r}; "
                f"the outputs have: {', '.join(sorted(outputs))}"
            )
        value = outputs[key]
        return (
            ops.stop_gradient(value) if freeze_f and key in ("f", "f_logits") else value
        )

    def target(key: str) -> Tensor:
        if key not in targets:
            raise ValueError(
                f"compute_losses(variant={variant!r}) needs target {key!r}; the "
                f"targets have: {', '.join(sorted(targets))}"
            )
        return ops.cast(targets[key], "int32")

    pid = target("pid")
    if classifier not in ("linear", "circle"):
        raise ValueError(
            f"classifier must be linear or circle. Received: classifier={classifier!r}"
        )

    def identity_ce(key: str) -> Tensor:
        logits = output(key)
        if classifier == "circle":
            logits = circle_logits(logits, pid, circle_scale, circle_margin)
        return cross_entropy_label_smooth(logits, pid, label_smoothing)

    terms: dict[str, Tensor] = {}
    ce_f = identity_ce("f_logits")
    tri_f, _, _ = batch_hard_triplet(output("f"), pid, triplet_margin, soft_margin)
    terms["id_f"] = ops.mean(ce_f)
    terms["tri_f"] = ops.mean(tri_f)
    if variant == "baseline":
        terms["total"] = terms["id_f"] + terms["tri_f"]
        return terms

    attributes = target("attributes")
    shape = _static_shape(attributes)
    if shape is not None and (
        len(shape) != 2 or shape[1] not in (None, len(attribute_names))
    ):
        raise ValueError(
            f"targets['attributes'] must be [B, {len(attribute_names)}] (one column "
            f"per attribute of {attribute_names}). Received: shape={shape}"
        )
    att_sum = ops.zeros((), "float32")
    for i, name in enumerate(attribute_names):
        loss, mask = attribute_cross_entropy(
            output(f"a_{name}_logits"), attributes[:, i]
        )
        terms[f"att_{name}"] = masked_mean(loss, mask)
        att_sum += terms[f"att_{name}"]
    l_van = terms["tri_f"] + terms["id_f"] + lambda_a * att_sum
    if variant == "van":
        terms["total"] = l_van
        return terms

    tri_g, mask_g = pattern_triplet(output("g"), target("pattern"), pattern_margin)
    ce_j = identity_ce("j_logits")
    tri_j, pos_idx, neg_idx = batch_hard_triplet(
        output("j"), pid, triplet_margin, soft_margin
    )
    terms["tri_g"] = masked_mean(tri_g, mask_g)
    terms["id_j"] = ops.mean(ce_j)
    terms["tri_j"] = ops.mean(tri_j)
    l_jm = terms["tri_j"] + terms["id_j"] + lambda_g * terms["tri_g"]
    if stage == 1:
        terms["total"] = l_jm + lambda_van * l_van
        return terms

    total = l_jm + lambda_van * lambda_a * att_sum
    if use_ac:
        terms["ac_id"] = ops.mean(ac_id(ce_j, ce_f))
        terms["ac_tri"] = ops.mean(ac_tri(output("f"), output("j"), pos_idx, neg_idx))
        total += terms["ac_tri"] + terms["ac_id"]
    terms["total"] = total
    return terms


def loss_kwargs_from_config(loss_cfg: LossConfig, head_cfg=None) -> dict:
    """The keyword arguments of :func:`compute_losses` from a LossConfig (the one
    place that reads it) and, when given, ``model.head`` (its classifier and the
    CircleSoftmax scale and margin); ``attribute_names``, ``variant`` and ``stage``
    come from the data/model config and the trainer."""
    head = {}
    if head_cfg is not None:
        head = {
            "classifier": head_cfg.classifier,
            "circle_scale": head_cfg.circle_scale,
            "circle_margin": head_cfg.circle_margin,
        }
    return head | {
        "label_smoothing": loss_cfg.label_smoothing,
        "triplet_margin": loss_cfg.triplet_margin,
        "soft_margin": loss_cfg.soft_margin,
        "pattern_margin": loss_cfg.pattern_margin,
        "lambda_van": loss_cfg.lambda_van,
        "lambda_a": loss_cfg.lambda_a,
        "lambda_g": loss_cfg.lambda_g,
        "use_ac": loss_cfg.use_ac,
    }


def distill_kwargs_from_config(distill_cfg) -> dict:
    """The keyword arguments of :func:`compute_distill_losses` from a
    :class:`~anet_tf.config.DistillConfig` (the one place that reads it)."""
    return {
        "lambda_feature": distill_cfg.lambda_feature,
        "lambda_relation": distill_cfg.lambda_relation,
        "lambda_attribute": distill_cfg.lambda_attribute,
        "temperature": distill_cfg.temperature,
    }


def _static_shape(x: Tensor) -> tuple | None:
    """The static shape of ``x`` (None for an unknown size), or None when even its
    rank is unknown (a TensorFlow graph tensor of unknown rank)."""
    try:
        return tuple(x.shape)
    except ValueError:
        return None


def _check_variant_stage(variant: str, stage: int) -> None:
    if variant not in VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(VARIANTS)}. Received: variant="
            f"{variant!r}"
        )
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 or 2. Received: stage={stage!r}")
