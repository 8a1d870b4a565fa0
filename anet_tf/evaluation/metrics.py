"""Re-identification metrics in NumPy: CMC, mAP and mINP (FastReID's definitions).

Two entry points give the same numbers:

- :func:`evaluate_rank` takes a full query x gallery distance matrix and ranks each
  row with a stable argsort, as FastReID's ``eval_func`` does (but with a stable
  sort, so ties are broken by gallery index and the result is reproducible).
- :func:`evaluate_features` takes the features and never holds the full distance
  matrix nor sorts a gallery row: it computes the distances of ``chunk_size``
  queries at a time and counts, for each true match, how many valid gallery items
  come before it. Peak memory is O(chunk_size x gallery), which is what makes a
  VeRi-Wild-large gallery (10,000 x 128,517) evaluable on a laptop.

Definitions (``datasets.md`` section 4). For a query with identity ``pid`` seen by
camera ``camid``, gallery items with the same ``pid`` AND the same ``camid`` are
junk: they are removed from the ranking. The remaining items with the same ``pid``
are the true matches; a query with none is skipped (and counted in
``num_skipped_queries``). With the true matches at 0-based ranks
``r_1 < ... < r_n`` among the remaining items:

- CMC(k) = 1 if r_1 < k, averaged over valid queries;
- AP = (1/n) sum_k k / (r_k + 1), the non-interpolated average precision of
  FastReID and torchreid;
- INP = n / (r_n + 1) (Ye et al., "Deep learning for person re-identification");
- the trapezoid AP of the MATLAB ``compute_AP`` of the VeRi/Market evaluation kits,
  (1/n) sum_k (p_{k-1} + p_k) / 2 with p_k = k / (r_k + 1) and p_{k-1} = (k-1) / r_k
  (1 when r_k = 0), on request, for comparison with MATLAB-era papers.

The rank of an item is its position in a stable ascending sort of the row: the
number of valid items with a smaller distance plus the number of valid items with
the same distance and a smaller gallery index.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "euclidean")


# ---------------------------------------------------------------------- distances


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x / max(||x||_2, eps)`` along ``axis``, as float32 (no temporary of the
    size of ``x`` besides the result)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float32), axis, -1)
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    return np.moveaxis(x / np.maximum(norm, np.float32(eps)), -1, axis)


def pairwise_distance(
    query_features: np.ndarray, gallery_features: np.ndarray, metric: str = "cosine"
) -> np.ndarray:
    """The full float32 query x gallery distance matrix.

    Computed exactly as :func:`evaluate_features` computes its chunks, so that
    ``evaluate_rank(pairwise_distance(q, g, m), ...)`` and
    ``evaluate_features(q, g, ..., metric=m)`` see bit-identical distances.

    Args:
        query_features: [num_query, dim].
        gallery_features: [num_gallery, dim].
        metric: cosine (1 - cosine similarity; the features are L2-normalised here)
            | euclidean (squared Euclidean distance, as FastReID; the same ranking
            as the Euclidean distance).
    """
    q, g, q_sq, g_sq = _prepare_features(query_features, gallery_features, metric)
    return _distance_block(q, g, metric, q_sq, g_sq)


def _prepare_features(
    query_features: np.ndarray, gallery_features: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if metric not in METRICS:
        raise ValueError(
            f"unknown metric {metric!r}; valid: {', '.join(METRICS)}. "
            f"Received: metric={metric!r}"
        )
    q = np.asarray(query_features, dtype=np.float32)
    g = np.asarray(gallery_features, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            "query and gallery features must be [num, dim] with the same dim. "
            f"Received: query_features.shape={q.shape}, "
            f"gallery_features.shape={g.shape}"
        )
    for name, x in (("query_features", q), ("gallery_features", g)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    # Normalised (cosine) in float32, then held as float64 for _distance_block.
    if metric == "cosine":
        return _f64(l2_normalize(q)), _f64(l2_normalize(g)), None, None
    q_sq, g_sq = np.einsum("ij,ij->i", q, q), np.einsum("ij,ij->i", g, g)
    return _f64(q), _f64(g), q_sq, g_sq


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _distance_block(
    q: np.ndarray,
    g: np.ndarray,
    metric: str,
    q_sq: np.ndarray | None,
    g_sq: np.ndarray | None,
) -> np.ndarray:
    """Distances of a block of queries to the whole gallery, [len(q), len(g)].

    The distance of a pair must not depend on how the queries were chunked, or ties
    would be broken differently by chunk size. BLAS picks its kernel by the shape
    (gemv for one row, small-matrix or blocked gemm paths for more), each summing in
    its own order, so float32 products differ in the last bit between chunkings
    (seen with OpenBLAS). The products are therefore summed in float64, where the
    product of two float32 values is exact and the order barely matters, and then
    rounded to float32: the same float32 distance whatever the kernel.
    """
    d = np.matmul(q, g.T).astype(np.float32)
    if metric == "cosine":
        np.subtract(np.float32(1.0), d, out=d)
    else:
        d *= np.float32(-2.0)
        d += q_sq[:, None]
        d += g_sq[None, :]
        np.maximum(d, np.float32(0.0), out=d)
    return d


# ------------------------------------------------------------------------ scores


class _Accumulator:
    """Sums the per-query scores of valid queries."""

    def __init__(self, max_rank: int, trapezoid_ap: bool):
        self.cmc = np.zeros(max_rank, dtype=np.float64)
        self.ap: list[float] = []
        self.inp: list[float] = []
        self.ap_trapezoid: list[float] = []
        self.trapezoid_ap = trapezoid_ap
        self.num_skipped = 0

    def add(self, hit_ranks: np.ndarray) -> None:
        """Record one query from the sorted 0-based ranks of its true matches among
        the valid gallery items."""
        n = hit_ranks.size
        if n == 0:
            self.num_skipped += 1
            return
        ranks = hit_ranks.astype(np.float64)
        hits = np.arange(1, n + 1, dtype=np.float64)
        if hit_ranks[0] < self.cmc.size:
            self.cmc[hit_ranks[0] :] += 1.0
        precision = hits / (ranks + 1.0)
        self.ap.append(float(np.mean(precision)))
        self.inp.append(n / (ranks[-1] + 1.0))
        if self.trapezoid_ap:
            previous = np.ones_like(ranks)
            np.divide(hits - 1.0, ranks, out=previous, where=ranks > 0)
            self.ap_trapezoid.append(float(np.mean((previous + precision) / 2.0)))

    def result(self) -> dict:
        num_valid = len(self.ap)
        if num_valid == 0:
            raise ValueError(
                "no query has a true match in the gallery once same-id-same-camera "
                f"items are removed ({self.num_skipped} queries skipped); check the "
                "ids and camera ids of the query and gallery"
            )
        out = {
            "cmc": self.cmc / num_valid,
            "mAP": float(np.mean(self.ap)),
            "mINP": float(np.mean(self.inp)),
            "num_valid_queries": num_valid,
            "num_skipped_queries": self.num_skipped,
        }
        if self.trapezoid_ap:
            out["mAP_trapezoid"] = float(np.mean(self.ap_trapezoid))
        return out


def _check_labels(
    num_query: int,
    num_gallery: int,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int,
):
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1. Received: max_rank={max_rank}")
    q_pids = np.asarray(q_pids).reshape(-1)
    g_pids = np.asarray(g_pids).reshape(-1)
    if (q_camids is None) != (g_camids is None):
        raise ValueError(
            "give camera ids for both query and gallery, or for neither (a dataset "
            "without cameras). Received: "
            f"q_camids is None={q_camids is None}, g_camids is None={g_camids is None}"
        )
    arrays = {"q_pids": (q_pids, num_query), "g_pids": (g_pids, num_gallery)}
    if q_camids is not None:
        q_camids = np.asarray(q_camids).reshape(-1)
        g_camids = np.asarray(g_camids).reshape(-1)
        arrays["q_camids"] = (q_camids, num_query)
        arrays["g_camids"] = (g_camids, num_gallery)
    for name, (array, expected) in arrays.items():
        if array.shape[0] != expected:
            raise ValueError(
                f"{name} has {array.shape[0]} entries but there are {expected} "
                f"{'queries' if name.startswith('q') else 'gallery items'}"
            )
    return q_pids, g_pids, q_camids, g_camids


# ------------------------------------------------------------------ evaluate_rank


def evaluate_rank(
    distmat: np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    trapezoid_ap: bool = False,
) -> dict:
    """CMC, mAP and mINP from a full distance matrix (smaller = more similar).

    Each row is ranked with a stable argsort, so equal distances keep gallery order.

    Args:
        distmat: [num_query, num_gallery] distances.
        q_pids, g_pids: identities of the queries and the gallery items.
        q_camids, g_camids: their camera ids; gallery items with the query's id and
            camera are removed. ``None`` for both: the dataset has no cameras and
            nothing is removed.
        max_rank: length of the CMC curve.
        trapezoid_ap: also return ``mAP_trapezoid`` (MATLAB ``compute_AP``).

    Returns:
        dict with ``cmc`` (float64 [max_rank], CMC at rank 1..max_rank, in [0, 1]),
        ``mAP``, ``mINP`` (in [0, 1]), ``num_valid_queries``,
        ``num_skipped_queries`` (queries without a true match) and, on request,
        ``mAP_trapezoid``.

    Raises:
        ValueError: shapes that do not agree, NaN distances, or no valid query.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(
            f"distmat must be [num_query, num_gallery]. Received: shape={distmat.shape}"
        )
    q_pids, g_pids, q_camids, g_camids = _check_labels(
        distmat.shape[0], distmat.shape[1], q_pids, g_pids, q_camids, g_camids, max_rank
    )
    if np.isnan(distmat).any():
        raise ValueError("distmat contains NaN")
    acc = _Accumulator(max_rank, trapezoid_ap)
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        if q_camids is not None:
            keep = ~(same_pid & (g_camids[order] == q_camids[i]))
            same_pid = same_pid[keep]
        acc.add(np.flatnonzero(same_pid))
    return acc.result()


# -------------------------------------------------------------- evaluate_features


def evaluate_features(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    metric: str = "cosine",
    chunk_size: int = 256,
    trapezoid_ap: bool = False,
    progress=None,
    block_sink=None,
) -> dict:
    """The numbers of :func:`evaluate_rank` without the full distance matrix.

    Distances are computed for ``chunk_size`` queries at a time (one
    [chunk_size, num_gallery] block, summed in float64 and kept in float32, the
    same arithmetic as
    :func:`pairwise_distance`). A gallery row is never sorted: for each query only
    its true matches are sorted, by (distance, gallery index), and one pass over the
    items no farther than the last match counts how many valid items precede each
    match -- the match's rank under a stable sort. The cost per query is
    O(num_gallery + m log n) for m items up to the last of n matches, instead of the
    O(num_gallery log num_gallery) of a sort, and memory does not grow with the
    number of queries.

    Args:
        query_features, gallery_features: [num, dim] features.
        q_pids, g_pids, q_camids, g_camids, max_rank, trapezoid_ap: as
            :func:`evaluate_rank`.
        metric: cosine | euclidean, see :func:`pairwise_distance`.
        chunk_size: queries per distance block. Peak memory is the features and
            their float64 copy plus ``12 * chunk_size * num_gallery`` bytes for the
            block (float64 products, float32 distances) and O(num_gallery) per query.
        progress: told of each chunk's queries (``progress.update(n)``,
            :class:`anet_tf.progress.Progress`); None: nothing.
        block_sink: given each block once ranked, ``block_sink.add(start,
            block)`` (queries ``start ..``, same-id same-camera items as +inf):
            the verification figures are counted from the same distances
            (:class:`anet_tf.evaluation.verification.PairScores`); None: nothing.

    Returns:
        the dict of :func:`evaluate_rank`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1. Received: chunk_size={chunk_size}")
    q, g, q_sq, g_sq = _prepare_features(query_features, gallery_features, metric)
    num_query, num_gallery = q.shape[0], g.shape[0]
    q_pids, g_pids, q_camids, g_camids = _check_labels(
        num_query, num_gallery, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    # Gallery indices grouped by identity, ascending within each identity.
    by_pid = np.argsort(g_pids, kind="stable")
    pid_values, pid_starts, pid_counts = np.unique(
        g_pids[by_pid], return_index=True, return_counts=True
    )
    acc = _Accumulator(max_rank, trapezoid_ap)
    for start in range(0, num_query, chunk_size):
        stop = min(start + chunk_size, num_query)
        block = _distance_block(
            q[start:stop], g, metric, None if q_sq is None else q_sq[start:stop], g_sq
        )
        for row, i in zip(block, range(start, stop), strict=True):
            k = np.searchsorted(pid_values, q_pids[i])
            if k == pid_values.size or pid_values[k] != q_pids[i]:
                acc.add(np.empty(0, dtype=np.int64))
                continue
            same_pid = by_pid[pid_starts[k] : pid_starts[k] + pid_counts[k]]
            if q_camids is not None:
                junk = g_camids[same_pid] == q_camids[i]
                row[same_pid[junk]] = np.inf
                same_pid = same_pid[~junk]
            acc.add(_match_ranks(row, same_pid, num_gallery))
        if block_sink is not None:
            block_sink.add(start, block)
        if progress is not None:
            progress.update(stop - start)
    return acc.result()


def _match_ranks(row: np.ndarray, matches: np.ndarray, num_gallery: int) -> np.ndarray:
    """Sorted 0-based stable-sort ranks of ``matches`` (gallery indices) in ``row``,
    where removed items hold +inf and are never counted.

    Each item is given the key (distance, gallery index); an item precedes a match
    iff its key is smaller. Both are mapped to one int64 key per item: the position
    of its distance among the matches' distinct distances times (num_gallery + 1),
    plus its gallery index when its distance equals one of them (a possible tie),
    minus one otherwise (it precedes every match of that distance).
    """
    if matches.size == 0:
        return matches
    dist = row[matches]
    order = np.lexsort((matches, dist))
    dist, matches = dist[order], matches[order]
    levels = np.unique(dist)
    stride = np.int64(num_gallery + 1)
    match_keys = np.searchsorted(levels, dist) * stride + matches
    candidates = np.flatnonzero(row <= dist[-1])
    cand_dist = row[candidates]
    level = np.searchsorted(levels, cand_dist)
    tied = levels[np.minimum(level, levels.size - 1)] == cand_dist
    cand_keys = level * stride + np.where(tied, candidates, -1)
    # Number of matches each candidate does not precede; a candidate counts
    # towards the rank of every match from that position on.
    first_after = np.searchsorted(match_keys, cand_keys, side="right")
    return np.cumsum(np.bincount(first_after, minlength=matches.size + 1))[:-1]
