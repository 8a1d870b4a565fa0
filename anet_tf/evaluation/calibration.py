"""Calibrated same-vehicle decisions: a model's score distributions, thresholds
and score -> probability mapping, kept in a small versioned JSON file.

``anet-tf calibrate`` measures a model on labelled images (a dataset's test
split) and writes the file; ``search`` (``--calibration FILE --fmr 1e-3`` or
``--probability 0.9``) and ``visualize roc`` read it with
:func:`load_calibration`, which refuses another model's file and a damaged one in
one line. What the file holds (format :data:`FORMAT`):

- the protocol's query-gallery pairs (those of
  :mod:`anet_tf.evaluation.verification`): how many are same-vehicle and
  different-vehicle, and the histograms of their cosine scores over [-1, 1]
  as ``{"start": first non-empty bin, "counts": [...]}``, at the finest
  resolution (2^-15, halved as needed) that spans the scores in at most
  :data:`STORED_BINS` = 4096 bins (so at worst width 2^-11 ~= 4.9e-4);
- the threshold at FMR 1e-2, 1e-3, 1e-4, with the TMR there, measured at full
  resolution (exact up to 2^22 pairs, else within 2^-15;
  :class:`~anet_tf.evaluation.verification.PairScores`);
- a monotone mapping from score to P(same vehicle | score): isotonic regression
  or a logistic regression on the score (scikit-learn), fitted on the pairs of
  half the vehicles (a seeded split by vehicle id: no pair and no vehicle of the
  other half is seen) and measured on the pairs of the other half: expected
  calibration error (ECE, :data:`ECE_BINS` = 15 equal-width bins of predicted
  probability) and Brier score, beside the Brier score of always answering the
  fitting half's share of same-vehicle pairs. Which of the two is kept is
  chosen on the fitting half alone (each fitted on one half of its vehicles and
  scored on the other, both ways; lower mean Brier score), so the error
  reported is of pairs the choice never saw.

The pairs fitted and measured are every same-vehicle pair and, when there are
more than ``max_pairs`` pairs in all (default 2,000,000), a uniform seeded
sample of the different-vehicle pairs, each weighted by the inverse of the
sampling rate so the same-vehicle share (the prior the probability includes) is
that of all the pairs. The probability is P(same | score) at that prior: a
gallery where a query's vehicle is rarer makes it smaller.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np

from anet_tf.evaluation.protocols import verification_pairs
from anet_tf.evaluation.verification import SCORE_BINS
from anet_tf.evaluation.verification import PairScores
from anet_tf.evaluation.verification import bin_edge
from anet_tf.evaluation.verification import distance_to_score
from anet_tf.evaluation.verification import stream_pairs
from anet_tf.evaluation.verification import threshold_from_histograms
from anet_tf.io import atomic_write_text
from anet_tf.io import damaged
from anet_tf.io import read_json_file

FORMAT = 1
KIND = "anet-tf calibration"
STORED_BINS = 4096
ECE_BINS = 15
MAX_PAIRS = 2_000_000
METHODS = ("isotonic", "logistic")


class CalibrationError(ValueError):
    """A calibration that cannot be made or used as asked (another model's, an
    operating point out of range, too few vehicles); one line for people."""


# ------------------------------------------------------------------- the pairs


def pair_counts(q_pids, g_pids, q_camids=None, g_camids=None) -> tuple[int, int]:
    """(same-vehicle, different-vehicle) query-gallery pairs, same-id same-camera
    gallery items left out (no camera ids: none), from the labels alone."""
    g_pids = np.asarray(g_pids).tolist()
    by_pid = Counter(g_pids)
    by_pid_camera: Counter = Counter()
    cameras = [None] * len(q_pids)
    if q_camids is not None:
        by_pid_camera = Counter(zip(g_pids, np.asarray(g_camids).tolist()))
        cameras = np.asarray(q_camids).tolist()
    num_gallery = len(g_pids)
    same = different = 0
    for pid, camid in zip(np.asarray(q_pids).tolist(), cameras, strict=True):
        junk = by_pid_camera[(pid, camid)] if camid is not None else 0
        same += by_pid[pid] - junk
        different += num_gallery - by_pid[pid]
    return same, different


class PairSample:
    """Every same-vehicle pair and a seeded Bernoulli sample of the
    different-vehicle pairs at ``rate``, with the two vehicles of each pair, from
    the blocks of :func:`~anet_tf.evaluation.verification.stream_pairs` (a
    sink). The draws follow the pairs' row-major order, so the sample does not
    depend on the block size."""

    def __init__(self, q_pids, g_pids, metric: str, rate: float, seed: int):
        self.q_pids = np.asarray(q_pids).reshape(-1)
        self.g_pids = np.asarray(g_pids).reshape(-1)
        self.metric, self.rate = metric, rate
        self.rng = np.random.default_rng(seed)
        self.parts: list[tuple] = []

    def add(self, start: int, block: np.ndarray) -> None:
        q = self.q_pids[start : start + block.shape[0]]
        valid = np.isfinite(block)
        same = self.g_pids[None, :] == q[:, None]
        keep = valid & ~same
        if self.rate < 1.0:
            keep[keep] = self.rng.random(int(keep.sum())) < self.rate
        keep |= valid & same
        rows, cols = np.nonzero(keep)
        self.parts.append(
            (
                distance_to_score(block[rows, cols], self.metric),
                same[rows, cols],
                q[rows],
                self.g_pids[cols],
            )
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(scores, same, query vehicle, gallery vehicle, weight) of the pairs."""
        scores, same, qp, gp = (
            np.concatenate(x) for x in zip(*self.parts, strict=True)
        )
        weight = np.where(same, 1.0, 1.0 / self.rate)
        return scores, same, qp, gp, weight


# ------------------------------------------------------------- the probability


def _fit(method: str, scores, same, weight):
    """The mapping of ``method`` fitted on the pairs, as the file stores it; None
    where it is not monotone increasing (a logistic slope <= 0)."""
    try:
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ImportError(
            "calibration needs scikit-learn: pip install 'anet-tf[calibrate]'"
        ) from None
    if method == "isotonic":
        model = IsotonicRegression(
            y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip"
        )
        model.fit(scores, same.astype(np.float64), sample_weight=weight)
        return {
            "method": "isotonic",
            "x": model.X_thresholds_.tolist(),
            "y": model.y_thresholds_.tolist(),
        }
    model = LogisticRegression(C=1e4)
    model.fit(scores[:, None], same.astype(np.int64), sample_weight=weight)
    coef, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if coef <= 0:
        return None
    return {"method": "logistic", "coef": coef, "intercept": intercept}


def apply_mapping(mapping: dict, scores) -> np.ndarray:
    """P(same vehicle) of each score under a stored mapping."""
    scores = np.asarray(scores, np.float64)
    if mapping["method"] == "isotonic":
        return np.interp(scores, mapping["x"], mapping["y"])
    z = mapping["coef"] * scores + mapping["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def calibration_errors(p, same, weight, bins: int = ECE_BINS) -> dict:
    """Weighted ECE (``bins`` equal-width bins of predicted probability: the
    weight-share of each bin times |mean prediction - share of same-vehicle
    pairs|, summed) and Brier score (weighted mean of (p - y)^2)."""
    p, y, w = (
        np.asarray(p, np.float64),
        np.asarray(same, np.float64),
        np.asarray(weight, np.float64),
    )
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = w.sum()
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            wb = w[m].sum()
            ece += wb / total * abs(np.dot(w[m], p[m]) / wb - np.dot(w[m], y[m]) / wb)
    return {"ece": float(ece), "brier": float(np.dot(w, (p - y) ** 2) / total)}


def _split_vehicles(vehicles: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(np.unique(vehicles))
    half = (shuffled.size + 1) // 2
    return np.sort(shuffled[:half]), np.sort(shuffled[half:])


def _within(qp, gp, vehicles) -> np.ndarray:
    return np.isin(qp, vehicles) & np.isin(gp, vehicles)


def _has_both(same, mask) -> bool:
    return bool(same[mask].any() and (~same[mask]).any())


def _choose_method(scores, same, qp, gp, weight, vehicles, rng) -> tuple[str, dict]:
    """The method with the lower mean Brier score over the two halves of
    ``vehicles`` (each fitted on one, scored on the other); logistic where a half
    lacks same- or different-vehicle pairs."""
    a, b = _split_vehicles(vehicles, rng)
    folds = [_within(qp, gp, a), _within(qp, gp, b)]
    if not all(_has_both(same, f) for f in folds):
        return "logistic", {
            "by": "too few vehicles to compare; logistic (2 parameters)"
        }
    brier = {}
    for method in METHODS:
        values = []
        for fit, test in (folds, folds[::-1]):
            mapping = _fit(method, scores[fit], same[fit], weight[fit])
            if mapping is None:
                break
            p = apply_mapping(mapping, scores[test])
            values.append(calibration_errors(p, same[test], weight[test])["brier"])
        if len(values) == 2:
            brier[method] = float(np.mean(values))
    chosen = min(brier, key=brier.get) if brier else "isotonic"
    return chosen, {
        "by": "mean Brier score, 2 folds of the fitting vehicles",
        "brier": brier,
    }


def fit_probability(scores, same, qp, gp, weight, seed: int = 0) -> dict:
    """The score -> probability mapping fitted on the pairs of half the vehicles
    (seeded), with its errors on the pairs of the other half (module docstring).

    Raises:
        CalibrationError: a half without same- or different-vehicle pairs.
    """
    rng = np.random.default_rng(seed)
    vehicles = np.concatenate([qp, gp])
    fit_vehicles, test_vehicles = _split_vehicles(vehicles, rng)
    fit, test = _within(qp, gp, fit_vehicles), _within(qp, gp, test_vehicles)
    if not (_has_both(same, fit) and _has_both(same, test)):
        raise CalibrationError(
            f"too few vehicles to calibrate: {np.unique(vehicles).size} vehicles; each "
            "half needs same-vehicle and different-vehicle pairs (at least 4 vehicles "
            "with 2+ images each)"
        )
    method, selection = _choose_method(
        scores[fit], same[fit], qp[fit], gp[fit], weight[fit], fit_vehicles, rng
    )
    mapping = _fit(method, scores[fit], same[fit], weight[fit])
    if mapping is None:  # a logistic slope <= 0: the scores do not separate
        mapping = _fit("isotonic", scores[fit], same[fit], weight[fit])
    prior = float(np.dot(weight[fit], same[fit]) / weight[fit].sum())
    held_out = calibration_errors(
        apply_mapping(mapping, scores[test]), same[test], weight[test]
    )
    held_out["brier_prior"] = calibration_errors(
        np.full(int(test.sum()), prior), same[test], weight[test]
    )["brier"]
    return {
        **mapping,
        "selection": selection,
        "prior_same": prior,
        "fit": {"vehicles": int(fit_vehicles.size), "pairs": int(fit.sum())},
        "held_out": {
            "vehicles": int(test_vehicles.size),
            "pairs": int(test.sum()),
            "same_pairs": int(same[test].sum()),
            "ece_bins": ECE_BINS,
            **held_out,
        },
    }


# ---------------------------------------------------------------- the payload


def _sparse(counts: np.ndarray) -> dict:
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return {"start": 0, "counts": []}
    return {
        "start": int(nonzero[0]),
        "counts": counts[nonzero[0] : nonzero[-1] + 1].tolist(),
    }


def _dense(sparse: dict, bins: int) -> np.ndarray:
    counts = np.zeros(bins, np.int64)
    values = np.asarray(sparse["counts"], np.int64)
    counts[sparse["start"] : sparse["start"] + values.size] = values
    return counts


def _stored_histograms(scores: PairScores) -> dict:
    """The histograms of ``scores`` at the finest resolution (2^16 bins over
    [-1, 1], halved as often as needed) at which the bins from the lowest score
    to the highest are at most :data:`STORED_BINS`."""
    nonzero = np.flatnonzero(scores.same + scores.different)
    factor = 1
    while nonzero[-1] // factor - nonzero[0] // factor + 1 > STORED_BINS:
        factor *= 2
    bins = SCORE_BINS // factor
    return {
        "range": [-1.0, 1.0],
        "bins": bins,
        "same": _sparse(scores.same.reshape(bins, factor).sum(1)),
        "different": _sparse(scores.different.reshape(bins, factor).sum(1)),
    }


def build_calibration(
    dataset: str,
    query_features,
    gallery_features,
    query_records: Sequence,
    gallery_records: Sequence,
    *,
    model: dict,
    metric: str = "cosine",
    chunk_size: int = 256,
    seed: int = 0,
    max_pairs: int = MAX_PAIRS,
) -> dict:
    """The calibration file's content for the features of a dataset's test split.

    Args:
        dataset: the protocol (:func:`~anet_tf.evaluation.protocols.verification_pairs`).
        query_features, gallery_features, query_records, gallery_records: as
            :func:`~anet_tf.evaluation.protocols.evaluate_protocol`.
        model: ``{"fingerprint", ...}``: what the file is valid for.
        seed: the vehicle split, the method choice and the pair sample.
        max_pairs: pairs fitted and measured at most (a sample beyond).
    """
    if max_pairs < 1:
        raise CalibrationError(f"--max-pairs must be >= 1. Received: {max_pairs}")
    q, g, q_pids, g_pids, q_camids, g_camids = verification_pairs(
        dataset, query_features, gallery_features, query_records, gallery_records, seed
    )
    n_same, n_diff = pair_counts(q_pids, g_pids, q_camids, g_camids)
    rate = (
        1.0
        if n_same + n_diff <= max_pairs
        else max(max_pairs - n_same, 1) / max(n_diff, 1)
    )
    scores = PairScores(q_pids, g_pids, metric, open_set_share=0.0, seed=seed)
    sample = PairSample(q_pids, g_pids, metric, min(rate, 1.0), seed)
    stream_pairs(
        q,
        g,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        [scores, sample],
        metric=metric,
        chunk_size=chunk_size,
    )
    points, exact = scores.operating_points()
    for p in points:
        p["threshold"] = p["threshold"] if math.isfinite(p["threshold"]) else None
    return {
        "format": FORMAT,
        "kind": KIND,
        "model": model,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "pairs": {
            "same": int(scores.same.sum()),
            "different": int(scores.different.sum()),
            "protocol": dataset,
            "metric": metric,
        },
        "histograms": _stored_histograms(scores),
        "operating_points": [
            {k: p[k] for k in ("fmr", "threshold", "tmr", "fmr_measured")}
            for p in points
        ],
        "thresholds": "exact" if exact else f"histogram, {SCORE_BINS} bins",
        "probability": fit_probability(*sample.arrays(), seed=seed),
        "sample": {
            "max_pairs": max_pairs,
            "different_rate": min(rate, 1.0),
            "seed": seed,
        },
    }


def write_calibration(path: str, payload: dict) -> str:
    """Write the file whole or not at all (:func:`anet_tf.io.atomic_write_text`)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return path


# ------------------------------------------------------------- the calibration


class Calibration:
    """A model's calibration as :func:`load_calibration` reads it.

    Attributes:
        path, fingerprint: the file and the model fingerprint it is valid for.
        same, different: the stored histograms, dense int64 [bins] over [-1, 1].
        operating_points: ``[{fmr, threshold, tmr, fmr_measured}]``.
        mapping: the score -> probability mapping and its held-out errors.
    """

    def __init__(self, path: str, payload: dict):
        self.path, self.payload = path, payload
        self.fingerprint = payload["model"]["fingerprint"]
        h = payload["histograms"]
        self.bins = int(h["bins"])
        self.same = _dense(h["same"], self.bins)
        self.different = _dense(h["different"], self.bins)
        self.operating_points = payload["operating_points"]
        self.mapping = payload["probability"]

    def probability(self, scores) -> np.ndarray:
        """P(same vehicle) of each cosine score (float64, same shape)."""
        return apply_mapping(self.mapping, scores)

    def threshold(
        self, *, fmr: float | None = None, probability: float | None = None
    ) -> float:
        """The score threshold (decide "same vehicle" at score >= it) of an
        operating point: a false-match rate, or the probability the mapping
        gives. An FMR of the file's operating points gives its threshold as
        measured; another is read from the stored histograms (within one of
        their bins, ``2 / bins``). +inf where no threshold reaches the FMR (nothing is accepted).

        Raises:
            CalibrationError: neither or both given, a value outside (0, 1), or a
                probability no score reaches.
        """
        if (fmr is None) == (probability is None):
            raise CalibrationError("give one operating point: an FMR or a probability")
        name, value = ("fmr", fmr) if fmr is not None else ("probability", probability)
        if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
            raise CalibrationError(
                f"--{name} must be in (0, 1), e.g. --fmr 1e-3 or --probability 0.9. "
                f"Received: {value}"
            )
        if fmr is not None:
            for p in self.operating_points:
                if math.isclose(p["fmr"], fmr, rel_tol=1e-9):
                    return (
                        float("inf")
                        if p["threshold"] is None
                        else float(p["threshold"])
                    )
            return threshold_from_histograms(self.same, self.different, fmr)[0]
        return self._score_of_probability(probability)

    def _score_of_probability(self, p: float) -> float:
        m = self.mapping
        if m["method"] == "logistic":
            return float((math.log(p / (1.0 - p)) - m["intercept"]) / m["coef"])
        x, y = np.asarray(m["x"], np.float64), np.asarray(m["y"], np.float64)
        reached = np.flatnonzero(y >= p)
        if reached.size == 0:
            raise CalibrationError(
                f"{self.path}: no score reaches probability {p} under this "
                f"calibration (the highest is {y.max():.4f}); ask for a lower "
                "--probability or use --fmr"
            )
        i = int(reached[0])
        if i == 0:
            return -1.0
        return float(x[i - 1] + (p - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FMR, TMR, threshold) at each stored bin edge, threshold ascending."""
        diff_ge = np.cumsum(self.different[::-1])[::-1]
        same_ge = np.cumsum(self.same[::-1])[::-1]
        return (
            diff_ge / max(diff_ge[0], 1),
            same_ge / max(same_ge[0], 1),
            bin_edge(np.arange(self.bins), self.bins),
        )


# Fields every calibration file has: (path of keys, the type it must be).
_REQUIRED = (
    (("model", "fingerprint"), str),
    (("histograms", "bins"), int),
    (("histograms", "same", "start"), int),
    (("histograms", "same", "counts"), list),
    (("histograms", "different", "start"), int),
    (("histograms", "different", "counts"), list),
    (("operating_points",), list),
    (("probability", "method"), str),
)


def calibrates(calibrated: dict, model: dict) -> bool:
    """Whether a calibration of the model ``calibrated`` (a file's ``model``
    record) holds for ``model`` (a gallery's or embeddings file's model record,
    or :meth:`ServingModel.info <anet_tf.search.serving.ServingModel.info>`):
    the same SavedModel fingerprint, or, for a calibration of a run's weights
    (``"kind": "run_weights"``), the weights digest an export of them records in
    its metadata, with the same test-time feature."""
    if calibrated["fingerprint"] == model.get("fingerprint"):
        return True
    return (
        calibrated.get("kind") == "run_weights"
        and model.get("weights_digest") == calibrated["fingerprint"]
        and calibrated.get("feature", model.get("feature")) == model.get("feature")
    )


def _another_model(path: str, calibrated: dict, model: str | dict) -> str:
    """The one line refusing a calibration of ``calibrated`` for ``model``."""
    what = (
        f"fingerprint {model}"
        if isinstance(model, str)
        else f"{model.get('path', '?')}, fingerprint {model.get('fingerprint')}"
        + (
            f", weights digest {model['weights_digest']}"
            if model.get("weights_digest")
            else ""
        )
    )
    advice = (
        "scores of one model mean nothing for another; calibrate this model with "
        "anet-tf calibrate --model SAVED_MODEL --out FILE"
    )
    if (
        isinstance(model, dict)
        and model.get("weights_digest") == calibrated["fingerprint"]
    ):
        return (
            f"{path} calibrates feature {calibrated.get('feature')} of the weights of "
            f"{model.get('path', '?')}, which serves feature {model.get('feature')}; "
            f"{advice}"
        )
    return (
        f"{path} calibrates another model ({calibrated.get('path', '?')}, "
        f"fingerprint {calibrated['fingerprint']}), not this one ({what}): {advice}"
    )


def load_calibration(path: str, model: str | dict | None) -> Calibration:
    """The :class:`Calibration` in ``path``, made for ``model``: its fingerprint,
    or its model record (:func:`calibrates`: a run's calibration also serves the
    run's export), or None (any model, e.g. for a picture).

    Raises:
        DamagedFileError: not JSON, another format version, a field missing or
            of the wrong type (the file and the field named).
        CalibrationError: the file calibrates another model.
    """
    advice = "make it again with anet-tf calibrate"
    payload = read_json_file(path, advice=advice)
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise damaged(
            path, f'not an anet-tf calibration file (no "kind": "{KIND}")', advice
        )
    if payload.get("format") != FORMAT:
        raise damaged(
            path,
            f"format {payload.get('format')!r}; this anet-tf reads format {FORMAT}",
            advice,
        )
    for keys, kind in _REQUIRED:
        value = payload
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise damaged(
                path, f"field {'.'.join(keys)} missing or not {kind.__name__}", advice
            )
    _check_content(path, payload, advice)
    calibrated = payload["model"]
    if model is not None and not (
        calibrated["fingerprint"] == model
        if isinstance(model, str)
        else calibrates(calibrated, model)
    ):
        raise CalibrationError(_another_model(path, calibrated, model))
    return Calibration(path, payload)


def _check_content(path: str, payload: dict, advice: str) -> None:
    """The values a :class:`Calibration` computes with are usable."""
    h = payload["histograms"]
    if h["bins"] < 2:
        raise damaged(path, "field histograms.bins must be >= 2", advice)
    for name in ("same", "different"):
        counts = h[name]["counts"]
        if not (
            0 <= h[name]["start"]
            and h[name]["start"] + len(counts) <= h["bins"]
            and all(isinstance(c, int) and c >= 0 for c in counts)
        ):
            raise damaged(
                path,
                f"field histograms.{name} does not fit {h['bins']} bins of counts",
                advice,
            )
    for i, p in enumerate(payload["operating_points"]):
        if not (
            isinstance(p, dict)
            and isinstance(p.get("fmr"), float)
            and (
                p.get("threshold") is None
                or isinstance(p.get("threshold"), (int, float))
            )
        ):
            raise damaged(
                path,
                f"field operating_points[{i}] needs a number fmr and threshold",
                advice,
            )
    m = payload["probability"]
    if m["method"] == "logistic":
        ok = (
            all(isinstance(m.get(k), (int, float)) for k in ("coef", "intercept"))
            and m["coef"] > 0
        )
    elif m["method"] == "isotonic":
        x, y = m.get("x"), m.get("y")
        ok = (
            isinstance(x, list)
            and isinstance(y, list)
            and len(x) == len(y) >= 1
            and all(isinstance(v, (int, float)) for v in x + y)
            and bool(np.all(np.diff(x) >= 0))
            and bool(np.all(np.diff(y) >= 0))
            and all(0.0 <= v <= 1.0 for v in y)
        )
    else:
        ok = False
    if not ok:
        raise damaged(
            path,
            f"field probability: method {m['method']!r} without a monotone mapping "
            f"(valid methods: {', '.join(METHODS)})",
            advice,
        )


def format_calibration(payload: dict) -> str:
    """What ``anet-tf calibrate`` prints: pairs, thresholds, probability errors."""
    pairs, prob = payload["pairs"], payload["probability"]
    lines = [
        f"pairs: {pairs['same']} same-vehicle, {pairs['different']} different "
        f"({pairs['protocol']} protocol; thresholds {payload['thresholds']})",
        "| FMR | threshold | TMR |",
        "|---|---|---|",
    ]
    for p in payload["operating_points"]:
        t = "-" if p["threshold"] is None else f"{p['threshold']:.4f}"
        lines.append(f"| {p['fmr']:g} | {t} | {100 * p['tmr']:.2f} |")
    h = prob["held_out"]
    lines.append(
        f"probability: {prob['method']} fitted on {prob['fit']['pairs']} pairs of "
        f"{prob['fit']['vehicles']} vehicles; on {h['pairs']} pairs of the other "
        f"{h['vehicles']} vehicles: ECE {h['ece']:.4f} ({h['ece_bins']} bins), "
        f"Brier {h['brier']:.5f} (prior only: {h['brier_prior']:.5f})"
    )
    return "\n".join(lines)
