"""Tracks: the track_id column, VeRi-776's test_track.txt, the synthetic generator's
tracks, ``data check``, track features and the track protocols (against plain
NumPy), ``embed --per-track`` and the embeddings format's track arrays."""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from anet_tf.cli import main
from anet_tf.config import TRACK_PROTOCOLS
from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.data.check import check
from anet_tf.data.check import format_report
from anet_tf.data.generic import manifest_attributes
from anet_tf.data.generic import read_folder
from anet_tf.data.records import DataError
from anet_tf.data.records import Record
from anet_tf.data.synthetic import generate
from anet_tf.data.veri776 import read_veri776
from anet_tf.evaluation.tracks import PROTOCOL_FUNCTIONS
from anet_tf.evaluation.tracks import aggregate_features
from anet_tf.evaluation.tracks import aggregate_probs
from anet_tf.evaluation.tracks import track_groups
from anet_tf.evaluation.tracks import track_protocols
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.embeddings import save_embeddings

HEADER = "path,vehicle_id,camera_id,split,time,track_id,color\n"
# (path, vehicle, camera, split, time, track)
ROWS = [
    ("a0.png", 1, 1, "train", 10, "t1"),
    ("a1.png", 1, 1, "train", 11, "t1"),
    ("b0.png", 2, 1, "train", 12, ""),
    ("q0.png", 3, 1, "query", 20, "q1"),
    ("g0.png", 3, 2, "gallery", 30, "g1"),
    ("g1.png", 3, 2, "gallery", 31, "g1"),
    ("g2.png", 3, 2, "gallery", 32, "g1"),
    ("g3.png", 4, 1, "gallery", 40, "g2"),
]


def _folder(root, rows=ROWS, header=HEADER) -> str:
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "attributes"), exist_ok=True)
    with open(os.path.join(root, "attributes", "color.txt"), "w") as fh:
        fh.write("red\nblue\n")
    lines = [header]
    for path, pid, cam, split, time, track in rows:
        Image.new("RGB", (8, 8), (pid * 40, 0, 0)).save(
            os.path.join(root, "images", path)
        )
        lines.append(f"images/{path},{pid},{cam},{split},{time},{track},red\n")
    with open(os.path.join(root, "manifest.csv"), "w") as fh:
        fh.write("".join(lines))
    return str(root)


# ------------------------------------------------------------------------- data


def test_track_id_column_is_read_and_never_an_attribute(tmp_path):
    root = _folder(tmp_path)
    assert manifest_attributes(root) == ["color"]
    ds = read_folder(root, ["color"])
    assert [(r.track_id, r.time) for r in ds.train] == [
        ("t1", 10),
        ("t1", 11),
        (None, 12),
    ]
    assert [r.track_id for r in ds.gallery] == ["g1", "g1", "g1", "g2"]
    with pytest.raises(DataError, match=r"names 'track_id', a column with a meaning"):
        read_folder(root, ["track_id"])


@pytest.mark.parametrize(
    "row, message",
    [
        (
            6,
            r"manifest.csv:8: track 'g1' spans two cameras: camera_id 1 here, 2 on line 6",
        ),
        (
            5,
            r"manifest.csv:7: track 'g1' spans two vehicles: vehicle_id 4 here, 3 on line 6",
        ),
        (
            5,
            r"manifest.csv:8: track 'g1' is not in time order: time 32 here, 40 on line 7",
        ),
        (5, r"manifest.csv:7: crop of track 'g1' without a time"),
    ],
    ids=["two_cameras", "two_vehicles", "unsorted_times", "missing_time"],
)
def test_a_bad_track_is_one_line_naming_file_and_line(tmp_path, row, message):
    rows = list(ROWS)
    path, pid, cam, split, time, track = rows[row]
    if "cameras" in message:
        cam = 1
    elif "vehicles" in message:
        pid = 4
    elif "time order" in message:
        time = 40
    rows[row] = (path, pid, cam, split, "" if "without" in message else time, track)
    root = _folder(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        read_folder(root, ["color"])
    report = check(root, ["color"], verify_images=False)
    assert len(report["problems"]) == 1 and "\n" not in report["problems"][0]
    assert not report["ok"]


def test_data_check_reports_tracks(tmp_path):
    report = check(_folder(tmp_path), ["color"], verify_images=False)
    tracks = report["stats"]["tracks"]
    assert tracks["train"] == {
        "tracks": 1,
        "images_in_tracks": 2,
        "length": {"min": 2, "median": 2, "mean": 2.0, "max": 2},
    }
    assert tracks["gallery"]["tracks"] == 2
    assert tracks["gallery"]["length"] == {"min": 1, "median": 3, "mean": 2.0, "max": 3}
    text = format_report(report)
    assert "tracks (crops of one vehicle by one camera)" in text
    assert "gallery       2       4           1       3   2.0    3" in text


def test_data_without_tracks_reports_none(tmp_path):
    rows = [r[:5] + ("",) for r in ROWS]
    report = check(_folder(tmp_path, rows), ["color"], verify_images=False)
    assert report["stats"]["tracks"] is None
    assert "tracks (" not in format_report(report)


def _veri_tracks(root, text):
    with open(os.path.join(root, "test_track.txt"), "w") as fh:
        fh.write(text)


def test_veri776_reads_test_track_txt(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    plain = read_veri776(root, ["color"])  # color: no typeID erratum warning
    assert all(r.track_id is None for r in plain.gallery + plain.query)
    _veri_tracks(
        root,
        "0002_c002_00030600_0.jpg 0002_c002_00030600_0.jpg \n"
        "0004_c020_00040010_0.jpg 0004_c020_00040010_0.jpg\r\n"
        "0002_c003_00030610_0.jpg 0002_c003_00030610_0.jpg\n",
    )
    ds = read_veri776(root, ["color"])
    assert [r.track_id for r in ds.gallery] == [
        "0002_c002_00030600_0",
        "0002_c003_00030610_0",
        None,  # 0004_c010 is in no track
        "0004_c020_00040010_0",
    ]
    # the queries are copies of test images: they share their tracks
    assert [r.track_id for r in ds.query] == [
        "0002_c002_00030600_0",
        "0004_c020_00040010_0",
    ]
    assert all(r.track_id is None for r in ds.train)
    assert ds.problems == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("t1 0002_c002_00030600_0.jpg 0002_c003_00030610_0.jpg\n",
         r"test_track.txt:1: track 't1' spans two cameras: 0002_c003_00030610_0.jpg"),
        ("x\nt1 0004_c010_00040000_0.jpg 0002_c002_00030600_0.jpg\n",
         r"test_track.txt:2: track 't1' spans two vehicles: 0002_c002_00030600_0.jpg"),
    ],
    ids=["two_cameras", "two_vehicles"],
)  # fmt: skip
def test_veri776_bad_track_is_one_line(tmp_path, veri776_release, text, message):
    root = veri776_release.make(tmp_path)
    _veri_tracks(root, text)
    with pytest.raises(DataError, match=message):
        read_veri776(root, ["color"])
    lenient = read_veri776(root, ["color"], strict=False)
    assert len(lenient.problems) == 1


def _hashes(folder) -> dict:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(
                    fh.read()
                ).hexdigest()
    return out


TINY = dict(ids=5, test_ids=2, cameras=2, images_per_id=3, image_size=32)


def test_synthetic_defaults_are_byte_identical_to_tracks_off(tmp_path):
    generate(str(tmp_path / "default"), **TINY)
    generate(str(tmp_path / "off"), track_length=1, **TINY)
    default = _hashes(tmp_path / "default")
    assert default == _hashes(tmp_path / "off")
    assert len(default) == 5 * 3 + 4  # images, manifest, two class files, synth.yaml
    with open(tmp_path / "default" / "manifest.csv") as fh:
        assert fh.readline() == "path,vehicle_id,camera_id,split,color,type\n"


def test_synthetic_tracks_are_consecutive_crops_of_one_camera(tmp_path):
    root = generate(str(tmp_path / "tracks"), track_length=3, **TINY)
    ds = read_folder(root, ["color", "type"])
    records = ds.train + ds.query + ds.gallery
    assert len(records) == 5 * 3 * 3
    by_track: dict[str, list[Record]] = {}
    for r in records:
        by_track.setdefault(r.track_id, []).append(r)
    assert len(by_track) == 5 * 3
    for crops in by_track.values():
        assert len(crops) == 3
        assert len({(r.pid, r.camid, r.split) for r in crops}) == 1
        assert [r.time - crops[0].time for r in crops] == [0, 1, 2]
        sides = [Image.open(r.path).size[0] for r in crops]
        assert sides == sorted(sides) and sides[-1] == 32 and sides[0] < 32
        first, last = (
            np.asarray(Image.open(r.path).resize((32, 32)), float)
            for r in (crops[0], crops[-1])
        )
        assert 0 < np.abs(first - last).mean() < 40  # the same scene, changed a little
    assert check(root, verify_images=False)["ok"]


def test_synthetic_track_times_follow_a_road():
    """A vehicle passes its cameras in road order at one speed (30-70 km/h), its
    r-th track of a camera on pass r, an hour after pass r - 1; it enters within
    TRACK_ENTRY_S of TRACK_START."""
    from anet_tf.data.synthetic.writer import TRACK_ENTRY_S
    from anet_tf.data.synthetic.writer import TRACK_LAP_S
    from anet_tf.data.synthetic.writer import TRACK_START
    from anet_tf.data.synthetic.writer import road_positions
    from anet_tf.data.synthetic.writer import track_times

    road = np.asarray([0.0, 1.0, 2.0, 4.0])
    cams = [3, 1, 3, 2, 1, 2]
    directions = set()
    for seed in range(8):
        t = dict(zip(range(6), track_times(cams, road, np.random.default_rng(seed))))
        for a, b in ((0, 2), (1, 4), (3, 5)):  # (pass 0, pass 1) of cameras 3, 1, 2
            assert t[b] - t[a] == TRACK_LAP_S
        first = {3: t[0], 1: t[1], 2: t[3]}  # pass 0
        assert TRACK_START <= min(first.values()) <= TRACK_START + TRACK_ENTRY_S + 1
        per_km = (first[3] - first[1]) / 2.0  # seconds per km, signed
        assert 3600 / 70 - 1 <= abs(per_km) <= 3600 / 30 + 1
        assert abs(first[2] - first[1] - per_km) <= 1  # camera 2 halfway, in order
        directions.add(per_km > 0)
    assert directions == {True, False}  # up and down the road
    np.testing.assert_allclose(np.diff(road_positions(0, 6)), np.clip(
        np.diff(road_positions(0, 6)), 0.5, 1.5))  # fmt: skip


# ------------------------------------------------------------------ aggregation


def test_aggregation_by_hand():
    groups = track_groups(["a", None, "b", "a", "", "b"])
    assert [g.tolist() for g in groups] == [[0, 3], [1], [2, 5], [4]]
    x = np.array([[3.0, 4], [0, 2], [1, 0], [0, 5], [1, 1], [0, 1]])
    mean = aggregate_features(x, groups)
    expected_a = np.array([0.6, 0.8]) + np.array([0.0, 1.0])
    np.testing.assert_allclose(
        mean[0], expected_a / np.linalg.norm(expected_a), rtol=1e-6
    )
    np.testing.assert_allclose(mean[1], [0, 1], rtol=1e-6)
    np.testing.assert_allclose(mean[2], np.array([1, 1]) / np.sqrt(2), rtol=1e-6)
    weighted = aggregate_features(x, groups, weights=np.array([3.0, 1, 1, 1, 1, 1]))
    expected_w = 3 * np.array([0.6, 0.8]) + np.array([0.0, 1.0])
    np.testing.assert_allclose(
        weighted[0], expected_w / np.linalg.norm(expected_w), rtol=1e-6
    )
    probs = aggregate_probs(
        np.array([[1, 0], [0.5, 0.5], [0, 1], [0, 1], [1, 0], [1, 0]]), groups
    )
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [1, 0]])


# -------------------------------------------------------------------- protocols


def _reference(qf, q_pid, q_cam, gf, g_pid, g_cam, max_rank=5):
    """Plain ranking: cosine distance, stable sort, junk = same id and camera."""
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    aps, inps, cmcs = [], [], []
    for i in range(len(qf)):
        order = np.argsort(1 - gf @ qf[i], kind="stable")
        keep = [j for j in order if not (g_pid[j] == q_pid[i] and g_cam[j] == q_cam[i])]
        hits = np.array([g_pid[j] == q_pid[i] for j in keep])
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits)
        aps.append(np.mean([(k + 1) / (r + 1) for k, r in enumerate(ranks)]))
        inps.append(len(ranks) / (ranks[-1] + 1))
        cmcs.append([float(ranks[0] < k) for k in range(1, max_rank + 1)])
    return np.mean(aps), np.mean(inps), np.mean(cmcs, axis=0)


def _mean(features, rows):
    x = features[rows] / np.linalg.norm(features[rows], axis=1, keepdims=True)
    return x.mean(axis=0)


@pytest.fixture()
def hand_made():
    """Vehicles 1-3 in cameras 1-3; gallery tracks of 1-3 crops, one crop without
    a track; query tracks of their own and one query that is in a gallery track."""

    def mk(pid, cam, split, track):
        return Record(f"{split}{pid}{cam}{track}", pid, cam, (), split, track)

    gallery = [
        mk(1, 1, "gallery", "A"), mk(1, 1, "gallery", "A"), mk(1, 2, "gallery", "B"),
        mk(2, 2, "gallery", "C"), mk(2, 2, "gallery", "C"), mk(2, 2, "gallery", "C"),
        mk(2, 3, "gallery", "D"), mk(3, 3, "gallery", "E"), mk(3, 1, "gallery", None),
        mk(1, 3, "gallery", "F"), mk(1, 3, "gallery", "F"),
    ]  # fmt: skip
    query = [
        mk(1, 1, "query", "qa"), mk(1, 1, "query", "qa"), mk(2, 3, "query", "qb"),
        mk(3, 1, "query", "qc"), mk(2, 2, "query", "C"),
    ]  # fmt: skip
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 6))
    qf = np.stack([centres[r.pid] + rng.normal(scale=1.2, size=6) for r in query])
    gf = np.stack([centres[r.pid] + rng.normal(scale=1.2, size=6) for r in gallery])
    return qf, gf, query, gallery


def _ids(records):
    return np.array([r.pid for r in records]), np.array([r.camid for r in records])


def test_image_to_track_is_plain_numpy(hand_made):
    qf, gf, query, gallery = hand_made
    tracks = {
        "A": [0, 1],
        "B": [2],
        "C": [3, 4, 5],
        "D": [6],
        "E": [7],
        None: [8],
        "F": [9, 10],
    }
    items = list(tracks.values())
    tf = np.stack([_mean(gf, rows) for rows in items])
    t_pid = np.array([gallery[rows[0]].pid for rows in items])
    t_cam = np.array([gallery[rows[0]].camid for rows in items])
    mAP, mINP, cmc = _reference(qf, *_ids(query), tf, t_pid, t_cam)
    got = PROTOCOL_FUNCTIONS["image_to_track"](qf, gf, query, gallery, max_rank=5)
    assert (got["num_query"], got["num_gallery"]) == (5, 7)
    assert got["mAP"] == pytest.approx(mAP, abs=1e-6)
    assert got["mINP"] == pytest.approx(mINP, abs=1e-6)
    np.testing.assert_allclose(got["cmc"], cmc, atol=1e-6)


def test_track_to_track_is_plain_numpy(hand_made):
    qf, gf, query, gallery = hand_made
    g_tracks = [[0, 1], [2], [3, 4, 5], [6], [7], [8], [9, 10]]
    gt = np.stack([_mean(gf, rows) for rows in g_tracks])
    g_pid = np.array([gallery[r[0]].pid for r in g_tracks])
    g_cam = np.array([gallery[r[0]].camid for r in g_tracks])
    # qa, qb, qc from their query crops; C from the gallery's crops of track C
    qt = np.stack(
        [_mean(qf, [0, 1]), _mean(qf, [2]), _mean(qf, [3]), _mean(gf, [3, 4, 5])]
    )
    mAP, mINP, cmc = _reference(
        qt, np.array([1, 2, 3, 2]), np.array([1, 3, 1, 2]), gt, g_pid, g_cam
    )
    got = PROTOCOL_FUNCTIONS["track_to_track"](qf, gf, query, gallery, max_rank=5)
    assert (got["num_query"], got["num_gallery"]) == (4, 7)
    assert got["mAP"] == pytest.approx(mAP, abs=1e-6)
    assert got["mINP"] == pytest.approx(mINP, abs=1e-6)
    np.testing.assert_allclose(got["cmc"], cmc, atol=1e-6)


def test_track_average_is_plain_numpy(hand_made):
    qf, gf, query, gallery = hand_made
    g_tracks = [[0, 1], [2], [3, 4, 5], [6], [7], [8], [9, 10]]
    averaged = np.empty_like(gf)
    for rows in g_tracks:
        averaged[rows] = _mean(gf, rows)
    mAP, mINP, cmc = _reference(qf, *_ids(query), averaged, *_ids(gallery))
    got = PROTOCOL_FUNCTIONS["track_average"](qf, gf, query, gallery, max_rank=5)
    assert (got["num_query"], got["num_gallery"]) == (5, 11)
    assert got["mAP"] == pytest.approx(mAP, abs=1e-6)
    assert got["mINP"] == pytest.approx(mINP, abs=1e-6)
    np.testing.assert_allclose(got["cmc"], cmc, atol=1e-6)


def test_track_protocols_by_name_and_config(hand_made):
    qf, gf, query, gallery = hand_made
    assert tuple(PROTOCOL_FUNCTIONS) == TRACK_PROTOCOLS
    got = track_protocols(["track_average", "image_to_track"], qf, gf, query, gallery)
    assert list(got) == ["track_average", "image_to_track"]
    with pytest.raises(
        KeyError, match="unknown track protocol 'x'; valid: image_to_track"
    ):
        track_protocols(["x"], qf, gf, query, gallery)
    assert load_config("synthetic").eval.tracks == list(TRACK_PROTOCOLS)
    with pytest.raises(
        ConfigError, match="eval.tracks: unknown track protocol 'tracks'"
    ):
        load_config("synthetic", ["eval.tracks=[tracks]"])


def test_evaluate_reports_the_track_protocols_when_the_data_has_tracks(tmp_path):
    from anet_tf.config import apply_overrides
    from anet_tf.evaluation.extract import evaluate_embedder
    from anet_tf.evaluation.extract import format_results

    root = generate(str(tmp_path / "d"), track_length=2, **TINY)
    cfg = load_config(
        "synthetic",
        [f"data.root={root}", "data.image_size=[32, 32]", "data.batch_size=8"],
    )
    ds = read_folder(root, ["color", "type"])
    ds.name = "synthetic"

    def embed(images):  # mean colour of four quadrants: a fixed, cheap feature
        x = np.asarray(images)
        return np.concatenate(
            [x[:, :16, :16].mean((1, 2)), x[:, 16:, :16].mean((1, 2)),
             x[:, :16, 16:].mean((1, 2)), x[:, 16:, 16:].mean((1, 2))], axis=1
        )  # fmt: skip

    metrics = evaluate_embedder(embed, ds, cfg)
    assert list(metrics["tracks"]) == list(TRACK_PROTOCOLS)
    assert metrics["tracks"]["track_average"]["num_gallery"] == len(ds.gallery)
    assert "| image_to_track |" in format_results(metrics, "synthetic")
    off = evaluate_embedder(embed, ds, apply_overrides(cfg, ["eval.tracks=[]"]))
    assert "tracks" not in off and off["mAP"] == metrics["mAP"]


# ------------------------------------------------------------------- embeddings


def test_embed_per_track_writes_one_row_per_track(
    search_assets, tmp_path, write_images
):
    paths = write_images(tmp_path / "images", 5, seed=4)
    rel = [os.path.relpath(p, tmp_path) for p in paths]
    (tmp_path / "list.csv").write_text(
        "path,vehicle_id,camera_id,time,track_id\n"
        f"{rel[0]},7,1,100,t1\n{rel[1]},7,1,101,t1\n{rel[2]},7,1,105,t1\n"
        f"{rel[3]},8,2,200,t2\n{rel[4]},8,2,,\n"
    )
    images, tracks = tmp_path / "i.npz", tmp_path / "t.npz"
    for out, extra in ((images, []), (tracks, ["--per-track"])):
        args = ["embed", str(tmp_path / "list.csv"), "--model", search_assets.model]
        assert main([*args, "-o", str(out), "--quiet", *extra]) == 0
    per_image, per_track = load_embeddings(str(images)), load_embeddings(str(tracks))
    assert per_image.track_ids.tolist() == ["t1", "t1", "t1", "t2", ""]
    assert per_track.track_ids.tolist() == ["t1", "t2", ""]
    assert per_track.track_lengths.tolist() == [3, 1, 1]
    assert per_track.times.tolist() == [100, 200, -1]
    assert per_track.times_last.tolist() == [105, 200, -1]
    assert per_track.camids.tolist() == [1, 2, 2] and per_track.paths[0] == paths[0]
    expected = per_image.embedding[:3].mean(axis=0)
    np.testing.assert_allclose(
        per_track.embedding[0], expected / np.linalg.norm(expected), atol=1e-5
    )
    for name in per_track.attribute_names:
        mean = per_image.probs[name][:3].mean(axis=0)
        np.testing.assert_allclose(per_track.probs[name][0], mean, atol=1e-6)
        classes = per_track.attribute_classes[per_track.attribute_names.index(name)]
        assert per_track.predicted[name][0] == classes[int(mean.argmax())]


def test_embed_per_track_without_track_ids_is_one_line(
    search_assets, tmp_path, capsys, write_images
):
    paths = write_images(tmp_path / "images", 2, seed=5)
    rel = [os.path.relpath(p, tmp_path) for p in paths]
    (tmp_path / "list.csv").write_text(f"path,camera_id\n{rel[0]},1\n{rel[1]},1\n")
    out = tmp_path / "o.npz"
    code = main(["embed", str(tmp_path / "list.csv"), "--model", search_assets.model,
                 "-o", str(out), "--quiet", "--per-track"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and not out.exists()
    assert err[-1].endswith("list.csv: --per-track needs track ids (a 'track_id' column in "
                            "the manifest, or a dataset with tracks); none of its 2 images has one")  # fmt: skip


def test_embeddings_format_1_files_still_read(random_embeddings, tmp_path):
    emb = random_embeddings(3, 4)
    emb.track_ids = np.array(["a", "a", "b"])
    new = save_embeddings(emb, str(tmp_path / "new.npz"))
    back = load_embeddings(new)
    assert back.track_ids.tolist() == [
        "a",
        "a",
        "b",
    ] and back.track_lengths.tolist() == [1, 1, 1]
    old = tmp_path / "old.npz"  # the same file as version 1 wrote it
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.namelist():
            if item in ("track_id.npy", "track_length.npy", "time_last.npy"):
                continue
            data = src.read(item)
            if item == "format.npy":
                with open(tmp_path / "f.npy", "wb") as fh:
                    np.save(fh, np.asarray("anet-tf-embeddings/1"))
                data = (tmp_path / "f.npy").read_bytes()
            dst.writestr(item, data)
    legacy = load_embeddings(str(old))
    assert legacy.track_ids.tolist() == ["", "", ""]
    assert legacy.track_lengths.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(legacy.times_last, legacy.times)
    np.testing.assert_array_equal(legacy.embedding, back.embedding)


def test_settings_without_track_length_match_the_default(tmp_path, capsys):
    from anet_tf.jobs.fit_evaluate_export import ensure_synthetic

    root = generate(str(tmp_path / "d"), **TINY)  # synth.yaml has no track_length
    synth = "{" + ", ".join(f"{k}: {v}" for k, v in TINY.items()) + "}"
    ensure_synthetic(
        load_config("synthetic", [f"data.root={root}", f"data.synth={synth}"])
    )
    assert "other settings" not in capsys.readouterr().out
    cfg = load_config(
        "synthetic",
        [f"data.root={root}", f"data.synth={synth}", "data.synth.track_length=3"],
    )
    ensure_synthetic(cfg)
    assert "other settings than data.synth (track_length)" in capsys.readouterr().out
