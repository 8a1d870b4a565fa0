"""The evaluation protocol of each dataset (section 4.1; ``datasets.md`` section 4),
the test-time features (Table 1) and a paper-style results table.

| dataset | query / gallery | same-id-same-camera removal | trials |
|---|---|---|---|
| veri776, veriwild, synthetic, folder | the reader's query / gallery | yes | 1 |
| vehicleid | one random image per id -> gallery, the rest -> query | no | 10 |

VeRi-Wild follows FastReID (camera ids from ``vehicle_info.txt``, which the reader
puts in ``Record.camid``); the official VeRi-Wild script ignores cameras, but
published numbers use the camera-filtered protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anet_tf.config import EvalConfig
from anet_tf.data.records import Record
from anet_tf.evaluation.metrics import evaluate_features
from anet_tf.evaluation.metrics import evaluate_rank
from anet_tf.evaluation.metrics import l2_normalize
from anet_tf.evaluation.metrics import pairwise_distance
from anet_tf.evaluation.rerank import k_reciprocal_rerank
from anet_tf.evaluation.verification import PairScores
from anet_tf.evaluation.verification import stream_pairs
from anet_tf.model.names import TEST_FEATURES
from anet_tf.progress import Progress

# ----------------------------------------------------------------------- features


def assemble_feature(
    name: str,
    f: np.ndarray,
    a: Sequence[np.ndarray] | None = None,
    j: np.ndarray | None = None,
) -> np.ndarray:
    """The test-time feature of Table 1, not yet normalised.

    Args:
        name: f (the re-id feature f) | fa (f concatenated with the attribute
            features a_1..a_n) | j (the joint feature j of the Joint Module).
        f: [num, s_f]; a: the a_i, each [num, s_a]; j: [num, s_j].

    The paper does not say how f and the a_i are weighted in ``fa``; we concatenate
    them as the network outputs them and L2-normalise the whole vector
    (:func:`finalize_features`), so each part weighs by its own magnitude.
    """
    if name == "f":
        return np.asarray(f, dtype=np.float32)
    if name == "fa":
        if not a:
            raise ValueError("feature 'fa' needs the attribute features a_i")
        return np.concatenate([np.asarray(x, dtype=np.float32) for x in (f, *a)], 1)
    if name == "j":
        if j is None:
            raise ValueError(
                "feature 'j' needs the joint feature j (variant anet; baseline and "
                "van have no Joint Module)"
            )
        return np.asarray(j, dtype=np.float32)
    raise KeyError(f"unknown feature {name!r}; valid: {', '.join(TEST_FEATURES)}")


def combine_flip(features: np.ndarray, flipped_features: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: the average of the features of the image and of
    its mirror image, L2-normalised."""
    features = np.asarray(features, dtype=np.float32)
    flipped_features = np.asarray(flipped_features, dtype=np.float32)
    if features.shape != flipped_features.shape:
        raise ValueError(
            "features and flipped_features must have the same shape. Received: "
            f"{features.shape} and {flipped_features.shape}"
        )
    return l2_normalize((features + flipped_features) / 2.0)


def finalize_features(
    features: np.ndarray, flipped_features: np.ndarray | None = None
) -> np.ndarray:
    """The features the protocols compare: L2-normalised, flip-averaged when the
    mirror images' features are given."""
    if flipped_features is not None:
        return combine_flip(features, flipped_features)
    return l2_normalize(features)


def labels(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
    """(pids, camids) of ``records`` as int64 arrays."""
    pids = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    camids = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    return pids, camids


# ---------------------------------------------------------------------- protocols


def veri_protocol(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int = 256,
    rerank: bool = False,
    trapezoid_ap: bool = False,
    progress=None,
    block_sink=None,
) -> dict:
    """VeRi-776 / VeRi-Wild / synthetic / folder: one fixed query and gallery, gallery
    items with the query's id and camera removed; ``progress``: told of the
    queries ranked (:func:`evaluate_features`; not with re-ranking);
    ``block_sink``: given the (not re-ranked) distance blocks, as
    :func:`evaluate_features` gives them.

    Without re-ranking the scalable :func:`evaluate_features` is used; with it the
    full distance matrices are built (see :mod:`anet_tf.evaluation.rerank`).
    Camera ids of -1 (unknown) everywhere mean a dataset without cameras: nothing
    is removed.

    Returns:
        the dict of :func:`evaluate_rank` plus ``R1``, ``R5``, ``R10``.
    """
    q_camids = np.asarray(q_camids)
    g_camids = np.asarray(g_camids)
    if (q_camids == -1).all() and (g_camids == -1).all():
        q_camids = g_camids = None
    if rerank and block_sink is not None:
        stream_pairs(query_features, gallery_features, q_pids, g_pids, q_camids,
                     g_camids, [block_sink], metric=metric, chunk_size=chunk_size)
    if rerank:
        q_g = pairwise_distance(query_features, gallery_features, metric)
        q_q = pairwise_distance(query_features, query_features, metric)
        g_g = pairwise_distance(gallery_features, gallery_features, metric)
        result = evaluate_rank(
            k_reciprocal_rerank(q_g, q_q, g_g),
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            max_rank=max_rank,
            trapezoid_ap=trapezoid_ap,
        )
    else:
        result = evaluate_features(
            query_features,
            gallery_features,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            max_rank=max_rank,
            metric=metric,
            chunk_size=chunk_size,
            trapezoid_ap=trapezoid_ap,
            progress=progress,
            block_sink=block_sink,
        )
    return _with_ranks(result)


def vehicleid_split(pids, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One VehicleID trial: a uniformly random image of each identity forms the
    gallery, every other image is a query.

    Returns:
        (query_indices, gallery_indices), each ascending.
    """
    pids = np.asarray(pids).reshape(-1)
    order = rng.permutation(pids.size)
    _, first = np.unique(pids[order], return_index=True)
    is_gallery = np.zeros(pids.size, dtype=bool)
    is_gallery[order[first]] = True
    return np.flatnonzero(~is_gallery), np.flatnonzero(is_gallery)


# long: 18 lines of docstring; 77 lines of code: the ten random gallery draws of the protocol and their average, as the protocol is written.
def vehicleid_protocol(
    features: np.ndarray,
    pids,
    *,
    trials: int = 10,
    seed: int = 0,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int = 256,
    rerank: bool = False,
    trapezoid_ap: bool = False,
    progress=None,
) -> dict:
    """VehicleID (Liu et al., DRDL 2016): ``trials`` random gallery draws of one image
    per identity, all other test images as queries, no camera removal; the
    reported numbers are the means over trials; ``progress``: told of each trial
    (``progress.update(1)``).

    The draws come from ``numpy.random.default_rng(seed)``, so the same seed gives
    the same galleries and the same numbers. Identities with a single test image
    give a gallery image and no query.

    Args:
        features: [num_images, dim] features of all test images of the list.
        pids: their identities.

    Returns:
        dict with the trial means ``R1``, ``R5``, ``mAP``, ``mINP``, ``cmc``, their
        standard deviations ``R1_std``, ``R5_std``, ``mAP_std`` and ``trials``: one
        dict per trial with ``R1``, ``R5``, ``mAP``, ``mINP`` (and
        ``mAP_trapezoid`` on request), ``num_query``, ``num_gallery``.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1. Received: trials={trials}")
    if max_rank < 5:
        raise ValueError(
            f"VehicleID reports Rank-5: max_rank must be >= 5. Received: {max_rank}"
        )
    features = np.asarray(features)
    pids = np.asarray(pids).reshape(-1)
    if features.shape[0] != pids.size:
        raise ValueError(
            f"features has {features.shape[0]} rows but pids has {pids.size} entries"
        )
    rng = np.random.default_rng(seed)
    per_trial = []
    cmcs = []
    for _ in range(trials):
        query, gallery = vehicleid_split(pids, rng)
        if rerank:
            result = evaluate_rank(
                k_reciprocal_rerank(
                    pairwise_distance(features[query], features[gallery], metric),
                    pairwise_distance(features[query], features[query], metric),
                    pairwise_distance(features[gallery], features[gallery], metric),
                ),
                pids[query],
                pids[gallery],
                None,
                None,
                max_rank=max_rank,
                trapezoid_ap=trapezoid_ap,
            )
        else:
            result = evaluate_features(
                features[query],
                features[gallery],
                pids[query],
                pids[gallery],
                None,
                None,
                max_rank=max_rank,
                metric=metric,
                chunk_size=chunk_size,
                trapezoid_ap=trapezoid_ap,
            )
        cmcs.append(result["cmc"])
        trial = {
            "R1": float(result["cmc"][0]),
            "R5": float(result["cmc"][4]),
            "mAP": result["mAP"],
            "mINP": result["mINP"],
            "num_query": int(query.size),
            "num_gallery": int(gallery.size),
        }
        if trapezoid_ap:
            trial["mAP_trapezoid"] = result["mAP_trapezoid"]
        per_trial.append(trial)
        if progress is not None:
            progress.update(1)
    out = {"cmc": np.mean(cmcs, axis=0), "trials": per_trial}
    for key in ("R1", "R5", "mAP", "mINP") + (
        ("mAP_trapezoid",) if trapezoid_ap else ()
    ):
        values = [t[key] for t in per_trial]
        out[key] = float(np.mean(values))
        if key in ("R1", "R5", "mAP"):
            out[key + "_std"] = float(np.std(values))
    return out


def _with_ranks(result: dict) -> dict:
    cmc = np.asarray(result["cmc"])
    for k in (1, 5, 10):
        if k <= cmc.size:
            result[f"R{k}"] = float(cmc[k - 1])
    return result


CAMERA_PROTOCOL_DATASETS = ("veri776", "veriwild", "synthetic", "folder")
PROTOCOLS = CAMERA_PROTOCOL_DATASETS + ("vehicleid",)


def evaluate_protocol(
    dataset: str,
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query_records: Sequence[Record],
    gallery_records: Sequence[Record],
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int = 256,
    rerank: bool = False,
    trapezoid_ap: bool = False,
    vehicleid_trials: int = 10,
    seed: int = 0,
    progress: bool = False,
    verification: bool = False,
) -> dict:
    """Evaluate features of a dataset's query and gallery records by its protocol.

    Args:
        dataset: veri776 | veriwild | synthetic | folder | vehicleid.
        query_features, gallery_features: [num, dim] features of the records, in
            record order (normalised here; pass :func:`finalize_features` output or
            raw features alike).
        query_records, gallery_records: the reader's split. For vehicleid the two
            are pooled (the VehicleID reader leaves the query empty) and re-split
            ``vehicleid_trials`` times.
        metric, max_rank, chunk_size, rerank, trapezoid_ap: see
            :func:`veri_protocol`; vehicleid_trials, seed: see
            :func:`vehicleid_protocol`.

    Keyword arguments map one to one to :class:`~anet_tf.config.EvalConfig`
    (:func:`protocol_kwargs`), but ``progress``: the ranking's progress on stdout
    (queries, or VehicleID's trials; :class:`~anet_tf.progress.Progress`), and
    ``verification``: the figures of :mod:`anet_tf.evaluation.verification` too.
    """
    if dataset not in PROTOCOLS:
        raise KeyError(f"unknown dataset {dataset!r}; valid: {', '.join(PROTOCOLS)}")
    _check_lengths(query_features, gallery_features, query_records, gallery_records)
    q_pids, q_camids = labels(query_records)
    g_pids, g_camids = labels(gallery_records)
    sink = _pair_scores(dataset, query_features, gallery_features, query_records,
                        gallery_records, metric, chunk_size, seed) if verification else None
    common = dict(
        metric=metric,
        max_rank=max_rank,
        chunk_size=chunk_size,
        rerank=rerank,
        trapezoid_ap=trapezoid_ap,
    )
    if dataset == "vehicleid":
        # The VehicleID reader puts every test image in the gallery; pool anyway.
        pooled = [f for f in (query_features, gallery_features) if len(f)]
        bar = Progress(vehicleid_trials, "ranking", enabled=progress, unit="trials")
        result = vehicleid_protocol(
            l2_normalize(np.concatenate(pooled)),
            np.concatenate([q_pids, g_pids]),
            trials=vehicleid_trials,
            seed=seed,
            progress=bar,
            **common,
        )
    else:
        bar = Progress(len(query_features), "ranking", enabled=progress and not rerank,
                       unit="queries")
        result = veri_protocol(
            l2_normalize(query_features),
            l2_normalize(gallery_features),
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            progress=bar,
            block_sink=sink,
            **common,
        )
    bar.close()
    if sink is not None:
        result["verification"] = sink.result()
    return result


def _check_lengths(query_features, gallery_features, query_records, gallery_records):
    for name, feats, records in (
        ("query", query_features, query_records),
        ("gallery", gallery_features, gallery_records),
    ):
        if len(feats) != len(records):
            raise ValueError(
                f"{len(feats)} {name} features for {len(records)} {name} records"
            )


def _pair_scores(dataset, query_features, gallery_features, query_records,
                 gallery_records, metric, chunk_size, seed) -> PairScores:
    """The :class:`~anet_tf.evaluation.verification.PairScores` of a protocol:
    VehicleID's filled from its first gallery draw (:func:`verification_pairs`),
    the others empty, to count the ranking's distance blocks."""
    q, g, q_pids, g_pids, _, _ = verification_pairs(
        dataset, query_features, gallery_features, query_records, gallery_records, seed
    )
    sink = PairScores(q_pids, g_pids, metric, seed=seed)
    if dataset == "vehicleid":
        stream_pairs(q, g, q_pids, g_pids, None, None, [sink], metric=metric,
                     chunk_size=chunk_size)
    return sink


def verification_pairs(
    dataset: str,
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query_records: Sequence[Record],
    gallery_records: Sequence[Record],
    seed: int = 0,
) -> tuple:
    """(query features, gallery features, q_pids, g_pids, q_camids, g_camids) of
    the pairs the same-vehicle figures are counted over
    (:mod:`anet_tf.evaluation.verification`): the protocol's query x gallery,
    features L2-normalised, camera ids None where all are unknown; VehicleID's
    pooled images split as its first gallery draw (``seed``), without cameras."""
    q_pids, q_camids = labels(query_records)
    g_pids, g_camids = labels(gallery_records)
    if dataset == "vehicleid":
        pooled = [f for f in (query_features, gallery_features) if len(f)]
        features = l2_normalize(np.concatenate(pooled))
        pids = np.concatenate([q_pids, g_pids])
        query, gallery = vehicleid_split(pids, np.random.default_rng(seed))
        return features[query], features[gallery], pids[query], pids[gallery], None, None
    if (q_camids == -1).all() and (g_camids == -1).all():
        q_camids = g_camids = None
    return (l2_normalize(query_features), l2_normalize(gallery_features), q_pids,
            g_pids, q_camids, g_camids)


def protocol_kwargs(cfg: EvalConfig) -> dict:
    """The keyword arguments of :func:`evaluate_protocol` from an ``eval`` config."""
    return dict(
        metric=cfg.metric,
        max_rank=cfg.max_rank,
        chunk_size=cfg.chunk_size,
        rerank=cfg.rerank,
        trapezoid_ap=cfg.trapezoid_ap,
        vehicleid_trials=cfg.vehicleid_trials,
        seed=cfg.seed,
    )


# -------------------------------------------------------------------------- table


def format_table(results: dict, dataset: str, feature: str | None = None) -> str:
    """A paper-style Markdown table of one result, in percent.

    VeRi-776 / VeRi-Wild style: mAP, R1, R5, R10, mINP. VehicleID: R1 and R5 (the
    means over trials, with their standard deviation). ``feature`` (f, fa, j), when
    given, is a column: which test-time feature the numbers are of.
    """
    header, row = _table_cells(results, dataset)
    if feature is not None:
        header.insert(1, "feature")
        row.insert(1, feature)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        "| " + " | ".join(row) + " |",
    ]
    return "\n".join(lines)


def _table_cells(results: dict, dataset: str) -> tuple[list[str], list[str]]:
    if dataset == "vehicleid":
        header = ["dataset", "R1", "R5", "trials"]
        row = [
            dataset,
            f"{100 * results['R1']:.2f} ± {100 * results.get('R1_std', 0.0):.2f}",
            f"{100 * results['R5']:.2f} ± {100 * results.get('R5_std', 0.0):.2f}",
            str(len(results.get("trials", [])) or 1),
        ]
    else:
        cmc = np.asarray(results["cmc"])
        header = ["dataset", "mAP", "R1", "R5", "R10", "mINP"]
        row = [dataset, f"{100 * results['mAP']:.2f}"]
        row += [f"{100 * cmc[k - 1]:.2f}" if k <= cmc.size else "-" for k in (1, 5, 10)]
        row.append(f"{100 * results['mINP']:.2f}")
        if "mAP_trapezoid" in results:
            header.append("mAP (trapezoid)")
            row.append(f"{100 * results['mAP_trapezoid']:.2f}")
    return header, row
