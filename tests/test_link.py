"""Cross-camera linking of tracks: the constraints never violated (random cases),
agreement with SciPy's linkage without constraints and with a brute force on a
tiny case, the chaining that a large distance does not stop, the linking metrics
against hand-computed values (and motmetrics' IDF1), and ``anet-tf link`` end to
end with each bad input one line and nothing written."""

from __future__ import annotations

import csv
import itertools
import json
import os

import numpy as np
import pytest

from anet_tf.cli import main
from anet_tf.evaluation.linking import idf1
from anet_tf.evaluation.linking import pairwise_scores
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.link import cannot_link
from anet_tf.search.link import constrained_agglomerative
from anet_tf.search.link import link_tracks
from anet_tf.search.link import track_similarity
from anet_tf.search.link import violations
from anet_tf.search.link_files import read_travel_times


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def same(ids):
    ids = np.asarray(ids)
    return ids[:, None] == ids[None, :]


# ------------------------------------------------------------- the constraints


def random_case(rng):
    """Tracks of a few vehicles in 3 cameras, with many same-camera overlaps and
    random travel windows; features close within a vehicle."""
    n = int(rng.integers(4, 26))
    vehicles = rng.integers(0, max(2, n // 3), n)
    centres = rng.normal(size=(n, 8))
    features = unit(centres[vehicles] + 0.3 * rng.normal(size=(n, 8)))
    cameras = rng.integers(0, 3, n)
    start = rng.integers(0, 60, n).astype(float)
    end = start + rng.integers(0, 20, n)
    start[rng.random(n) < 0.1] = -1  # some unknown times
    end[start < 0] = -1
    windows = {(0, 1): (5.0, 30.0), (1, 2): (-5.0, 10.0), (2, 0): (0.0, 40.0)}
    return features, cameras, start, end, windows


@pytest.mark.parametrize("method", ["average", "complete", "single"])
def test_constraints_are_never_violated(method):
    rng = np.random.default_rng(0)
    for _ in range(40):
        features, cameras, start, end, windows = random_case(rng)
        forbidden = cannot_link(cameras, start, end, windows)
        for threshold in (-1.0, 0.0, 0.6):  # -1: everything allowed would merge
            ids = link_tracks(
                features, cameras, start, end, threshold=threshold,
                travel_windows=windows, method=method,
            )  # fmt: skip
            assert violations(ids, forbidden) == 0
            assert sorted(set(ids.tolist())) == list(range(ids.max() + 1))
        # at -1 every cluster is maximal: any two of them hold a forbidden pair
        ids = link_tracks(features, cameras, start, end, threshold=-1.0,
                          travel_windows=windows, method=method)  # fmt: skip
        for a, b in itertools.combinations(np.unique(ids), 2):
            assert forbidden[np.ix_(ids == a, ids == b)].any()


def test_the_constraints_themselves():
    cameras = np.array([0, 0, 0, 1, 1, -1])
    start = np.array([0, 5, 10, 40, 200, 0])
    end = np.array([10, 8, 20, 50, 210, 100])
    forbidden = cannot_link(cameras, start, end, {(0, 1): (15, 100)})
    assert forbidden[0, 1] and forbidden[1, 0]  # one camera, overlapping
    assert not forbidden[0, 2]  # meet at t=10 only: a broken track may be one
    assert not forbidden[1, 2]
    assert not forbidden[2, 3]  # gap 40 - 20 = 20, in [15, 100]
    assert not forbidden[0, 3]  # gap 40 - 10 = 30
    assert forbidden[2, 4] and forbidden[0, 4]  # gaps 180, 190 > 100
    assert not forbidden[:, 5].any()  # unknown camera: no one-camera constraint
    # a window is read both ways unless the reverse has its own
    cams, first, last = np.array([1, 0]), np.array([0, 20]), np.array([5, 25])  # gap 15
    assert not cannot_link(cams, first, last, {(0, 1): (10, 20)})[0, 1]
    assert cannot_link(cams, first, last, {(0, 1): (10, 20), (1, 0): (50, 60)})[0, 1]
    # unknown times constrain nothing
    assert not cannot_link(np.array([0, 0]), np.array([-1, 0]), np.array([-1, 9]))[0, 1]


def test_a_large_distance_does_not_stop_chaining_but_the_constraint_does():
    """Tracks A and C are forbidden; five tracks B are close to both. SciPy's
    average linkage with A-C at the largest cosine distance (2) still puts A and
    C in one cluster; the constrained loop never does."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    n = 7  # A = 0, C = 1, B = 2..6
    d = np.full((n, n), 0.2)
    np.fill_diagonal(d, 0.0)
    d[0, 1] = d[1, 0] = 2.0
    forbidden = np.zeros((n, n), bool)
    forbidden[0, 1] = forbidden[1, 0] = True
    scipy_ids = fcluster(linkage(squareform(d), "average"), 0.5, "distance")
    assert scipy_ids[0] == scipy_ids[1]
    ours = constrained_agglomerative(d, forbidden, 0.5)
    assert ours[0] != ours[1] and violations(ours, forbidden) == 0


# ------------------------------------------------------------ the clustering


@pytest.mark.parametrize("method", ["average", "complete", "single"])
def test_without_constraints_it_is_scipys_linkage(method):
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    rng = np.random.default_rng(1)
    for _ in range(25):
        n = int(rng.integers(2, 30))
        x = unit(rng.normal(size=(n, 4)))
        d = np.clip(1.0 - x @ x.T, 0.0, None)
        np.fill_diagonal(d, 0.0)
        t = float(rng.uniform(0.1, 1.2))
        ours = constrained_agglomerative(d, np.zeros((n, n), bool), t, method)
        theirs = fcluster(linkage(squareform(d, checks=False), method), t, "distance")
        assert (same(ours) == same(theirs)).all()


def partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for k in range(len(part)):
            yield part[:k] + [[first, *part[k]]] + part[k + 1 :]
        yield [[first], *part]


def test_agrees_with_a_brute_force_on_a_clear_case():
    """Three vehicles through two cameras, the third a near-twin of the first
    whose tracks overlap the first's in camera 0. The brute force: of all
    partitions that break no constraint, the one with the largest sum of
    (similarity - threshold) over linked pairs."""
    rng = np.random.default_rng(2)
    centres = np.eye(16)[:3]
    centres[2] = unit(centres[0] + 0.6 * centres[2])  # the twin: cosine 0.86
    vehicle = np.array([0, 0, 1, 1, 2, 2])
    cameras = np.array([0, 1, 0, 1, 0, 1])
    start = np.array([0, 100, 30, 150, 5, 200])
    end = start + 10
    windows = {(0, 1): (60, 200)}
    features = unit(centres[vehicle] + 0.05 * rng.normal(size=(6, 16)))
    threshold = 0.8
    s = track_similarity(features)
    forbidden = cannot_link(cameras, start, end, windows)
    best, best_score = None, -np.inf
    for part in partitions(list(range(6))):
        pairs = [(a, b) for group in part for a, b in itertools.combinations(group, 2)]
        if any(forbidden[a, b] for a, b in pairs):
            continue
        score = sum(s[a, b] - threshold for a, b in pairs)
        if score > best_score:
            best, best_score = part, score
    brute = np.empty(6, int)
    for k, group in enumerate(best):
        brute[group] = k
    ids = link_tracks(
        features, cameras, start, end, threshold=threshold, travel_windows=windows
    )
    assert (same(ids) == same(brute)).all()
    assert (same(ids) == same(vehicle)).all()
    # without the constraints the twins are one vehicle
    blind = link_tracks(features, [-1] * 6, [-1] * 6, [-1] * 6, threshold=threshold)
    assert blind[0] == blind[4]


def test_attribute_term_is_the_bhattacharyya_disagreement():
    f = unit(np.ones((3, 4)))
    color = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    s = track_similarity(f, [color], attribute_weight=0.4)
    assert s[0, 1] == pytest.approx(1.0 - 0.4)  # disjoint: BC 0
    assert s[0, 2] == pytest.approx(1.0 - 0.4 * (1 - np.sqrt(0.5)))
    assert s[0, 0] == pytest.approx(1.0)
    assert track_similarity(f, [color], attribute_weight=0.0)[0, 1] == pytest.approx(
        1.0
    )


def test_bad_arguments_are_one_line():
    f = unit(np.ones((2, 3)))
    with pytest.raises(SearchError, match=r"starts after it ends \(start 9 > end 3\)"):
        link_tracks(f, [0, 1], [0, 9], [5, 3], threshold=0.5)
    with pytest.raises(SearchError, match=r"in \[-1, 1\]"):
        link_tracks(f, [0, 1], [0, 1], [5, 3], threshold=1.5)
    with pytest.raises(SearchError, match="choose one of average, complete, single"):
        link_tracks(f, [0, 1], [0, 1], [5, 3], threshold=0.5, method="ward")


# ---------------------------------------------------------------- the metrics


def test_linking_metrics_hand_computed():
    true = [0, 0, 0, 1, 1, 2, -1]
    pred = [0, 0, 1, 1, 1, 2, 2]  # the last track has no truth: left out
    # true pairs: 3 + 1 = 4; linked pairs: {0,1}: 1, {2,3,4}: 3 -> 4; right: 2
    s = pairwise_scores(true, pred)
    assert (s["true_pairs"], s["linked_pairs"], s["correct_pairs"]) == (4, 4, 2)
    assert s["precision"] == s["recall"] == s["f1"] == pytest.approx(0.5)
    # overlap: truth 0 -> {g0: 2, g1: 1}, 1 -> {g1: 2}, 2 -> {g2: 1}: 2 + 2 + 1 of 6
    assert idf1(true, pred) == pytest.approx(5 / 6)
    # weighted (crops): 0 -> {g0: 3 + 1, g1: 1}, 1 -> {g1: 2}, 2 -> {g2: 2}: 8 of 9
    assert idf1(true, pred, [3, 1, 1, 1, 1, 2, 7]) == pytest.approx(8 / 9)
    # nothing linked: precision 1 (no wrong link), recall 0
    alone = pairwise_scores([0, 0, 1], [0, 1, 2])
    assert (alone["precision"], alone["recall"], alone["f1"]) == (1.0, 0.0, 0.0)
    assert idf1([0, 0, 1], [0, 1, 2]) == pytest.approx(2 / 3)
    assert idf1([5, 5, 7], [1, 1, 0]) == 1.0


def test_idf1_is_motmetrics_idf1():
    mm = pytest.importorskip("motmetrics")
    rng = np.random.default_rng(3)
    for _ in range(5):
        true = rng.integers(0, 6, 30)
        pred = rng.integers(0, 8, 30)
        acc = mm.MOTAccumulator(auto_id=True)
        for t, p in zip(true, pred, strict=True):  # one frame per track
            acc.update([int(t)], [int(p)], [[0.0]])
        summary = mm.metrics.create().compute(acc, metrics=["idf1"])
        assert idf1(true, pred) == pytest.approx(float(summary["idf1"].iloc[0]))


# ------------------------------------------------------------------ the command


def track_file(path, random_embeddings, *, with_tracks=True, times=None):
    """Four vehicles (pids 0-3), each a track in cameras 0 and 1 60 s apart: 8
    per-track rows as `embed --per-track` writes them."""
    emb = random_embeddings(8, 16, seed=4)
    rng = np.random.default_rng(5)
    centres = np.eye(16)[:4]
    pid = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    emb.embedding = unit(centres[pid] + 0.05 * rng.normal(size=(8, 16))).astype(
        np.float32
    )
    emb.pids = pid
    emb.camids = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    first = np.array([0, 5, 20, 30, 70, 75, 90, 100]) + 1_796_285_700
    emb.times = first if times is None else times[0]
    emb.times_last = first + 8 if times is None else times[1]
    emb.track_lengths = np.full(8, 9)
    emb.track_ids = np.asarray([f"c{c}-{i}" for i, c in enumerate(emb.camids)] if with_tracks
                               else [""] * 8)  # fmt: skip
    return save_embeddings(emb, str(path))


def test_link_command_end_to_end(tmp_path, random_embeddings, capsys):
    tracks = track_file(tmp_path / "tracks.npz", random_embeddings)
    travel = tmp_path / "travel.csv"
    travel.write_text("camera_a,camera_b,min_s,max_s\n0,1,30,120\n")
    out = tmp_path / "linked.csv"
    assert main(["link", tracks, "--threshold", "0.5", "--travel-times", str(travel),
                 "-o", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "8 tracks of 2 cameras linked into 4 vehicles" in printed
    assert "F1 1.000" in printed and "IDF1 (crops) 1.000" in printed
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["track_id", "camera_id", "start", "end", "global_id"]
    assert [r["track_id"] for r in rows] == [
        f"c{c}-{i}" for i, c in enumerate([0] * 4 + [1] * 4)
    ]
    assert rows[0]["start"] == "1796285700" and rows[0]["end"] == "1796285708"
    ids = [int(r["global_id"]) for r in rows]
    assert ids == [0, 1, 2, 3, 0, 1, 2, 3]
    # JSON, and a window that forbids every cross-camera link
    travel.write_text("camera_a,camera_b,min_s,max_s\n0,1,1000,2000\n")
    out_json = tmp_path / "linked.json"
    assert main(["link", tracks, "--threshold", "0.5", "--travel-times", str(travel),
                 "-o", str(out_json)]) == 0  # fmt: skip
    payload = json.loads(out_json.read_text())
    assert payload["vehicles"] == 8 and payload["threshold"] == 0.5
    assert payload["tracks"][4] == {"track_id": "c1-4", "camera_id": 1, "start": 1796285770,
                                    "end": 1796285778, "global_id": 4}  # fmt: skip


def test_crop_rows_are_grouped_into_tracks(tmp_path, random_embeddings, capsys):
    """One row per crop with a track_id (an ordinary embed of a manifest with
    tracks): grouped as --per-track would."""
    emb = random_embeddings(6, 8, seed=6)
    emb.embedding = unit(np.repeat(np.eye(8)[:3], 2, axis=0)).astype(np.float32)
    emb.track_ids = np.array(["a", "a", "b", "b", "c", "c"])
    emb.camids = np.array([0, 0, 1, 1, 0, 0])
    emb.times = np.array([0, 4, 10, 12, 2, 3])
    emb.times_last = emb.times.copy()
    emb.pids = np.array([7, 7, 7, 7, 8, 8])
    path = save_embeddings(emb, str(tmp_path / "crops.npz"))
    out = tmp_path / "linked.csv"
    assert main(["link", path, "--threshold", "-1", "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["track_id"], r["start"], r["end"]) for r in rows] == [
        ("a", "0", "4"), ("b", "10", "12"), ("c", "2", "3")]  # fmt: skip
    # a and c overlap in camera 0: never one vehicle, even at threshold -1
    assert rows[0]["global_id"] != rows[2]["global_id"]


def bad_link(argv, tmp_path, capsys, expected_code=1):
    out = tmp_path / "never.csv"
    code = main(["link", *argv, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == expected_code
    assert len(err.splitlines()) == 1, err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    return err


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, random_embeddings, capsys):
    good = track_file(tmp_path / "tracks.npz", random_embeddings)
    untracked = track_file(
        tmp_path / "untracked.npz", random_embeddings, with_tracks=False
    )
    err = bad_link([untracked, "--threshold", "0.5"], tmp_path, capsys)
    assert "untracked.npz: no track rows" in err
    t0 = np.array([0, 5, 20, 30, 70, 75, 90, 100])
    unsorted = track_file(
        tmp_path / "unsorted.npz", random_embeddings, times=(t0, t0 - 1)
    )
    err = bad_link([unsorted, "--threshold", "0.5"], tmp_path, capsys)
    assert "unsorted.npz: row 1 (track 'c0-1', time 5, time_last 4)" in err
    assert "its time is after its time_last" in err
    half = track_file(
        tmp_path / "half.npz", random_embeddings, times=(t0, np.full(8, -1))
    )
    err = bad_link([half, "--threshold", "0.5"], tmp_path, capsys)
    assert "one of time and time_last is unknown" in err
    travel = tmp_path / "travel.csv"
    travel.write_text("camera_a,camera_b,min_s,max_s\n0,1,30,120\n1,2,soon,60\n")
    err = bad_link(
        [good, "--threshold", "0.5", "--travel-times", str(travel)], tmp_path, capsys
    )
    assert f"{travel}, line 3: min_s 'soon' is not a number of seconds" in err
    err = bad_link([good, "--threshold", "1.5"], tmp_path, capsys, expected_code=2)
    assert "--threshold 1.5: a cosine similarity is in [-1, 1]" in err
    err = bad_link([good, "--threshold", "0.5", "--fmr", "1e-3"], tmp_path, capsys, 2)
    assert "--fmr reads a threshold from --calibration" in err
    err = bad_link(
        [str(tmp_path / "missing.npz"), "--threshold", "0.5"], tmp_path, capsys
    )
    assert "missing.npz: no such embeddings file" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "line 1: the header must be camera_a,camera_b,min_s,max_s"),
        ("a,b,c,d\n", "line 1: the header must be"),
        ("camera_a,camera_b,min_s,max_s\n\n0,1,5\n", "line 3: 3 cells, 4 expected"),
        ("camera_a,camera_b,min_s,max_s\nx,1,5,6\n", "line 2: camera_a 'x' is not an integer"),
        ("camera_a,camera_b,min_s,max_s\n0,1,9,6\n", "line 2: min_s 9 is above max_s 6"),
        ("camera_a,camera_b,min_s,max_s\n0,1,5,nan\n", "line 2: max_s 'nan' is not a finite"),
        ("camera_a,camera_b,min_s,max_s\n0,1,5,6\n0,1,1,2\n",
         "line 3: cameras 0,1 are already given on line 2"),
    ],
)  # fmt: skip
def test_bad_travel_times_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "travel.csv"
    path.write_text(text)
    with pytest.raises(
        SearchError,
        match=f"^{path}, " + message.replace("(", r"\(").replace(")", r"\)"),
    ):
        read_travel_times(str(path))


def test_travel_times_read_both_ways(tmp_path):
    path = tmp_path / "travel.csv"
    path.write_text("camera_a,camera_b,min_s,max_s\n0,1,30,120\n2,1,-5,10.5\n")
    assert read_travel_times(str(path)) == {(0, 1): (30.0, 120.0), (2, 1): (-5.0, 10.5)}


def calibration_file(path, fingerprint):
    """A minimal calibration of `anet-tf calibrate`'s format: threshold 0.5 at
    FMR 1e-3."""
    payload = {
        "kind": "anet-tf calibration",
        "format": 1,
        "model": {"fingerprint": fingerprint, "path": "/models/m"},
        "histograms": {
            "bins": 4,
            "same": {"start": 3, "counts": [10]},
            "different": {"start": 0, "counts": [10]},
        },
        "operating_points": [{"fmr": 1e-3, "threshold": 0.5, "tmr": 1.0}],
        "probability": {"method": "logistic", "coef": 5.0, "intercept": -2.0},
    }
    path.write_text(json.dumps(payload))
    return str(path)


def test_link_with_a_calibration(tmp_path, random_embeddings, capsys):
    tracks = track_file(tmp_path / "tracks.npz", random_embeddings)
    out = tmp_path / "linked.json"
    good = calibration_file(tmp_path / "calibration.json", "f00d")
    assert main(["link", tracks, "--calibration", good, "--fmr", "1e-3", "-o", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["threshold"] == 0.5 and payload["fmr"] == 1e-3
    assert payload["vehicles"] == 4
    other = calibration_file(tmp_path / "other.json", "beef")
    err = bad_link([tracks, "--calibration", other], tmp_path, capsys)
    assert "other.json calibrates another model" in err
