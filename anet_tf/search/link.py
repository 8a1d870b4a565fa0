"""Cross-camera linking: tracks (runs of crops of one vehicle in one camera, as a
camera's tracker gives them) joined into vehicles with one global id each, the
multi-camera task of the AI City Challenge.

The method is **average-linkage agglomerative clustering (UPGMA; Sokal & Michener,
1958) with cannot-link constraints checked at every merge** (Davidson & Ravi,
"Agglomerative Hierarchical Clustering with Constraints: Theoretical and Empirical
Results", PKDD 2005). Tracks start as clusters; the two clusters with the highest
average track-to-track similarity are merged, as long as it reaches ``threshold``
and no pair of tracks across the two is forbidden; the average similarity to the
merged cluster follows the Lance-Williams update. ``method="complete"`` and
``"single"`` use the same loop with their own update.

Hard constraints (a forbidden pair can never end in one vehicle):

* two tracks of one camera that overlap in time (by more than
  ``overlap_tolerance`` seconds: a tracker that breaks a track gives two tracks
  meeting at one instant, which may be one vehicle);
* two tracks of cameras ``a`` and ``b`` when ``travel_windows`` has a window for
  the pair and the gap (the later track's start minus the earlier track's end)
  lies outside it. A window is read both ways unless the reverse pair has its
  own; a pair without a window is not constrained. The window must hold for any
  two sightings of one vehicle in those cameras, routes through other cameras
  included (the constraint is pairwise).

A time or camera of -1 (unknown) constrains nothing.

Why the constraints are checked inside the merge loop rather than imposed as a
large distance: scikit-learn and SciPy have no cannot-link, and a forbidden pair
set to a large distance can still end in one cluster, chained through a third
track close to both (average linkage only dilutes the large distance). Repairing
clusters afterwards (splitting the ones that hold a forbidden pair) would be a
second, home-made algorithm whose result depends on how it splits. Checking the
constraint at each merge is the constrained algorithm of Davidson & Ravi: a
cluster-level "forbidden" matrix is the OR of its members' rows, a merge across a
forbidden pair is never made, so no final vehicle holds a forbidden pair, by
construction (and :func:`violations` counts them, for tests and benchmarks).
Without constraints the result is SciPy's ``linkage(method="average")`` cut by
``fcluster(criterion="distance")`` (``tests/test_link.py`` checks it).

The similarity of two tracks is the cosine of their mean L2-normalised features;
with ``attributes`` (the tracks' mean attribute probabilities, e.g. colour and
type) it is lowered by ``attribute_weight`` times the mean over attributes of
``1 - BC``, BC the Bhattacharyya coefficient ``sum_c sqrt(p_c q_c)`` of the two
tracks' distributions (1: the same distribution, 0: disjoint). Off by default
(``attribute_weight=0``): on the synthetic benchmark (docs/evaluation.md,
"Linking tracks across cameras") a tuned weight added about 0.01 pairwise F1 on
the hard roads and nothing on the easy ones, and the right weight depends on how
right a model's attributes are; choose it on tracks of known vehicles.

NumPy only; one merge costs O(T) on average (each row keeps its
nearest cluster), the similarity matrix O(T^2) memory: tens of thousands of tracks
on one machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

from anet_tf.search.errors import SearchError

UNKNOWN_TIME = -1
# Lance-Williams updates: the distance from cluster k to i+j, from d(k, i), d(k, j)
# and the sizes of i and j.
METHODS = {
    "average": lambda di, dj, ni, nj: (ni * di + nj * dj) / (ni + nj),
    "complete": lambda di, dj, ni, nj: np.maximum(di, dj),
    "single": lambda di, dj, ni, nj: np.minimum(di, dj),
}
ATTRIBUTE_WEIGHT = 0.0

TravelWindows = Mapping[tuple[int, int], tuple[float, float]]


def link_tracks(
    features,
    cameras,
    start,
    end,
    *,
    threshold: float,
    attributes: Sequence | None = None,
    attribute_weight: float = ATTRIBUTE_WEIGHT,
    travel_windows: TravelWindows | None = None,
    method: str = "average",
    overlap_tolerance: float = 0.0,
) -> np.ndarray:
    """A global vehicle id for every track (the module docstring's method).

    Args:
        features: mean L2-normalised feature of each track, [T, D] (each row of
            norm 1: the cosine of two rows is their dot product).
        cameras: camera of each track, int [T].
        start, end: first and last time of each track in seconds, [T]; -1 unknown.
        threshold: the lowest similarity (cosine, in [-1, 1]) at which two
            clusters are merged.
        attributes: per attribute, the tracks' class probabilities [T, C_k];
            used when ``attribute_weight`` > 0.
        attribute_weight: weight of the attribute disagreement (mean 1 - BC).
        travel_windows: ``{(cam_a, cam_b): (min_s, max_s)}``, the allowed gap
            between a vehicle's sightings in the two cameras.
        method: linkage, one of :data:`METHODS`.
        overlap_tolerance: seconds two tracks of one camera may share and still
            be one vehicle.

    Returns:
        int64 [T]: global ids 0..G-1, numbered in order of each vehicle's first
        track.

    Raises:
        SearchError: shapes that do not agree, a track with start > end, a
            threshold outside [-1, 1], an unknown method (listing the valid ones).
    """
    features, cameras, start, end = check_tracks(features, cameras, start, end)
    if not -1.0 <= threshold <= 1.0:
        raise SearchError(
            f"the threshold is a cosine similarity, in [-1, 1]. Received: "
            f"threshold={threshold}"
        )
    similarity = track_similarity(features, attributes, attribute_weight)
    forbidden = cannot_link(cameras, start, end, travel_windows, overlap_tolerance)
    return constrained_agglomerative(
        1.0 - similarity, forbidden, 1.0 - threshold, method
    )


def check_tracks(features, cameras, start, end):
    """The four arrays as float32 [T, D], int64 [T], float64 [T], float64 [T].

    Raises:
        SearchError: lengths or shapes that differ, a non-finite feature or time,
            or a track with start > end (naming the first).
    """
    features = np.asarray(features, np.float32)
    cameras = np.asarray(cameras, np.int64)
    start = np.asarray(start, np.float64)
    end = np.asarray(end, np.float64)
    if features.ndim != 2:
        raise SearchError(
            f"features must be [T, D]. Received: features.shape={features.shape}"
        )
    n = len(features)
    for name, value in (("cameras", cameras), ("start", start), ("end", end)):
        if value.shape != (n,):
            raise SearchError(
                f"{name} must have one value per track. Received: "
                f"{name}.shape={value.shape} for {n} tracks"
            )
    if not (
        np.isfinite(features).all()
        and np.isfinite(start).all()
        and np.isfinite(end).all()
    ):
        raise SearchError("features and times must be finite numbers (no NaN or inf)")
    known = (start != UNKNOWN_TIME) & (end != UNKNOWN_TIME)
    bad = np.flatnonzero(known & (start > end))
    if len(bad):
        i = int(bad[0])
        raise SearchError(
            f"track {i} starts after it ends (start {start[i]:g} > end {end[i]:g}); "
            f"{len(bad)} such track(s)"
        )
    return features, cameras, start, end


def track_similarity(
    features, attributes=None, attribute_weight: float = 0.0
) -> np.ndarray:
    """Cosine similarity of every two tracks, [T, T] float64, less
    ``attribute_weight`` times their mean attribute disagreement (1 - the
    Bhattacharyya coefficient of their class probabilities)."""
    features = np.asarray(features, np.float64)
    similarity = features @ features.T
    if attributes and attribute_weight:
        disagreement = np.zeros_like(similarity)
        for probs in attributes:
            root = np.sqrt(np.clip(np.asarray(probs, np.float64), 0.0, None))
            if root.shape[0] != len(features):
                raise SearchError(
                    f"attribute probabilities must have one row per track. "
                    f"Received: {root.shape[0]} rows for {len(features)} tracks"
                )
            disagreement += 1.0 - np.clip(root @ root.T, 0.0, 1.0)
        similarity -= attribute_weight * disagreement / len(attributes)
    return similarity


def cannot_link(
    cameras,
    start,
    end,
    travel_windows: TravelWindows | None = None,
    overlap_tolerance: float = 0.0,
) -> np.ndarray:
    """The pairs of tracks that cannot be one vehicle, bool [T, T] (symmetric,
    diagonal False): the module docstring's two constraints."""
    cameras = np.asarray(cameras, np.int64)
    start = np.asarray(start, np.float64)
    end = np.asarray(end, np.float64)
    known = (start != UNKNOWN_TIME) & (end != UNKNOWN_TIME)
    both = known[:, None] & known[None, :]
    shared = np.minimum(end[:, None], end[None, :]) - np.maximum(
        start[:, None], start[None, :]
    )
    one_camera = (cameras[:, None] == cameras[None, :]) & (cameras >= 0)[:, None]
    forbidden = both & one_camera & (shared > overlap_tolerance)
    if travel_windows:
        # gap[i, j]: from the end of the earlier-starting track to the start of the
        # other; cam_from/cam_to: their cameras in that order.
        first = start[:, None] <= start[None, :]
        gap = np.where(
            first, start[None, :] - end[:, None], start[:, None] - end[None, :]
        )
        cam_from = np.where(first, cameras[:, None], cameras[None, :])
        cam_to = np.where(first, cameras[None, :], cameras[:, None])
        for (a, b), (low, high) in _both_ways(travel_windows).items():
            pair = both & (cam_from == a) & (cam_to == b)
            forbidden |= pair & ((gap < low) | (gap > high))
    np.fill_diagonal(forbidden, False)
    return forbidden | forbidden.T


def _both_ways(windows: TravelWindows) -> dict:
    out = {(int(a), int(b)): w for (a, b), w in windows.items()}
    for (a, b), w in list(out.items()):
        out.setdefault((b, a), w)
    return out


def constrained_agglomerative(
    distance, forbidden, max_distance: float, method: str = "average"
) -> np.ndarray:
    """Agglomerative clustering of ``distance`` [T, T] that never merges across a
    ``forbidden`` pair [T, T] and stops when the closest allowed pair of clusters
    is farther than ``max_distance``.

    Returns:
        int64 [T] cluster ids, numbered in order of each cluster's first member.
    """
    update = METHODS.get(method)
    if update is None:
        raise SearchError(
            f"unknown linkage method {method!r}; choose one of {', '.join(METHODS)}"
        )
    d = np.array(distance, np.float64)
    n = len(d)
    blocked = np.array(forbidden, bool)
    np.fill_diagonal(blocked, True)
    size = np.ones(n)
    active = np.ones(n, bool)
    owner = np.arange(n)  # the cluster each track is in (a cluster is named by a row)
    candidate = np.where(blocked, np.inf, d)
    if n == 0:
        return np.zeros(0, np.int64)
    row_min = candidate.min(axis=1)
    row_arg = candidate.argmin(axis=1)
    while True:
        i = int(np.argmin(row_min))
        if not row_min[i] <= max_distance:
            break
        j = int(row_arg[i])
        d[i] = update(d[i], d[j], size[i], size[j])
        d[:, i] = d[i]
        blocked[i] |= blocked[j]
        blocked[:, i] = blocked[i]
        size[i] += size[j]
        active[j] = False
        owner[owner == j] = i
        candidate[i] = np.where(blocked[i] | ~active, np.inf, d[i])
        candidate[:, i] = candidate[i]
        candidate[j] = np.inf
        candidate[:, j] = np.inf
        row_min[j] = np.inf
        stale = active & ((row_arg == i) | (row_arg == j))
        stale[i] = True
        for k in np.flatnonzero(stale):
            row_arg[k] = np.argmin(candidate[k])
            row_min[k] = candidate[k, row_arg[k]]
        closer = active & ~stale & (candidate[:, i] < row_min)
        row_min[closer] = candidate[closer, i]
        row_arg[closer] = i
    _, first = np.unique(owner, return_index=True)
    order = np.argsort(first)
    number = np.empty(n, np.int64)
    number[np.unique(owner)[order]] = np.arange(len(order))
    return number[owner]


def violations(ids, forbidden) -> int:
    """How many forbidden pairs ended in one vehicle (0 for :func:`link_tracks`)."""
    ids = np.asarray(ids)
    same = ids[:, None] == ids[None, :]
    return int(np.triu(same & np.asarray(forbidden, bool), 1).sum())
