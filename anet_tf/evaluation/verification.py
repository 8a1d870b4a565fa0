"""Same-vehicle decisions: verification and open-set figures of a protocol's pairs.

A re-id protocol ranks; a deployment also decides: "is this the same vehicle?"
answers *yes* when the cosine similarity of two features reaches a threshold.
Over every query-gallery pair of the protocol (the pairs it ranks: same-id
same-camera gallery items removed for VeRi-776, VeRi-Wild, synthetic and folder;
for VehicleID the pairs of its first gallery draw, which the protocol's seed
makes the same draw as its first trial):

- FMR(t), the false-match rate: the share of different-vehicle pairs with score
  >= t; TMR(t), the true-match rate: the share of same-vehicle pairs with score
  >= t. At each target FMR (1e-2, 1e-3, 1e-4) the threshold is the smallest t
  with FMR(t) <= target, and the TMR is read there.
- Open set: a share (default 1/2, seeded) of the query vehicles is held out of
  the gallery (their gallery items removed). At each threshold, the *rejection
  rate* is the share of held-out queries correctly answered "no match" (top-1
  score < t); the *DIR* (detection and identification rate) is the share of the
  other queries (those with a true match left) whose top-1 is their vehicle AND
  scores >= t.

No pair matrix is held: the distance blocks of the chunked evaluator
(:func:`anet_tf.evaluation.metrics.evaluate_features`) are streamed into
:class:`PairScores`, which counts the scores of same- and different-vehicle pairs
in two histograms of ``SCORE_BINS`` = 2^16 bins over [-1, 1] (width 2^-15 ~=
3.05e-5; the last bin takes everything from 1 - 2^-15 up, the first everything
below -1 + 2^-15). The bin edges are exact binary fractions and a score of two
float32 features is exact in float64, so the number of scores >= an edge is
exact: a threshold read from the histograms is the smallest bin edge at or above
the exact threshold (less than one bin above it), and the FMR and TMR given are
exactly those at that edge. Up to ``exact_pairs`` pairs (default 2^22) the
scores themselves are kept too, and thresholds are exact: the next float above
the (k+1)-th largest different-vehicle score, k = floor(target x number of
different-vehicle pairs).

The score is the cosine similarity of the L2-normalised features: 1 - d for the
cosine distance d, 1 - d/2 for the squared Euclidean one.
"""

from __future__ import annotations

import numpy as np

from anet_tf.evaluation.metrics import _distance_block
from anet_tf.evaluation.metrics import _prepare_features

SCORE_BINS = 2**16
BIN_WIDTH = 2.0 / SCORE_BINS  # 2^-15
FMRS = (1e-2, 1e-3, 1e-4)
EXACT_PAIRS = 2**22
OPEN_SET_SHARE = 0.5


def bin_index(scores: np.ndarray, bins: int = SCORE_BINS) -> np.ndarray:
    """The histogram bin of each score: floor((s + 1) / width), clipped to
    [0, bins - 1] (bin k holds [-1 + k w, -1 + (k + 1) w))."""
    index = np.floor((np.asarray(scores, np.float64) + 1.0) * (bins / 2.0))
    return np.clip(index, 0, bins - 1).astype(np.int64)


def bin_edge(k, bins: int = SCORE_BINS):
    """The lower edge of bin ``k``: -1 + k * 2 / bins."""
    return -1.0 + np.asarray(k, np.float64) * (2.0 / bins)


def distance_to_score(distances: np.ndarray, metric: str) -> np.ndarray:
    """Cosine similarity (float64) of L2-normalised features from their distance;
    +inf (a removed item) becomes -inf."""
    d = np.asarray(distances, np.float64)
    return 1.0 - (d if metric == "cosine" else d / 2.0)


def measurable(fmr: float, different_pairs) -> bool:
    """Whether ``different_pairs`` different-vehicle pairs can tell an FMR of
    ``fmr``: at least 1 / fmr of them."""
    return fmr * different_pairs >= 1


def threshold_from_histograms(
    same: np.ndarray, different: np.ndarray, fmr: float
) -> tuple[float, float, float]:
    """(threshold, TMR, FMR) at the smallest bin edge whose FMR is <= ``fmr``.

    Edges 1 .. bins-1 are candidates (the count of scores >= them is exact); when
    none is low enough, or fewer than 1 / ``fmr`` different pairs were measured
    (no count of them can tell that FMR), the threshold is +inf (nothing is
    accepted: TMR 0).
    """
    bins = different.size
    n_same, n_diff = same.sum(), different.sum()
    if not measurable(fmr, n_diff):
        return float("inf"), 0.0, 0.0
    # scores >= edge k, for k = 0 .. bins - 1
    diff_ge = np.cumsum(different[::-1])[::-1]
    same_ge = np.cumsum(same[::-1])[::-1]
    ok = np.flatnonzero(diff_ge[1:] <= fmr * n_diff) + 1
    if ok.size == 0:
        return float("inf"), 0.0, 0.0
    k = int(ok[0])
    return (
        float(bin_edge(k, bins)),
        float(same_ge[k] / max(n_same, 1)),
        float(diff_ge[k] / n_diff),
    )


def threshold_from_scores(
    same: np.ndarray, different: np.ndarray, fmr: float
) -> tuple[float, float, float]:
    """(threshold, TMR, FMR) from the scores themselves: the smallest float64
    threshold t with (number of ``different`` >= t) <= floor(fmr x their number);
    +inf (TMR 0) with fewer than 1 / ``fmr`` different scores, which cannot tell
    that FMR."""
    different = np.sort(np.asarray(different, np.float64))[::-1]
    if not measurable(fmr, different.size):
        return float("inf"), 0.0, 0.0
    k = int(np.floor(fmr * different.size))
    t = float(np.nextafter(different[k], np.inf))
    same = np.asarray(same, np.float64)
    tmr = float(np.count_nonzero(same >= t) / max(same.size, 1))
    return t, tmr, float(np.count_nonzero(different >= t) / different.size)


def held_out_vehicles(q_pids, share: float, seed: int) -> np.ndarray:
    """The query vehicles held out of the gallery for the open-set figures:
    ``round(share x number of query vehicles)`` of them, drawn with
    ``numpy.random.default_rng(seed)``; sorted."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the held-out share must be in [0, 1). Received: {share}")
    ids = np.unique(np.asarray(q_pids))
    count = int(round(share * ids.size))
    return np.sort(np.random.default_rng(seed).choice(ids, count, replace=False))


class PairScores:
    """Counts the scores of a protocol's query-gallery pairs, block by block.

    ``add(start, block)`` takes the distances of queries ``start ..
    start + len(block)`` to the whole gallery, removed items (junk) as +inf, as
    :func:`~anet_tf.evaluation.metrics.evaluate_features` hands them to its
    ``block_sink``; :meth:`result` gives the figures.

    Args:
        q_pids, g_pids: identities of the queries and the gallery items.
        metric: cosine | euclidean (the distance of the blocks).
        open_set_share, seed: the share of query vehicles held out of the
            gallery for the open-set figures (:func:`held_out_vehicles`); 0: none.
        exact_pairs: keep the scores (exact thresholds) up to this many pairs.
        fmrs: the target false-match rates.
    """

    def __init__(
        self,
        q_pids,
        g_pids,
        metric: str = "cosine",
        *,
        open_set_share: float = OPEN_SET_SHARE,
        seed: int = 0,
        exact_pairs: int = EXACT_PAIRS,
        fmrs=FMRS,
    ):
        self.q_pids = np.asarray(q_pids).reshape(-1)
        self.g_pids = np.asarray(g_pids).reshape(-1)
        self.metric = metric
        self.fmrs = tuple(float(f) for f in fmrs)
        for f in self.fmrs:
            if not 0.0 < f < 1.0:
                raise ValueError(f"a target FMR must be in (0, 1). Received: {f}")
        self.same = np.zeros(SCORE_BINS, np.int64)
        self.different = np.zeros(SCORE_BINS, np.int64)
        self.exact_pairs = exact_pairs
        self._exact: tuple[list, list] | None = ([], []) if exact_pairs > 0 else None
        self._count = 0
        self.open_set_share, self.seed = open_set_share, seed
        self.held_out = held_out_vehicles(self.q_pids, open_set_share, seed)
        self._kept = np.flatnonzero(~np.isin(self.g_pids, self.held_out))
        n = self.q_pids.size
        self.top_score = np.full(n, -np.inf)
        self.top_correct = np.zeros(n, bool)
        self.has_match = np.zeros(n, bool)

    def add(self, start: int, block: np.ndarray) -> None:
        rows = slice(start, start + block.shape[0])
        valid = np.isfinite(block)
        same = self.g_pids[None, :] == self.q_pids[rows, None]
        scores = distance_to_score(block, self.metric)
        genuine, impostor = scores[valid & same], scores[valid & ~same]
        self.same += np.bincount(bin_index(genuine), minlength=SCORE_BINS)
        self.different += np.bincount(bin_index(impostor), minlength=SCORE_BINS)
        self._count += genuine.size + impostor.size
        if self._exact is not None:
            if self._count > self.exact_pairs:
                self._exact = None
            else:
                self._exact[0].append(genuine)
                self._exact[1].append(impostor)
        # Open set: the top-1 among the gallery items of the vehicles kept.
        kept = block[:, self._kept]
        if kept.shape[1]:
            top = np.argmin(
                kept, axis=1
            )  # the first of equal distances, as a stable sort
            top_d = kept[np.arange(kept.shape[0]), top]
            self.top_score[rows] = distance_to_score(top_d, self.metric)
            top_pid = self.g_pids[self._kept[top]]
            self.top_correct[rows] = np.isfinite(top_d) & (top_pid == self.q_pids[rows])
            self.has_match[rows] = (valid & same)[:, self._kept].any(axis=1)

    def operating_points(self) -> tuple[list[dict], bool]:
        """([{fmr, threshold, tmr, fmr_measured}] per target FMR, exact?)."""
        n_diff = int(self.different.sum())
        if n_diff == 0 or int(self.same.sum()) == 0:
            raise ValueError(
                "verification needs same-vehicle and different-vehicle pairs; the "
                f"protocol has {int(self.same.sum())} and {n_diff}"
            )
        exact = self._exact is not None
        points = []
        for f in self.fmrs:
            if exact:
                t, tmr, measured = threshold_from_scores(
                    np.concatenate(self._exact[0]), np.concatenate(self._exact[1]), f
                )
            else:
                t, tmr, measured = threshold_from_histograms(
                    self.same, self.different, f
                )
            points.append(
                {"fmr": f, "threshold": t, "tmr": tmr, "fmr_measured": measured}
            )
        return points, exact

    def open_set(self, thresholds) -> dict:
        """Rejection rate of the held-out queries and DIR of the others at each
        threshold."""
        unknown = np.isin(self.q_pids, self.held_out)
        known = ~unknown & self.has_match
        rates = []
        for t in thresholds:
            rates.append(
                {
                    "threshold": t,
                    "rejection_rate": _share(self.top_score[unknown] < t),
                    "DIR": _share(
                        self.top_correct[known] & (self.top_score[known] >= t)
                    ),
                }
            )
        return {
            "held_out_share": self.open_set_share,
            "seed": self.seed,
            "held_out_vehicles": int(self.held_out.size),
            "unknown_queries": int(unknown.sum()),
            "known_queries": int(known.sum()),
            "rates": rates,
        }

    def result(self) -> dict:
        """The verification figures (JSON-ready)."""
        points, exact = self.operating_points()
        open_set = self.open_set([p["threshold"] for p in points])
        for point, rates in zip(points, open_set.pop("rates"), strict=True):
            point["rejection_rate"] = rates["rejection_rate"]
            point["DIR"] = rates["DIR"]
            if not np.isfinite(point["threshold"]):  # nothing accepted; JSON has no inf
                point["threshold"] = None
        return {
            "same_pairs": int(self.same.sum()),
            "different_pairs": int(self.different.sum()),
            "thresholds": "exact" if exact else f"histogram, {SCORE_BINS} bins",
            "resolution": 0.0 if exact else BIN_WIDTH,
            "operating_points": points,
            "open_set": open_set,
        }


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def stream_pairs(
    query_features,
    gallery_features,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    sinks,
    *,
    metric: str = "cosine",
    chunk_size: int = 256,
) -> None:
    """Hand the distance blocks of a query x gallery protocol to each sink's
    ``add(start, block)``, same-id same-camera items as +inf (no camera ids:
    nothing removed) -- the blocks :func:`~anet_tf.evaluation.metrics.
    evaluate_features` hands its ``block_sink``, for where it does not run
    (re-ranking, VehicleID's pooled images, calibration)."""
    q, g, q_sq, g_sq = _prepare_features(query_features, gallery_features, metric)
    q_pids, g_pids = np.asarray(q_pids).reshape(-1), np.asarray(g_pids).reshape(-1)
    for start in range(0, q.shape[0], chunk_size):
        stop = min(start + chunk_size, q.shape[0])
        block = _distance_block(
            q[start:stop], g, metric, None if q_sq is None else q_sq[start:stop], g_sq
        )
        if q_camids is not None:
            junk = (g_pids[None, :] == q_pids[start:stop, None]) & (
                np.asarray(g_camids)[None, :] == np.asarray(q_camids)[start:stop, None]
            )
            block[junk] = np.inf
        for sink in sinks:
            sink.add(start, block)


def format_verification(verification: dict) -> str:
    """The verification lines under the re-id table: one Markdown row per FMR."""
    v = verification
    how = (
        "exact thresholds"
        if v["resolution"] == 0
        else f"thresholds within {v['resolution']:.1e} (histogram)"
    )
    o = v["open_set"]
    lines = [
        f"verification on every query-gallery pair ({v['same_pairs']} same-vehicle, "
        f"{v['different_pairs']} different; cosine score, {how}); open set: "
        f"{o['held_out_vehicles']} query vehicles held out of the gallery "
        f"({o['unknown_queries']} queries to reject, {o['known_queries']} to find):",
        "| FMR | threshold | TMR | rejected (held out) | DIR |",
        "|---|---|---|---|---|",
    ]
    too_few = []
    for p in v["operating_points"]:
        if not measurable(p["fmr"], v["different_pairs"]):
            too_few.append(f"{p['fmr']:g}")
            cells = [f"{p['fmr']:g}", "-", "-", "-", "-"]
        else:
            cells = [
                f"{p['fmr']:g}",
                "-" if p["threshold"] is None else f"{p['threshold']:.4f}",
                _percent(p["tmr"]),
                _percent(p.get("rejection_rate")),
                _percent(p.get("DIR")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if too_few:
        lines.append(
            f"FMR {', '.join(too_few)}: not measured, {v['different_pairs']} "
            "different-vehicle pairs are too few to tell it (1 / FMR needed)"
        )
    return "\n".join(lines)


def _percent(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"
