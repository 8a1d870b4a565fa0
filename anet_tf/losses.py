"""The loss terms of ANet (section 3, eq. 4 and 9-13) as pure TensorFlow functions.

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
  (``tf.stop_gradient``): AC can only be lowered by improving j, never by making f
  worse.
"""

from __future__ import annotations

import tensorflow as tf

from anet_tf.config import VARIANTS
from anet_tf.config import LossConfig

METRICS = ("euclidean", "cosine")
STAGES = (1, 2)

# The clamp under the square root of Euclidean distances: sqrt has an infinite
# derivative at 0, which would turn the gradient of identical features into NaN.
_MIN_SQUARED_DISTANCE = 1e-12


# ------------------------------------------------------------------ cross entropy


def cross_entropy_label_smooth(
    logits: tf.Tensor, labels: tf.Tensor, epsilon: float = 0.1
) -> tf.Tensor:
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
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    uniform = 1.0 / tf.cast(num_classes, tf.float32)
    targets = (1.0 - epsilon) * onehot + epsilon * uniform
    return -tf.reduce_sum(targets * log_probs, axis=-1)


def attribute_cross_entropy(
    logits: tf.Tensor, labels: tf.Tensor, epsilon: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-sample attribute cross entropy L_att^i of eq. (4), with unknown labels.

    A negative label (-1) means the attribute is unknown for that image (VehicleID,
    section 4.2: "we simply do not backpropagate the losses from L_att^i"): its loss
    is exactly 0 and its mask 0. Unknown labels are replaced by class 0 before the
    one-hot, so -1 is never used as a class index; the replaced loss is then
    discarded with ``tf.where``, which also gives it a zero (finite) gradient.

    Args:
        logits: ``[B, m_i]`` attribute classifier outputs.
        labels: ``[B]`` integer classes in ``[0, m_i)``, or -1 for unknown.
        epsilon: label smoothing; 0 (the default, and what :func:`compute_losses`
            uses) is the plain cross entropy of the paper.

    Returns:
        ``(loss, mask)``: ``[B]`` float32 losses (0 where unknown) and ``[B]`` float32
        mask (1 = known). Average with :func:`masked_mean`.
    """
    labels = tf.cast(labels, tf.int32)
    known = labels >= 0
    safe_labels = tf.where(known, labels, tf.zeros_like(labels))
    loss = cross_entropy_label_smooth(logits, safe_labels, epsilon)
    return tf.where(known, loss, tf.zeros_like(loss)), tf.cast(known, tf.float32)


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
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
    values = tf.cast(values, tf.float32)
    mask = tf.cast(mask, tf.float32)
    kept = tf.where(mask > 0, values * mask, tf.zeros_like(values))
    return tf.math.divide_no_nan(tf.reduce_sum(kept), tf.reduce_sum(mask))


# -------------------------------------------------------------------- distances


def pairwise_distance(
    x: tf.Tensor, y: tf.Tensor | None = None, metric: str = "euclidean"
) -> tf.Tensor:
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
    x = tf.cast(x, tf.float32)
    same = y is None
    y = x if same else tf.cast(y, tf.float32)
    if metric == "cosine":
        x = tf.math.l2_normalize(x, axis=-1)
        y = tf.math.l2_normalize(y, axis=-1)
        return 1.0 - tf.matmul(x, y, transpose_b=True)
    x2 = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
    y2 = tf.reduce_sum(tf.square(y), axis=-1, keepdims=True)
    d2 = x2 + tf.transpose(y2) - 2.0 * tf.matmul(x, y, transpose_b=True)
    if same:
        d2 = tf.linalg.set_diag(d2, tf.zeros_like(x2[:, 0]))
    return tf.sqrt(tf.maximum(d2, _MIN_SQUARED_DISTANCE))


def _paired_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row-wise Euclidean ``D(a_i, b_i)`` with the same clamp as pairwise_distance."""
    d2 = tf.reduce_sum(tf.square(a - b), axis=-1)
    return tf.sqrt(tf.maximum(d2, _MIN_SQUARED_DISTANCE))


def _hardest(
    dist: tf.Tensor, pos_mask: tf.Tensor, neg_mask: tf.Tensor
) -> tuple[tf.Tensor, ...]:
    """Batch-hard mining: farthest candidate positive, closest candidate negative.

    Returns ``(d_ap, d_an, pos_idx, neg_idx, has_pos, has_neg)``; where a row has no
    candidate its index is meaningless (callers replace it). The indices come from
    argmax/argmin, so the gradient flows only through the two chosen distances.
    """
    pos_idx = tf.argmax(
        tf.where(pos_mask, dist, -tf.ones_like(dist)), axis=1, output_type=tf.int32
    )
    neg_idx = tf.argmin(
        tf.where(neg_mask, dist, tf.fill(tf.shape(dist), tf.float32.max)),
        axis=1,
        output_type=tf.int32,
    )
    d_ap = tf.gather(dist, pos_idx, batch_dims=1)
    d_an = tf.gather(dist, neg_idx, batch_dims=1)
    has_pos = tf.reduce_any(pos_mask, axis=1)
    has_neg = tf.reduce_any(neg_mask, axis=1)
    return d_ap, d_an, pos_idx, neg_idx, has_pos, has_neg


# --------------------------------------------------------------------- triplets


def batch_hard_triplet(
    features: tf.Tensor,
    labels: tf.Tensor,
    margin: float = 0.3,
    soft_margin: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
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
    labels = tf.cast(labels, tf.int32)
    dist = pairwise_distance(features, metric="euclidean")
    batch = tf.shape(dist)[0]
    self_idx = tf.range(batch, dtype=tf.int32)
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(batch, dtype=tf.bool))
    d_ap, d_an, pos_idx, neg_idx, has_pos, has_neg = _hardest(
        dist, tf.logical_and(same, not_self), tf.logical_not(same)
    )
    d_ap = tf.where(has_pos, d_ap, tf.zeros_like(d_ap))
    pos_idx = tf.where(has_pos, pos_idx, self_idx)
    neg_idx = tf.where(has_neg, neg_idx, self_idx)
    if soft_margin:
        loss = tf.nn.softplus(d_ap - d_an)
    else:
        loss = tf.nn.relu(d_ap - d_an + margin)
    loss = tf.where(has_neg, loss, tf.zeros_like(loss))
    return loss, pos_idx, neg_idx


def pattern_triplet(
    g: tf.Tensor, patterns: tf.Tensor, margin: float = 0.3
) -> tuple[tf.Tensor, tf.Tensor]:
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
    patterns = tf.cast(patterns, tf.int32)
    dist = pairwise_distance(g, metric="euclidean")
    batch = tf.shape(dist)[0]
    known = patterns >= 0
    both_known = tf.logical_and(known[:, None], known[None, :])
    same = tf.equal(patterns[:, None], patterns[None, :])
    not_self = tf.logical_not(tf.eye(batch, dtype=tf.bool))
    pos_mask = tf.logical_and(tf.logical_and(same, not_self), both_known)
    neg_mask = tf.logical_and(tf.logical_not(same), both_known)
    d_ap, d_an, _, _, has_pos, has_neg = _hardest(dist, pos_mask, neg_mask)
    valid = tf.logical_and(known, tf.logical_and(has_pos, has_neg))
    loss = tf.nn.relu(d_ap - d_an + margin)
    return tf.where(valid, loss, tf.zeros_like(loss)), tf.cast(valid, tf.float32)


# ------------------------------------------------------- amelioration constraint


def ac_id(ce_j: tf.Tensor, ce_f: tf.Tensor) -> tf.Tensor:
    """Per-sample AC for the cross entropy, eq. (11): softplus(L_ID^j(I) - L_ID^f(I)).

    ``ce_f`` is under ``tf.stop_gradient``: in L' (eq. 13) the f-branch losses are
    disabled and f serves as a fixed reference, so AC_ID can only be lowered by
    making j classify better, never by making f worse.

    Args:
        ce_j: ``[B]`` per-sample identity cross entropy of j.
        ce_f: ``[B]`` per-sample identity cross entropy of f.

    Returns:
        ``[B]`` float32.
    """
    ce_j = tf.cast(ce_j, tf.float32)
    ce_f = tf.stop_gradient(tf.cast(ce_f, tf.float32))
    return tf.nn.softplus(ce_j - ce_f)


def ac_tri(
    f: tf.Tensor, j: tf.Tensor, pos_idx: tf.Tensor, neg_idx: tf.Tensor
) -> tf.Tensor:
    """Per-anchor AC for the triplet loss, eq. (12).

    ``softplus(D(j_a, j_p) - D(f_a, f_p)) + softplus(D(f_a, f_n) - D(j_a, j_n))``
    with Euclidean D. The paper leaves the pairs (I, I+, I-) open: we use one triple
    per anchor, the same for f and j, mined batch-hard on j (``pos_idx``/``neg_idx``
    from :func:`batch_hard_triplet` on j). The f distances are under
    ``tf.stop_gradient`` (f is the fixed reference of eq. 13, see :func:`ac_id`). An
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
    f = tf.stop_gradient(tf.cast(f, tf.float32))
    j = tf.cast(j, tf.float32)
    pos_idx = tf.cast(pos_idx, tf.int32)
    neg_idx = tf.cast(neg_idx, tf.int32)
    d_j_pos = _paired_distance(j, tf.gather(j, pos_idx))
    d_f_pos = _paired_distance(f, tf.gather(f, pos_idx))
    d_j_neg = _paired_distance(j, tf.gather(j, neg_idx))
    d_f_neg = _paired_distance(f, tf.gather(f, neg_idx))
    return tf.nn.softplus(d_j_pos - d_f_pos) + tf.nn.softplus(d_f_neg - d_j_neg)


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


def compute_losses(
    outputs: dict[str, tf.Tensor],
    targets: dict[str, tf.Tensor],
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
) -> dict[str, tf.Tensor]:
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
      ``tf.stop_gradient`` for monitoring only; they do not enter the total.

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

    Returns:
        ``{name: float32 scalar}`` with the keys of :func:`loss_term_names`.
    """
    _check_variant_stage(variant, stage)
    freeze_f = variant == "anet" and stage == 2

    def output(key: str) -> tf.Tensor:
        if key not in outputs:
            raise ValueError(
                f"compute_losses(variant={variant!r}) needs model output {key!r}; "
                f"the outputs have: {', '.join(sorted(outputs))}"
            )
        value = outputs[key]
        return (
            tf.stop_gradient(value) if freeze_f and key in ("f", "f_logits") else value
        )

    def target(key: str) -> tf.Tensor:
        if key not in targets:
            raise ValueError(
                f"compute_losses(variant={variant!r}) needs target {key!r}; the "
                f"targets have: {', '.join(sorted(targets))}"
            )
        return tf.cast(targets[key], tf.int32)

    pid = target("pid")
    terms: dict[str, tf.Tensor] = {}
    ce_f = cross_entropy_label_smooth(output("f_logits"), pid, label_smoothing)
    tri_f, _, _ = batch_hard_triplet(output("f"), pid, triplet_margin, soft_margin)
    terms["id_f"] = tf.reduce_mean(ce_f)
    terms["tri_f"] = tf.reduce_mean(tri_f)
    if variant == "baseline":
        terms["total"] = terms["id_f"] + terms["tri_f"]
        return terms

    attributes = target("attributes")
    shape = attributes.shape
    if shape.rank is not None and (
        shape.rank != 2 or shape[1] not in (None, len(attribute_names))
    ):
        raise ValueError(
            f"targets['attributes'] must be [B, {len(attribute_names)}] (one column "
            f"per attribute of {attribute_names}). Received: shape={shape}"
        )
    att_sum = tf.constant(0.0, tf.float32)
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
    ce_j = cross_entropy_label_smooth(output("j_logits"), pid, label_smoothing)
    tri_j, pos_idx, neg_idx = batch_hard_triplet(
        output("j"), pid, triplet_margin, soft_margin
    )
    terms["tri_g"] = masked_mean(tri_g, mask_g)
    terms["id_j"] = tf.reduce_mean(ce_j)
    terms["tri_j"] = tf.reduce_mean(tri_j)
    l_jm = terms["tri_j"] + terms["id_j"] + lambda_g * terms["tri_g"]
    if stage == 1:
        terms["total"] = l_jm + lambda_van * l_van
        return terms

    total = l_jm + lambda_van * lambda_a * att_sum
    if use_ac:
        terms["ac_id"] = tf.reduce_mean(ac_id(ce_j, ce_f))
        terms["ac_tri"] = tf.reduce_mean(
            ac_tri(output("f"), output("j"), pos_idx, neg_idx)
        )
        total += terms["ac_tri"] + terms["ac_id"]
    terms["total"] = total
    return terms


def loss_kwargs_from_config(loss_cfg: LossConfig) -> dict:
    """The keyword arguments of :func:`compute_losses` from a LossConfig (the one
    place that reads it); ``attribute_names``, ``variant`` and ``stage`` come from
    the data/model config and the trainer."""
    return {
        "label_smoothing": loss_cfg.label_smoothing,
        "triplet_margin": loss_cfg.triplet_margin,
        "soft_margin": loss_cfg.soft_margin,
        "pattern_margin": loss_cfg.pattern_margin,
        "lambda_van": loss_cfg.lambda_van,
        "lambda_a": loss_cfg.lambda_a,
        "lambda_g": loss_cfg.lambda_g,
        "use_ac": loss_cfg.use_ac,
    }


def _check_variant_stage(variant: str, stage: int) -> None:
    if variant not in VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(VARIANTS)}. Received: variant="
            f"{variant!r}"
        )
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 or 2. Received: stage={stage!r}")
