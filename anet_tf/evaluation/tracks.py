"""Tracks: the crops of one vehicle by one camera that a detector and tracker give,
as one item (``Record.track_id``; ``docs/evaluation.md``, "Tracks").

A track's feature is the mean of its crops' L2-normalised features, L2-normalised
again (:func:`aggregate_features`), optionally weighted per crop (e.g. by crop area,
:func:`crop_areas`); its attribute probabilities are the mean of its crops'
(:func:`aggregate_probs`). A crop without a track id is a track of its own.

The protocols (all with the same-vehicle-same-camera junk rule of
:func:`~anet_tf.evaluation.protocols.veri_protocol`):

- ``image_to_track``: the VeRi-776 authors' image-to-track search (Liu et al.,
  ICME 2016): each query image against the gallery tracks, each track one item
  with its mean feature; a gallery track of the query's vehicle and camera is junk.
- ``track_to_track``: query tracks against gallery tracks. A query track is
  represented by the gallery's crops of that track when the gallery holds it
  (VeRi-776: queries are copies of test images, so a query's track is a test track,
  the video re-id convention), else by its query crops.
- ``track_average``: the image protocol with each gallery image's feature replaced
  by its track's mean; the metrics count images, as image-to-image does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anet_tf.config import TRACK_PROTOCOLS
from anet_tf.config import EvalConfig
from anet_tf.data.records import Record
from anet_tf.evaluation.metrics import l2_normalize
from anet_tf.evaluation.protocols import labels
from anet_tf.evaluation.protocols import protocol_kwargs
from anet_tf.evaluation.protocols import veri_protocol


def track_groups(track_ids: Sequence[str | None]) -> list[np.ndarray]:
    """The row indices of each track, tracks in order of first appearance and rows
    in input order; a row whose track id is None or "" is a track of its own."""
    groups: dict[object, list[int]] = {}
    for i, track in enumerate(track_ids):
        groups.setdefault(track if track else ("row", i), []).append(i)
    return [np.asarray(rows, np.int64) for rows in groups.values()]


def aggregate_features(
    features: np.ndarray,
    groups: Sequence[np.ndarray],
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """One feature per track: the mean of its rows' L2-normalised features
    (weighted by ``weights`` [num_rows] when given, e.g. crop areas), L2-normalised.

    Returns:
        float32 [len(groups), dim].
    """
    x = l2_normalize(features)
    if not len(groups):
        return np.zeros((0, x.shape[1]), np.float32)
    index = np.concatenate(groups)
    which = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    w = np.ones(len(x), np.float64) if weights is None else np.asarray(weights, float)
    if (w[index] <= 0).any():
        raise ValueError("track weights must be positive")
    sums = np.zeros((len(groups), x.shape[1]), np.float64)
    np.add.at(sums, which, x[index] * w[index, None])
    return l2_normalize(sums)


def aggregate_probs(probs: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """One row of class probabilities per track: the mean of its rows'."""
    probs = np.asarray(probs, np.float32)
    if not len(groups):
        return np.zeros((0, probs.shape[1]), np.float32)
    return np.stack([probs[g].mean(axis=0) for g in groups]).astype(np.float32)


def crop_areas(paths: Sequence[str]) -> np.ndarray:
    """Width x height of each image, from its header (a per-crop quality weight:
    a larger crop holds more of the vehicle's detail)."""
    from PIL import Image

    areas = np.empty(len(paths), np.float64)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            areas[i] = image.size[0] * image.size[1]
    return areas


def has_tracks(records: Sequence[Record]) -> bool:
    return any(r.track_id for r in records)


def _tracks(records: Sequence[Record], features: np.ndarray, weights=None):
    """(track features, pids, camids) of ``records``' tracks."""
    groups = track_groups([r.track_id for r in records])
    pids, camids = labels(records)
    first = np.asarray([g[0] for g in groups], np.int64)
    return aggregate_features(features, groups, weights), pids[first], camids[first]


def image_to_track(
    query_features,
    gallery_features,
    query_records,
    gallery_records,
    *,
    query_weights=None,
    gallery_weights=None,
    **protocol,
) -> dict:
    """Query images against gallery tracks (module docstring).

    Args:
        query_weights, gallery_weights: per-crop weights of the track means
            (:func:`aggregate_features`), None for the plain mean.
        protocol: the keyword arguments of :func:`veri_protocol`.
    """
    g, g_pids, g_camids = _tracks(gallery_records, gallery_features, gallery_weights)
    q_pids, q_camids = labels(query_records)
    result = veri_protocol(
        l2_normalize(query_features), g, q_pids, g_pids, q_camids, g_camids, **protocol
    )
    return {**result, "num_query": len(query_records), "num_gallery": len(g)}


def track_to_track(
    query_features,
    gallery_features,
    query_records,
    gallery_records,
    *,
    query_weights=None,
    gallery_weights=None,
    **protocol,
) -> dict:
    """Query tracks against gallery tracks (module docstring); arguments as
    :func:`image_to_track`."""
    gallery_tracks = {r.track_id for r in gallery_records if r.track_id}
    # A query track the gallery holds is represented by the gallery's crops of it.
    borrowed = [r.track_id in gallery_tracks for r in query_records]
    own = [i for i, b in enumerate(borrowed) if not b]
    wanted = {r.track_id for r, b in zip(query_records, borrowed) if b}
    lent = [i for i, r in enumerate(gallery_records) if r.track_id in wanted]
    records = [query_records[i] for i in own] + [gallery_records[i] for i in lent]
    features = np.concatenate(
        [
            np.asarray(query_features, np.float32)[own],
            np.asarray(gallery_features, np.float32)[lent],
        ]
    )
    weights = None
    if query_weights is not None or gallery_weights is not None:
        q_w = np.ones(len(query_records)) if query_weights is None else query_weights
        g_w = (
            np.ones(len(gallery_records))
            if gallery_weights is None
            else gallery_weights
        )
        weights = np.concatenate([np.asarray(q_w)[own], np.asarray(g_w)[lent]])
    q, q_pids, q_camids = _tracks(records, features, weights)
    g, g_pids, g_camids = _tracks(gallery_records, gallery_features, gallery_weights)
    result = veri_protocol(q, g, q_pids, g_pids, q_camids, g_camids, **protocol)
    return {**result, "num_query": len(q), "num_gallery": len(g)}


def track_average(
    query_features,
    gallery_features,
    query_records,
    gallery_records,
    *,
    query_weights=None,
    gallery_weights=None,
    **protocol,
) -> dict:
    """The image protocol with each gallery image's feature replaced by its
    track's mean (module docstring); arguments as :func:`image_to_track`
    (``query_weights`` unused: the queries stay images)."""
    groups = track_groups([r.track_id for r in gallery_records])
    means = aggregate_features(gallery_features, groups, gallery_weights)
    which = np.empty(len(gallery_records), np.int64)
    for k, rows in enumerate(groups):
        which[rows] = k
    q_pids, q_camids = labels(query_records)
    g_pids, g_camids = labels(gallery_records)
    result = veri_protocol(
        l2_normalize(query_features),
        means[which],
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        **protocol,
    )
    return {
        **result,
        "num_query": len(query_records),
        "num_gallery": len(gallery_records),
    }


PROTOCOL_FUNCTIONS = {
    "image_to_track": image_to_track,
    "track_to_track": track_to_track,
    "track_average": track_average,
}  # one per name of TRACK_PROTOCOLS, the choices of eval.tracks


def track_protocols(
    names: Sequence[str],
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query_records: Sequence[Record],
    gallery_records: Sequence[Record],
    **protocol,
) -> dict:
    """``{name: metrics}`` of the track protocols ``names`` (``eval.tracks``);
    ``protocol``: metric, max_rank, chunk_size, rerank, trapezoid_ap."""
    out = {}
    for name in names:
        try:
            fn = PROTOCOL_FUNCTIONS[name]
        except KeyError:
            raise KeyError(
                f"unknown track protocol {name!r}; valid: {', '.join(TRACK_PROTOCOLS)}"
            ) from None
        out[name] = fn(
            query_features, gallery_features, query_records, gallery_records, **protocol
        )
    return out


def track_protocol_kwargs(cfg: EvalConfig) -> dict:
    """The keyword arguments of :func:`track_protocols` from an ``eval`` config:
    those of :func:`veri_protocol` (VehicleID's trials have no tracks)."""
    kwargs = protocol_kwargs(cfg)
    return {k: kwargs[k] for k in ("metric", "max_rank", "chunk_size", "rerank", "trapezoid_ap")}


def format_track_table(tracks: dict) -> str:
    """The track protocols' numbers as a Markdown table, in percent."""
    lines = [
        "| protocol | queries | gallery items | mAP | R1 | R5 | R10 | mINP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in tracks.items():
        cmc = np.asarray(r["cmc"])
        ranks = [
            f"{100 * cmc[k - 1]:.2f}" if k <= cmc.size else "-" for k in (1, 5, 10)
        ]
        lines.append(
            f"| {name} | {r['num_query']} | {r['num_gallery']} | "
            f"{100 * r['mAP']:.2f} | {' | '.join(ranks)} | {100 * r['mINP']:.2f} |"
        )
    return "\n".join(lines)
