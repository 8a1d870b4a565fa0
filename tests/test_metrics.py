"""Tests of anet_tf.evaluation.metrics: hand-computed tiny cases, an independent
straightforward evaluator (FastReID's ``eval_func`` with a stable sort, and the
MATLAB ``compute_AP`` loop), and the chunked evaluator against the full-matrix one."""

import tracemalloc

import numpy as np
import pytest

from anet_tf.evaluation.metrics import evaluate_features
from anet_tf.evaluation.metrics import evaluate_rank
from anet_tf.evaluation.metrics import l2_normalize
from anet_tf.evaluation.metrics import pairwise_distance

# ------------------------------------------------------- independent reference


def reference_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """FastReID's python ``eval_func`` (stable sort; CMC padded to max_rank) plus the
    MATLAB ``compute_AP`` loop of the VeRi/Market kits, written out as they are."""
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp, all_ap_matlab = [], [], [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        if q_camids is None:
            keep = np.ones(num_g, dtype=bool)
        else:
            remove = (g_pids[order] == q_pids[q_idx]) & (
                g_camids[order] == q_camids[q_idx]
            )
            keep = np.invert(remove)
        raw_cmc = matches[q_idx][keep]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        pos_idx = np.where(raw_cmc == 1)
        max_pos_idx = np.max(pos_idx)
        all_inp.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - cmc.size), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
        all_ap_matlab.append(matlab_compute_ap(raw_cmc))
    return {
        "cmc": np.asarray(all_cmc, dtype=np.float64).sum(0) / len(all_cmc),
        "mAP": np.mean(all_ap),
        "mINP": np.mean(all_inp),
        "mAP_trapezoid": np.mean(all_ap_matlab),
        "num_valid_queries": len(all_ap),
    }


def matlab_compute_ap(good_flags):
    """MATLAB compute_AP after junk removal: trapezoid rule over recall."""
    ngood = good_flags.sum()
    old_recall, old_precision, ap, hits = 0.0, 1.0, 0.0, 0
    for j, good in enumerate(good_flags):
        hits += int(good)
        recall = hits / ngood
        precision = hits / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision = recall, precision
        if hits == ngood:
            break
    return ap


def assert_same(result, expected, tol=1e-12):
    np.testing.assert_allclose(result["cmc"], expected["cmc"], rtol=0, atol=tol)
    for key in ("mAP", "mINP", "mAP_trapezoid", "num_valid_queries"):
        if key in result and key in expected:
            assert abs(result[key] - expected[key]) <= tol, key


def random_labels(rng, num_q, num_g, num_ids, num_cams):
    return (
        rng.integers(0, num_ids, num_q),
        rng.integers(0, num_ids, num_g),
        rng.integers(0, num_cams, num_q),
        rng.integers(0, num_cams, num_g),
    )


# ------------------------------------------------------------ hand-computed cases


def one_query(distances, pids, camids, q_pid=1, q_camid=0, **kwargs):
    return evaluate_rank(
        np.array([distances], dtype=np.float32),
        [q_pid],
        pids,
        None if camids is None else [q_camid],
        camids,
        **kwargs,
    )


def test_junk_removal_hand_computed():
    # Item 0 has the query's id and camera: removed. Remaining order:
    # 1 (other id), 2 (match), 3 (other id), 4 (match) -> match ranks 1 and 3.
    d = [0.1, 0.2, 0.3, 0.4, 0.5]
    pids = [1, 2, 1, 3, 1]
    cams = [0, 1, 1, 0, 2]
    r = one_query(d, pids, cams, max_rank=5, trapezoid_ap=True)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-15)
    assert r["mINP"] == pytest.approx(2 / 4, abs=1e-15)
    # trapezoid: (0 + 1/2)/2 for the first hit, (1/3 + 2/4)/2 for the second
    assert r["mAP_trapezoid"] == pytest.approx(
        ((0 + 1 / 2) / 2 + (1 / 3 + 1 / 2) / 2) / 2
    )
    assert r["num_valid_queries"] == 1 and r["num_skipped_queries"] == 0


def test_no_cameras_removes_nothing():
    r = one_query([0.1, 0.2, 0.3, 0.4, 0.5], [1, 2, 1, 3, 1], None, max_rank=3)
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1])
    assert r["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-15)
    assert r["mINP"] == pytest.approx(3 / 5, abs=1e-15)


def test_ties_keep_gallery_order():
    # Item 3 is nearest; items 0, 1, 2 tie and keep their index order.
    cams = [1, 1, 1, 1]
    r = one_query([0.2, 0.2, 0.2, 0.1], [2, 1, 1, 3], cams, max_rank=4)
    np.testing.assert_array_equal(r["cmc"], [0, 0, 1, 1])
    assert r["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2, abs=1e-15)
    r = one_query([0.2, 0.2, 0.2, 0.1], [1, 2, 1, 3], cams, max_rank=4)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1])
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-15)


def test_tie_with_removed_item():
    # The junk item ties with the match and comes first; removed, the match is first.
    r = one_query([0.2, 0.2, 0.3], [1, 1, 2], [0, 1, 1], max_rank=2)
    np.testing.assert_array_equal(r["cmc"], [1, 1])
    assert r["mAP"] == 1.0 and r["mINP"] == 1.0


def test_queries_without_match_are_skipped_and_counted():
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.05, 0.1, 0.3]])
    # query 0: id 9 not in the gallery; query 1: its only match is junk;
    # query 2: match at rank 1.
    r = evaluate_rank(distmat, [9, 1, 2], [1, 2, 3], [0, 0, 0], [0, 1, 0], max_rank=3)
    assert r["num_valid_queries"] == 1
    assert r["num_skipped_queries"] == 2
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1])
    assert r["mAP"] == 0.5
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(distmat[:2], [9, 1], [1, 2, 3], [0, 0], [0, 1, 0])


def test_one_gallery_image_per_identity():
    # Each query's single match is at rank 0, 2, 1, 3: AP = INP = 1 / (rank + 1).
    distmat = np.array(
        [
            [0.1, 0.5, 0.6, 0.7],
            [0.1, 0.3, 0.2, 0.7],
            [0.4, 0.5, 0.3, 0.2],
            [0.1, 0.2, 0.3, 0.9],
        ]
    )
    ids = np.arange(4)
    r = evaluate_rank(distmat, ids, ids, np.zeros(4), np.ones(4), max_rank=4)
    np.testing.assert_allclose(r["cmc"], [1 / 4, 2 / 4, 3 / 4, 1])
    expected = np.mean([1, 1 / 3, 1 / 2, 1 / 4])
    assert r["mAP"] == pytest.approx(expected, abs=1e-15)
    assert r["mINP"] == pytest.approx(expected, abs=1e-15)


def test_cmc_is_longer_than_gallery():
    r = one_query([0.3, 0.1], [1, 2], [1, 1], max_rank=5)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])


def test_input_errors():
    d = np.zeros((2, 3))
    with pytest.raises(ValueError, match="q_pids has 1 entries"):
        evaluate_rank(d, [1], [1, 2, 3], [0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="for both query and gallery"):
        evaluate_rank(d, [1, 2], [1, 2, 3], None, [0, 0, 0])
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(d, [1, 2], [1, 2, 3], None, None, max_rank=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.full((2, 3), np.nan), [1, 2], [1, 2, 3], None, None)
    f = np.ones((2, 4))
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        evaluate_features(f, f, [1, 2], [1, 2], None, None, metric="l1")
    with pytest.raises(ValueError, match="same dim"):
        evaluate_features(f, np.ones((2, 3)), [1, 2], [1, 2], None, None)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_features(f, f, [1, 2], [1, 2], None, None, chunk_size=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_features(f * np.nan, f, [1, 2], [1, 2], None, None)


# ------------------------------------------------- against the reference evaluator


@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize("cameras", [True, False])
def test_evaluate_rank_matches_reference(levels, cameras):
    rng = np.random.default_rng(1 if levels is None else 2)
    num_q, num_g = 60, 150
    q_pids, g_pids, q_cams, g_cams = random_labels(rng, num_q, num_g, 12, 3)
    distmat = rng.random((num_q, num_g))
    if levels is not None:  # heavy ties
        distmat = np.floor(distmat * levels) / levels
    if not cameras:
        q_cams = g_cams = None
    kwargs = dict(max_rank=20)
    expected = reference_evaluate(distmat, q_pids, g_pids, q_cams, g_cams, **kwargs)
    result = evaluate_rank(
        distmat, q_pids, g_pids, q_cams, g_cams, trapezoid_ap=True, **kwargs
    )
    assert_same(result, expected)
    assert result["num_valid_queries"] + result["num_skipped_queries"] == num_q


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("quantised", [False, True])
def test_evaluate_features_equals_evaluate_rank(metric, quantised):
    rng = np.random.default_rng(3)
    num_q, num_g, dim = 70, 300, 16
    q_pids, g_pids, q_cams, g_cams = random_labels(rng, num_q, num_g, 25, 4)
    centres = rng.standard_normal((25, dim))
    qf = centres[q_pids] + rng.standard_normal((num_q, dim))
    gf = centres[g_pids] + rng.standard_normal((num_g, dim))
    if quantised:  # few distinct vectors: many exactly tied distances
        qf, gf = np.sign(np.round(qf)), np.sign(np.round(gf))
    distmat = pairwise_distance(qf, gf, metric)
    if quantised:
        assert np.unique(distmat).size < distmat.size / 20
    expected = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, trapezoid_ap=True)
    assert_same(
        expected, reference_evaluate(distmat, q_pids, g_pids, q_cams, g_cams, 50)
    )
    for chunk_size in (1, 2, 7, 64, 1000):
        result = evaluate_features(
            qf,
            gf,
            q_pids,
            g_pids,
            q_cams,
            g_cams,
            metric=metric,
            chunk_size=chunk_size,
            trapezoid_ap=True,
        )
        assert_same(result, expected)
        assert result["num_skipped_queries"] == expected["num_skipped_queries"]
    no_cams = evaluate_features(
        qf, gf, q_pids, g_pids, None, None, metric=metric, chunk_size=16
    )
    assert_same(no_cams, evaluate_rank(distmat, q_pids, g_pids, None, None))


def test_distances():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((5, 8))
    g = rng.standard_normal((6, 8))
    qn, gn = l2_normalize(q), l2_normalize(g)
    np.testing.assert_allclose(np.linalg.norm(qn, axis=1), 1, atol=1e-6)
    cos = pairwise_distance(q, g, "cosine")
    np.testing.assert_allclose(cos, 1 - qn @ gn.T, atol=1e-6)
    euc = pairwise_distance(q, g, "euclidean")
    np.testing.assert_allclose(euc, ((q[:, None] - g[None]) ** 2).sum(-1), rtol=1e-5)
    assert cos.dtype == euc.dtype == np.float32
    assert (pairwise_distance(q, q, "euclidean") >= 0).all()
    # The distance of a pair does not depend on the other queries of the block.
    np.testing.assert_array_equal(pairwise_distance(q[2:3], g), cos[2:3])


def test_evaluate_features_memory_is_bounded_by_the_chunk():
    rng = np.random.default_rng(5)
    num_q, num_g, dim, chunk = 1200, 5000, 16, 40
    q_pids, g_pids, q_cams, g_cams = random_labels(rng, num_q, num_g, 400, 5)
    qf = rng.standard_normal((num_q, dim)).astype(np.float32)
    gf = rng.standard_normal((num_g, dim)).astype(np.float32)
    tracemalloc.start()
    try:
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, chunk_size=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_distmat = num_q * num_g * 4
    block = chunk * num_g * 4
    assert peak < 8 * block + 3 * (qf.nbytes + gf.nbytes)
    assert peak < full_distmat / 5
