"""Galleries of tracks: `index build` / `index add` / `search` on files of
`anet-tf embed --per-track`, on faiss and a real Milvus Lite collection. A search
returns each track with its camera, first and last time, length and id; a time
window keeps the tracks whose span overlaps it; images and tracks never share a
gallery; image galleries (no track fields) read as before; bad input is one line
with nothing written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_search_gallery import one_error_line

from anet_tf.cli import main
from anet_tf.search.embed import per_track
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import gallery_rows
from anet_tf.search.gallery import holds_tracks
from anet_tf.search.index import build_index
from anet_tf.search.index import load_index
from anet_tf.search.sources import parse_time

pytest.importorskip("faiss", reason="search needs faiss: pip install -e '.[search]'")

DIM = 16
T0 = parse_time("2026-12-03T08:00:00Z")


def crops_of_tracks(random_embeddings, tracks: int, seed: int, prefix: str):
    """Crops of ``tracks`` tracks of 1-8 crops each (a second apart), a track
    every 20 s, each track one camera's; the last track's times unknown."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, tracks)
    emb = random_embeddings(int(lengths.sum()), DIM, seed=seed)
    owner = np.repeat(np.arange(tracks), lengths)
    step = np.concatenate([np.arange(n) for n in lengths])
    emb.track_ids = np.asarray([f"{prefix}{t:03d}" for t in owner], dtype=str)
    emb.camids = rng.integers(0, 4, tracks)[owner].astype(np.int64)
    emb.times = np.where(owner == tracks - 1, -1, T0 + 20 * owner + step)
    emb.times_last = emb.times.copy()
    emb.paths = [f"/{prefix}/{t:03d}_{s:02d}.jpg" for t, s in zip(owner, step)]
    return emb


@pytest.fixture(scope="module")
def tracks(random_embeddings):
    """40 tracks (per_track of their crops): spans of 1-8 s, 20 s apart."""
    return per_track(crops_of_tracks(random_embeddings, 40, seed=3, prefix="a"))


@pytest.fixture(scope="module")
def files(tracks, random_embeddings, tmp_path_factory):
    root = tmp_path_factory.mktemp("track_gallery")
    out = {"root": root}
    more = per_track(crops_of_tracks(random_embeddings, 6, seed=4, prefix="b"))
    crops = crops_of_tracks(random_embeddings, 5, seed=5, prefix="c")
    queries = random_embeddings(4, DIM, seed=6)
    images = random_embeddings(12, DIM, seed=7)
    backwards = per_track(crops_of_tracks(random_embeddings, 3, seed=8, prefix="d"))
    backwards.times_last = backwards.times_last.copy()
    backwards.times_last[1] = backwards.times[1] - 5
    for name, emb in (
        ("tracks", tracks),
        ("more", more),
        ("crops", crops),
        ("queries", queries),
        ("images", images),
        ("backwards", backwards),
    ):
        out[name] = str(root / f"{name}.npz")
        save_embeddings(emb, out[name])
    out["index"] = str(root / "tracks.index")
    out["image.index"] = str(root / "images.index")
    assert main(["index", "build", out["tracks"], "-o", out["index"]]) == 0
    assert main(["index", "build", out["images"], "-o", out["image.index"]]) == 0
    return out


@pytest.fixture(scope="module")
def milvus(files):
    pytest.importorskip("pymilvus", reason="pip install -e '.[search-milvus]'")
    pytest.importorskip("milvus_lite", reason="pip install -e '.[search-milvus]'")
    from anet_tf.search.targets import open_gallery

    db = str(files["root"] / "gallery.db")
    assert main(["index", "build", files["tracks"], "-o", db]) == 0
    assert (
        main(["index", "build", files["images"], "-o", db, "--collection", "images"])
        == 0
    )
    gallery = open_gallery(db)
    yield db, gallery
    gallery.close()


def test_a_file_of_tracks_is_one_row_per_track(tracks, files, random_embeddings):
    from anet_tf.search.embeddings import load_embeddings

    assert holds_tracks(tracks) and len(tracks) == 40
    assert not holds_tracks(load_embeddings(files["crops"]))  # crops share ids
    assert not holds_tracks(random_embeddings(3, DIM))  # no track ids
    rows = gallery_rows([tracks])
    assert rows.tracks
    assert rows.columns["track_id"][5].decode() == "a005"
    np.testing.assert_array_equal(rows.columns["time_last"], tracks.times_last)
    np.testing.assert_array_equal(rows.columns["track_length"], tracks.track_lengths)
    assert not gallery_rows([random_embeddings(3, DIM)]).tracks


def test_faiss_search_returns_tracks_with_their_fields(files, tracks):
    index = load_index(files["index"])
    assert index.holds_tracks and index.meta["rows"] == "tracks"
    scores, ids = index.search(tracks.embedding[[7, 20]], 3)
    (first, *_), (second, *_) = index.matches(scores, ids)
    assert (first.id, second.id) == (7, 20)  # each track finds itself
    assert first.track_id == "a007" and first.camid == int(tracks.camids[7])
    assert (first.time, first.time_last) == (
        T0 + 140,
        T0 + 140 + first.track_length - 1,
    )
    assert first.track_length == int(tracks.track_lengths[7]) >= 1
    assert first.path == "/a/007_00.jpg"  # the track's first crop
    d = first.to_dict()
    assert (d["track_id"], d["time_last"], d["track_length"]) == (
        "a007",
        first.time_last,
        first.track_length,
    )


def test_a_time_window_keeps_the_tracks_that_overlap_it(files, tracks):
    index = load_index(files["index"])
    first, last = tracks.times, tracks.times_last
    # a track of 2+ crops: a window from its second second keeps it (overlap)
    t = int(np.flatnonzero(tracks.track_lengths >= 2)[0])
    since, until = int(first[t]) + 1, int(first[t]) + 30
    mask = index.filter_mask({}, since=since, until=until)
    assert mask[t]
    want = (first >= 0) & (first < until) & (last >= since)
    np.testing.assert_array_equal(mask, want)
    assert mask.sum() < len(tracks) - 1
    # the track of unknown times never matches a window
    assert not index.filter_mask({}, until=T0 + 10**6)[len(tracks) - 1]
    only_until = index.filter_mask({}, until=T0 + 100)
    np.testing.assert_array_equal(only_until, (first >= 0) & (first < T0 + 100))
    _, ids = index.search(tracks.embedding[[t]], 40, since=since, until=until)
    assert set(ids[0][ids[0] >= 0].tolist()) == set(np.flatnonzero(want).tolist())


def test_an_image_gallery_reads_as_before(files, random_embeddings):
    index = load_index(files["image.index"])
    assert not index.holds_tracks and "rows" not in index.meta
    assert not {"track_id", "time_last", "track_length"} & set(index.items)
    scores, ids = index.search(random_embeddings(12, DIM, seed=7).embedding[:1], 1)
    (match,) = index.matches(scores, ids)[0]
    assert match.track_id is None and "track_id" not in match.to_dict()


def test_cli_search_shows_the_track_fields(files, capsys):
    capsys.readouterr()
    search = ["search", "--index", files["index"], "--query-embeddings"]
    assert main([*search, files["tracks"], "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == "tracks"
    top = out["results"][3]["matches"][0]
    assert top["track_id"] == "a003" and top["time"] == T0 + 60
    assert top["time_last"] == top["time"] + top["track_length"] - 1
    assert main([*search, files["queries"], "-k", "2"]) == 0
    table = capsys.readouterr().out
    head = next(line for line in table.splitlines() if "rank" in line)
    assert head.split()[-6:] == ["cam", "track", "first", "last", "crops", "path"]
    assert "2026-12-03T08:" in table
    assert main(["search", "--index", files["image.index"], "--query-embeddings",
                 files["queries"], "-k", "1"]) == 0  # fmt: skip
    assert "track" not in capsys.readouterr().out


def test_adding_tracks_to_a_gallery_of_tracks(files, tmp_path):
    target = str(tmp_path / "t.index")
    assert main(["index", "build", files["tracks"], "-o", target]) == 0
    assert main(["index", "add", target, files["more"]]) == 0
    index = load_index(target)
    assert len(index) == 46 and index.holds_tracks
    assert index.row(40)["track_id"].decode() == "b000"
    assert index.match(45, 1, 1.0).track_id == "b005"


def test_images_and_tracks_never_share_a_gallery(files, capsys):
    def written():  # (a writer's lock file stays beside its target: not output)
        return sorted(e for e in os.listdir(files["root"]) if not e.endswith(".lock"))

    capsys.readouterr()
    before = written()
    for args, says in (
        (
            ["index", "build", files["tracks"], files["images"], "-o",
             str(files["root"] / "mixed.index")],
            f"{files['images']}: a file of images (one row per image), but "
            f"{files['tracks']} holds tracks; a gallery holds images or tracks, not both",
        ),
        (
            ["index", "build", files["crops"], files["tracks"], "-o",
             str(files["root"] / "mixed.index")],
            f"{files['tracks']}: a file of tracks (one row per track (anet-tf embed "
            f"--per-track)), but {files['crops']} holds images",
        ),
        (
            ["index", "add", files["index"], files["images"]],
            f"but the index {files['index']} holds tracks",
        ),
        (
            ["index", "add", files["image.index"], files["more"]],
            f"a file of tracks (one row per track (anet-tf embed --per-track)), but "
            f"the index {files['image.index']} holds images",
        ),
        (
            ["index", "build", files["backwards"], "-o",
             str(files["root"] / "bad.index")],
            f"{files['backwards']}: row 1 (track 'd001', time ",
        ),
    ):  # fmt: skip
        assert main(args) == 1, args
        assert says in one_error_line(capsys), args
    assert written() == before
    assert len(load_index(files["index"])) == 40
    assert len(load_index(files["image.index"])) == 12


def test_rows_kind_is_checked_before_anything_is_written(tracks, random_embeddings):
    with pytest.raises(SearchError, match="holds tracks"):
        build_index([tracks, random_embeddings(3, DIM)])


# --------------------------------------------------------------------- Milvus


def test_milvus_answers_as_faiss_with_the_track_fields(milvus, files, tracks):
    from anet_tf.search.milvus import selection_expression

    _, collection = milvus
    index = load_index(files["index"])
    assert collection.holds_tracks
    queries = tracks.embedding[[2, 11, 30]]
    t = int(tracks.times[11])
    for filters in (
        {},
        dict(since=t + 1, until=t + 45),
        dict(until=T0 + 200),
        dict(since=t, cameras="0-2"),
    ):
        s1, i1 = index.search(queries, 8, **filters)
        s2, i2 = collection.search(queries, 8, **filters)
        np.testing.assert_array_equal(i1, i2, err_msg=str(filters))
        np.testing.assert_allclose(s1, s2, atol=1e-5)
        for a, b in zip(index.matches(s1, i1), collection.matches(s2, i2), strict=True):
            assert [m.to_dict() for m in a] == [
                dict(m.to_dict(), score=round(float(s), 6))
                for m, s in zip(b, [x.score for x in a], strict=True)
            ]
    client, name = collection.client, collection._name
    kinds = {
        client.describe_index(name, n)["field_name"]: client.describe_index(name, n)[
            "index_type"
        ]
        for n in client.list_indexes(name)
    }
    assert kinds["time_last"] == kinds["time"] == "INVERTED"
    chosen = collection.selection({}, since=T0, until=T0 + 60)
    assert selection_expression(chosen) == (
        f"time >= 0 and time_last >= {T0} and time < {T0 + 60}"
    )


def test_milvus_mixing_is_refused_and_tracks_are_added(milvus, files, capsys):
    db, collection = milvus
    collection.close()  # the CLI opens the database itself
    capsys.readouterr()
    for args, says in (
        (["index", "add", db, files["images"]], "holds tracks; a gallery holds"),
        (
            ["index", "add", db, files["more"], "--collection", "images"],
            "a file of tracks (one row per track (anet-tf embed --per-track)), but "
            "the collection",
        ),
    ):
        assert main(args) == 1, args
        assert says in one_error_line(capsys), args
    assert main(["index", "add", db, files["more"]]) == 0
    capsys.readouterr()
    assert main(["search", "--index", db, "--query-embeddings", files["more"],
                 "-k", "1", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    found = [r["matches"][0] for r in out["results"]]
    assert [m["track_id"] for m in found] == [f"b{i:03d}" for i in range(6)]
    assert [m["id"] for m in found] == list(range(40, 46))
