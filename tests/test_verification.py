"""Same-vehicle decision figures (anet_tf.evaluation.verification) against a
straightforward all-pairs NumPy computation on small sets."""

import numpy as np
import pytest

from anet_tf.data.records import Record
from anet_tf.evaluation import evaluate_protocol
from anet_tf.evaluation import veri_protocol
from anet_tf.evaluation.extract import format_results
from anet_tf.evaluation.verification import BIN_WIDTH
from anet_tf.evaluation.verification import FMRS
from anet_tf.evaluation.verification import PairScores
from anet_tf.evaluation.verification import held_out_vehicles
from anet_tf.evaluation.verification import threshold_from_histograms


def _set(seed=0, ids=12, nq=40, ng=150, dim=16, noise=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    q_pids, g_pids = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    q = (centres[q_pids] + noise * rng.standard_normal((nq, dim))).astype(np.float32)
    g = (centres[g_pids] + noise * rng.standard_normal((ng, dim))).astype(np.float32)
    return q, g, q_pids, g_pids, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


def _all_pairs(q, g, q_pids, g_pids, q_camids, g_camids):
    """(scores [nq, ng] with junk as NaN, same [nq, ng]): every pair at once, in
    the evaluator's arithmetic (float32 features normalised, products summed in
    float64 and rounded to float32, distance 1 - product in float32)."""
    qn = q / np.sqrt(np.einsum("ij,ij->i", q, q))[:, None]
    gn = g / np.sqrt(np.einsum("ij,ij->i", g, g))[:, None]
    product = (qn.astype(np.float64) @ gn.astype(np.float64).T).astype(np.float32)
    scores = 1.0 - (np.float32(1) - product).astype(np.float64)
    same = q_pids[:, None] == g_pids[None, :]
    scores[same & (q_camids[:, None] == g_camids[None, :])] = np.nan
    return scores, same


def _reference_threshold(scores, same, fmr):
    """The threshold at ``fmr``; None where fewer than 1 / fmr different pairs
    cannot tell it."""
    different = np.sort(scores[~same & ~np.isnan(scores)])[::-1]
    k = int(np.floor(fmr * different.size))
    return None if k == 0 else np.nextafter(different[k], np.inf)


def _rates_at(scores, same, t):
    valid = ~np.isnan(scores)
    return (
        np.count_nonzero(scores[same & valid] >= t) / np.count_nonzero(same & valid),
        np.count_nonzero(scores[~same & valid] >= t) / np.count_nonzero(~same & valid),
    )


@pytest.mark.parametrize("exact_pairs", [2**22, 0], ids=["exact", "histogram"])
def test_thresholds_and_rates_agree_with_all_pairs(exact_pairs):
    q, g, qp, gp, qc, gc = _set()
    scores, same = _all_pairs(q, g, qp, gp, qc, gc)
    sink = PairScores(qp, gp, exact_pairs=exact_pairs)
    veri_protocol(q, g, qp, gp, qc, gc, chunk_size=7, block_sink=sink)
    out = sink.result()
    assert out["same_pairs"] == np.count_nonzero(same & ~np.isnan(scores))
    assert out["different_pairs"] == np.count_nonzero(~same & ~np.isnan(scores))
    measured = 0
    for point, fmr in zip(out["operating_points"], FMRS, strict=True):
        exact = _reference_threshold(scores, same, fmr)
        t = point["threshold"]
        if exact is None:  # too few different pairs: nothing accepted
            assert t is None and point["tmr"] == 0.0
            continue
        measured += 1
        if exact_pairs:
            assert t == exact
        else:  # the smallest bin edge at or above the exact threshold
            assert exact <= t < exact + BIN_WIDTH
        tmr, fmr_measured = _rates_at(scores, same, t)
        assert point["tmr"] == tmr and point["fmr_measured"] == fmr_measured
        assert fmr_measured <= fmr
    assert measured == 2  # 1e-2 and 1e-3 of about 5,000 different pairs


def test_figures_do_not_depend_on_the_chunk_size():
    q, g, qp, gp, qc, gc = _set(seed=1)
    results = []
    for chunk in (1, 9, 64):
        sink = PairScores(qp, gp, exact_pairs=0)
        veri_protocol(q, g, qp, gp, qc, gc, chunk_size=chunk, block_sink=sink)
        results.append(sink.result())
    assert results[0] == results[1] == results[2]


def test_open_set_agrees_with_a_straightforward_computation():
    q, g, qp, gp, qc, gc = _set(seed=2, noise=0.6)
    scores, same = _all_pairs(q, g, qp, gp, qc, gc)
    held = held_out_vehicles(qp, 0.5, seed=5)
    assert held.size == round(0.5 * np.unique(qp).size)
    sink = PairScores(qp, gp, seed=5)
    veri_protocol(q, g, qp, gp, qc, gc, chunk_size=8, block_sink=sink)
    out = sink.result()
    kept = ~np.isin(gp, held)
    s = np.where(np.isnan(scores), -np.inf, scores)[:, kept]
    top = np.argmax(s, axis=1)  # the first of equal scores, as the ranking
    top_score = s[np.arange(len(qp)), top]
    correct = gp[kept][top] == qp
    unknown = np.isin(qp, held)
    known = ~unknown & (same[:, kept] & ~np.isnan(scores[:, kept])).any(1)
    assert out["open_set"]["unknown_queries"] == unknown.sum() > 0
    assert out["open_set"]["known_queries"] == known.sum() > 0
    for point in out["operating_points"]:
        t = np.inf if point["threshold"] is None else point["threshold"]
        assert point["rejection_rate"] == np.mean(top_score[unknown] < t)
        assert point["DIR"] == np.mean(correct[known] & (top_score[known] >= t))
    # a low threshold rejects nothing and finds every top-1 that is right
    low = sink.open_set([-2.0])["rates"][0]
    assert low["rejection_rate"] == 0.0 and low["DIR"] == np.mean(correct[known])


def _records(pids, camids, split):
    return [
        Record(f"{split}/{i}.jpg", int(p), int(c), (), split)
        for i, (p, c) in enumerate(zip(pids, camids, strict=True))
    ]


def test_evaluate_protocol_reports_verification_beside_the_ranking():
    q, g, qp, gp, qc, gc = _set(seed=3)
    qr, gr = _records(qp, qc, "query"), _records(gp, gc, "gallery")
    plain = evaluate_protocol("veri776", q, g, qr, gr)
    both = evaluate_protocol("veri776", q, g, qr, gr, verification=True)
    assert "verification" not in plain
    assert both["mAP"] == plain["mAP"] and list(both["cmc"]) == list(plain["cmc"])
    # re-ranking changes the ranking, not the cosine scores the figures count
    reranked = evaluate_protocol(
        "veri776", q, g, qr, gr, rerank=True, verification=True
    )
    assert reranked["verification"] == both["verification"]
    text = format_results(both, "veri776")
    table, verification = text.split("\n\n")
    assert table.splitlines()[0].startswith("| dataset | mAP | R1")
    assert (
        verification.splitlines()[1]
        == "| FMR | threshold | TMR | rejected (held out) | DIR |"
    )
    lines = verification.splitlines()
    assert [line.split(" | ")[0] for line in lines[3:6]] == [
        "| 0.01",
        "| 0.001",
        "| 0.0001",
    ]
    # 1e-4 of about 5,000 different pairs cannot be told: dashes and one line
    assert lines[5] == "| 0.0001 | - | - | - | - |"
    pairs = both["verification"]["different_pairs"]
    assert pairs < 10_000 and lines[6] == (
        f"FMR 0.0001: not measured, {pairs} different-vehicle pairs are too few to "
        "tell it (1 / FMR needed)"
    )


def test_vehicleid_verification_counts_its_first_gallery_draw():
    features = np.random.default_rng(4).standard_normal((30, 8)).astype(np.float32)
    pids = np.repeat(np.arange(10), 3)
    out = evaluate_protocol(
        "vehicleid",
        np.zeros((0, 8), np.float32),
        features,
        [],
        _records(pids, [-1] * 30, "gallery"),
        vehicleid_trials=2,
        verification=True,
    )["verification"]
    # one gallery image per vehicle: each of the 20 queries has one same-vehicle pair
    assert out["same_pairs"] == 20 and out["different_pairs"] == 20 * 9


def test_no_threshold_reaches_a_tiny_fmr_when_everything_scores_alike():
    same = np.zeros(16, np.int64)
    different = np.zeros(16, np.int64)
    same[-1], different[-1] = 5, 100  # everything in the top bin
    assert threshold_from_histograms(same, different, 1e-3) == (float("inf"), 0.0, 0.0)


def test_a_held_out_share_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\)"):
        held_out_vehicles([1, 2, 3], 1.0, 0)
