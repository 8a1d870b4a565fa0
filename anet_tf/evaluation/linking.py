"""How well tracks were linked into vehicles: pairwise precision/recall/F1 and IDF1.

A linking gives every track (a run of crops of one vehicle in one camera) a global
id; the truth gives it a vehicle id. Two measures, both over tracks:

* **Pairwise** precision, recall and F1 of "same vehicle" decisions over the
  ``T (T - 1) / 2`` pairs of tracks: a pair is a true positive when both the truth
  and the linking put its two tracks together. This is the pair-counting measure
  of clustering (e.g. Manning et al., *Introduction to Information Retrieval*,
  sec. 16.3).
* **IDF1** (Ristani et al., "Performance Measures and a Data Set for Multi-Target,
  Multi-Camera Tracking", ECCV 2016 workshops), the ranking measure of the AI City
  Challenge multi-camera track: true identities and global ids are matched one to
  one so as to maximise the weight of the tracks they share (IDTP);
  ``IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN)``. Every track has a truth and a global
  id here, so IDFP = IDFN = W - IDTP and IDF1 = IDP = IDR = IDTP / W, W the total
  weight. With ``weights`` = track lengths it counts crops (detections), as the
  challenge does; by default every track counts once.

  The one-to-one matching is :func:`scipy.optimize.linear_sum_assignment` on the
  identity-by-global-id overlap table: exactly what ``motmetrics`` computes
  (``id_global_assignment``) when each track is fed as one frame holding one truth
  and one hypothesis at distance 0; ``tests/test_link.py`` checks the two agree. We
  do not call motmetrics itself: it is a frame-by-frame accumulator on pandas, for
  a single assignment.

Tracks whose truth is unknown (-1) are left out of both measures.
"""

from __future__ import annotations

import numpy as np

from anet_tf.data.records import UNKNOWN


def _labels(true, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.ndim != 1 or true.shape != pred.shape:
        raise ValueError(
            f"true and pred must be 1-D of one length. Received: "
            f"true.shape={true.shape}, pred.shape={pred.shape}"
        )
    keep = true != UNKNOWN
    return true[keep], pred[keep], keep


def _overlap(true: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weight of tracks of truth t and global id g, [n_true, n_pred]."""
    _, t = np.unique(true, return_inverse=True)
    _, g = np.unique(pred, return_inverse=True)
    table = np.zeros((t.max(initial=-1) + 1, g.max(initial=-1) + 1), np.float64)
    np.add.at(table, (t, g), weights)
    return table


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) / 2).sum())


def pairwise_scores(true, pred) -> dict:
    """Pairwise precision, recall and F1 of same-vehicle track pairs.

    Args:
        true: true vehicle id per track, int [T] (-1: unknown, left out).
        pred: global id per track, int [T].

    Returns:
        ``{"precision", "recall", "f1", "true_pairs", "linked_pairs",
        "correct_pairs"}``; a rate with nothing to divide by is 1.0 (no pair
        linked: no wrong link; no true pair: none missed).
    """
    true, pred, _ = _labels(true, pred)
    table = _overlap(true, pred, np.ones(len(true)))
    correct = _pairs(table)
    linked = _pairs(table.sum(axis=0))
    actual = _pairs(table.sum(axis=1))
    precision = correct / linked if linked else 1.0
    recall = correct / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_pairs": int(actual),
        "linked_pairs": int(linked),
        "correct_pairs": int(correct),
    }


def idf1(true, pred, weights=None) -> float:
    """IDF1 of a linking (the module docstring's definition).

    Args:
        true: true vehicle id per track, int [T] (-1: unknown, left out).
        pred: global id per track, int [T].
        weights: weight of each track, [T] (e.g. its length in crops); default 1.

    Returns:
        IDF1 in [0, 1]; 1.0 when no track has a known truth.
    """
    from scipy.optimize import linear_sum_assignment

    n = len(np.asarray(true))
    weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (n,):
        raise ValueError(
            f"weights must have one value per track. Received: "
            f"weights.shape={weights.shape} for {n} tracks"
        )
    true, pred, keep = _labels(true, pred)
    weights = weights[keep]
    total = weights.sum()
    if not total:
        return 1.0
    table = _overlap(true, pred, weights)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / total)


def linking_scores(true, pred, weights=None) -> dict:
    """:func:`pairwise_scores` and :func:`idf1` in one dict (key ``idf1``)."""
    return {**pairwise_scores(true, pred), "idf1": idf1(true, pred, weights)}
