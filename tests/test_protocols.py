"""Tests of the evaluation protocols, test-time features, re-ranking and the table."""

import numpy as np
import pytest

from anet_tf.config import EvalConfig
from anet_tf.data.records import Record
from anet_tf.evaluation import assemble_feature
from anet_tf.evaluation import combine_flip
from anet_tf.evaluation import evaluate_protocol
from anet_tf.evaluation import evaluate_rank
from anet_tf.evaluation import finalize_features
from anet_tf.evaluation import format_table
from anet_tf.evaluation import k_reciprocal_rerank
from anet_tf.evaluation import l2_normalize
from anet_tf.evaluation import labels
from anet_tf.evaluation import pairwise_distance
from anet_tf.evaluation import protocol_kwargs
from anet_tf.evaluation import vehicleid_protocol
from anet_tf.evaluation import vehicleid_split
from anet_tf.evaluation import veri_protocol


def clustered(seed, num_ids, per_id, dim=16, noise=0.9):
    """Features around one centre per identity; camera = image index within id."""
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(num_ids), per_id)
    camids = np.tile(np.arange(per_id), num_ids)
    centres = rng.standard_normal((num_ids, dim))
    features = centres[pids] + noise * rng.standard_normal((pids.size, dim))
    return features.astype(np.float32), pids, camids


def split_first_per_id(pids, per_id):
    query = np.arange(0, pids.size, per_id)
    return query, np.setdiff1d(np.arange(pids.size), query)


def records(pids, camids, split):
    return [
        Record(
            path=f"{split}/{i}.jpg",
            pid=int(p),
            camid=int(c),
            attributes=(),
            split=split,
        )
        for i, (p, c) in enumerate(zip(pids, camids, strict=True))
    ]


# ----------------------------------------------------------------------- features


def test_assemble_feature():
    f = np.ones((3, 4))
    a = [np.full((3, 2), 2.0), np.full((3, 2), 3.0)]
    j = np.zeros((3, 5))
    assert assemble_feature("f", f, a, j).shape == (3, 4)
    fa = assemble_feature("fa", f, a, j)
    np.testing.assert_array_equal(fa[0], [1, 1, 1, 1, 2, 2, 3, 3])
    assert assemble_feature("j", f, a, j).shape == (3, 5)
    with pytest.raises(ValueError, match="joint feature"):
        assemble_feature("j", f, a)
    with pytest.raises(ValueError, match="attribute features"):
        assemble_feature("fa", f)
    with pytest.raises(KeyError, match="valid: f, fa, j"):
        assemble_feature("g", f)


def test_flip_and_normalisation():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 5, 8))
    combined = combine_flip(x, y)
    np.testing.assert_allclose(np.linalg.norm(combined, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(combined, l2_normalize(x + y), atol=1e-6)
    np.testing.assert_array_equal(finalize_features(x, y), combined)
    np.testing.assert_array_equal(finalize_features(x), l2_normalize(x))
    with pytest.raises(ValueError, match="same shape"):
        combine_flip(x, y[:2])


# ------------------------------------------------------------------ veri protocol


def test_veri_protocol_removes_same_id_same_camera():
    features, pids, camids = clustered(0, 15, 6)
    query, gallery = split_first_per_id(pids, 6)
    camids[gallery[::5]] = 0  # some gallery items share the query camera: junk
    qf, gf = features[query], features[gallery]
    result = veri_protocol(
        qf, gf, pids[query], pids[gallery], camids[query], camids[gallery], chunk_size=4
    )
    distmat = pairwise_distance(qf, gf, "cosine")
    expected = evaluate_rank(
        distmat, pids[query], pids[gallery], camids[query], camids[gallery]
    )
    assert result["mAP"] == expected["mAP"]
    np.testing.assert_array_equal(result["cmc"], expected["cmc"])
    assert result["R1"] == expected["cmc"][0] and result["R10"] == expected["cmc"][9]
    # Cameras all unknown (-1): nothing is removed.
    minus = -np.ones_like(camids)
    no_cams = veri_protocol(
        qf, gf, pids[query], pids[gallery], minus[query], minus[gallery]
    )
    assert (
        no_cams["mAP"]
        == evaluate_rank(distmat, pids[query], pids[gallery], None, None)["mAP"]
    )


def test_evaluate_protocol_with_records():
    features, pids, camids = clustered(1, 10, 5)
    query, gallery = split_first_per_id(pids, 5)
    q_records = records(pids[query], camids[query], "query")
    g_records = records(pids[gallery], camids[gallery], "gallery")
    np.testing.assert_array_equal(labels(q_records)[0], pids[query])
    kwargs = protocol_kwargs(EvalConfig(metric="euclidean", chunk_size=3))
    result = evaluate_protocol(
        "veri776", features[query], features[gallery], q_records, g_records, **kwargs
    )
    expected = veri_protocol(
        l2_normalize(features[query]),
        l2_normalize(features[gallery]),
        pids[query],
        pids[gallery],
        camids[query],
        camids[gallery],
        metric="euclidean",
    )
    assert result["mAP"] == expected["mAP"]
    with pytest.raises(KeyError, match="valid: veri776, veriwild, synthetic"):
        evaluate_protocol(
            "market", features[query], features[gallery], q_records, g_records
        )
    with pytest.raises(ValueError, match="9 query features for 10 query records"):
        evaluate_protocol(
            "veri776", features[query][:9], features[gallery], q_records, g_records
        )


# ------------------------------------------------------------- vehicleid protocol


def test_vehicleid_split_picks_one_gallery_image_per_identity():
    pids = np.array([5, 5, 5, 7, 7, 9, 3, 3, 3, 3])
    query, gallery = vehicleid_split(pids, np.random.default_rng(0))
    assert sorted(pids[gallery]) == [3, 5, 7, 9]
    np.testing.assert_array_equal(
        np.sort(np.concatenate([query, gallery])), np.arange(10)
    )
    again = vehicleid_split(pids, np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], gallery)
    draws = {
        tuple(vehicleid_split(pids, np.random.default_rng(s))[1]) for s in range(20)
    }
    assert len(draws) > 5  # the gallery image is drawn, not always the first


def test_vehicleid_trials_are_reproducible_from_the_seed():
    features, pids, _ = clustered(2, 30, 6, noise=1.2)
    result = vehicleid_protocol(features, pids, trials=10, seed=7, chunk_size=32)
    again = vehicleid_protocol(features, pids, trials=10, seed=7, chunk_size=32)
    assert result["trials"] == again["trials"]
    assert len(result["trials"]) == 10
    r1 = [t["R1"] for t in result["trials"]]
    assert len(set(r1)) > 1  # each trial draws another gallery
    assert result["R1"] == pytest.approx(np.mean(r1))
    assert result["R5"] == pytest.approx(np.mean([t["R5"] for t in result["trials"]]))
    assert result["R1_std"] == pytest.approx(np.std(r1))
    other = vehicleid_protocol(features, pids, trials=10, seed=8, chunk_size=32)
    assert other["trials"] != result["trials"]
    # Trial 0 is the evaluation of the first split drawn from the seed.
    query, gallery = vehicleid_split(pids, np.random.default_rng(7))
    distmat = pairwise_distance(features[query], features[gallery])
    first = evaluate_rank(distmat, pids[query], pids[gallery], None, None)
    assert result["trials"][0]["R1"] == first["cmc"][0]
    assert result["trials"][0]["mAP"] == first["mAP"]
    assert result["trials"][0]["num_gallery"] == 30


def test_vehicleid_protocol_pools_query_and_gallery_records():
    features, pids, camids = clustered(3, 12, 4)
    query, gallery = split_first_per_id(pids, 4)
    q_records = records(pids[query], -np.ones(query.size), "query")
    g_records = records(pids[gallery], -np.ones(gallery.size), "gallery")
    result = evaluate_protocol(
        "vehicleid",
        features[query],
        features[gallery],
        q_records,
        g_records,
        vehicleid_trials=3,
        seed=1,
    )
    pooled = np.concatenate([features[query], features[gallery]])
    expected = vehicleid_protocol(
        l2_normalize(pooled),
        np.concatenate([pids[query], pids[gallery]]),
        trials=3,
        seed=1,
    )
    assert result["trials"] == expected["trials"]
    assert result["trials"][0]["num_query"] == 36
    # As the VehicleID reader gives them: every test image in the gallery.
    all_records = records(pids, -np.ones(pids.size), "gallery")
    only_gallery = evaluate_protocol(
        "vehicleid", [], features, [], all_records, vehicleid_trials=3, seed=1
    )
    assert only_gallery["trials"][0]["num_query"] == 36


# -------------------------------------------------------------------- re-ranking


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al.'s re_ranking.py (as in torchreid), written out with a stable
    argsort."""
    original_dist = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_g_dist.shape[0]
    gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    all_num = gallery_num
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[
                candidate, : int(np.around(k1 / 2.0)) + 1
            ]
            candidate_backward_k_neigh_index = initial_rank[
                candidate_forward_k_neigh_index, : int(np.around(k1 / 2.0)) + 1
            ]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(
                np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)
            ) > 2.0 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rerank_matches_reference_and_improves_map(metric):
    features, pids, camids = clustered(0, 20, 8)
    query, gallery = split_first_per_id(pids, 8)
    qf, gf = features[query], features[gallery]
    q_g = pairwise_distance(qf, gf, metric)
    q_q = pairwise_distance(qf, qf, metric)
    g_g = pairwise_distance(gf, gf, metric)
    reranked = k_reciprocal_rerank(q_g, q_q, g_g)
    assert reranked.shape == q_g.shape and reranked.dtype == np.float32
    np.testing.assert_allclose(reranked, reference_re_ranking(q_g, q_q, g_g), atol=1e-6)
    labels_ = (pids[query], pids[gallery], camids[query], camids[gallery])
    before = evaluate_rank(q_g, *labels_)["mAP"]
    after = evaluate_rank(reranked, *labels_)["mAP"]
    assert after > before + 0.05
    through_protocol = veri_protocol(qf, gf, *labels_, metric=metric, rerank=True)
    assert through_protocol["mAP"] == after


def test_rerank_argument_errors():
    d = np.zeros((2, 3))
    with pytest.raises(ValueError, match="q_q_dist must be"):
        k_reciprocal_rerank(d, np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="k1=20"):
        k_reciprocal_rerank(d, np.zeros((2, 2)), np.zeros((3, 3)))


# -------------------------------------------------------------------------- table


def test_format_table():
    result = {"cmc": np.linspace(0.9, 1.0, 50), "mAP": 0.81234, "mINP": 0.4}
    table = format_table(result, "veri776")
    lines = table.splitlines()
    assert lines[0] == "| dataset | mAP | R1 | R5 | R10 | mINP |"
    assert lines[2].startswith("| veri776 | 81.23 | 90.00 |")
    assert lines[2].endswith("| 40.00 |")
    vid = {"R1": 0.75, "R5": 0.9, "R1_std": 0.01, "R5_std": 0.005, "trials": [{}] * 10}
    table = format_table(vid, "vehicleid")
    assert table.splitlines()[0] == "| dataset | R1 | R5 | trials |"
    assert "75.00 ± 1.00" in table and "| 10 |" in table
    with_feature = format_table(result, "veri776", "fa").splitlines()
    assert with_feature[0] == "| dataset | feature | mAP | R1 | R5 | R10 | mINP |"
    assert with_feature[1] == "|---|---|---|---|---|---|---|"
    assert with_feature[2].startswith("| veri776 | fa | 81.23 |")
