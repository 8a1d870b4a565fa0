"""Camera and capture-time filters in search, on faiss (flat, IVF, HNSW) and a real
Milvus Lite collection: cameras kept and left out, the time window [since, until),
unknown cameras and times never matching, combined with attribute filters, each
query's own camera left out; a small selection searched exactly over its own
vectors answers as the index with a selector; bad input is one line through the
CLI, with nothing written."""

from __future__ import annotations

import datetime
import json
import os
import re

import numpy as np
import pytest
from test_search_gallery import one_error_line

from anet_tf.cli import main
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import parse_cameras
from anet_tf.search.gallery import parse_where
from anet_tf.search.index import build_index
from anet_tf.search.sources import parse_time

pytest.importorskip("faiss", reason="search needs faiss: pip install -e '.[search]'")

DIM = 16
N = 240
T0 = parse_time("2026-12-03T08:00:00Z")


@pytest.fixture(scope="module")
def gallery(random_embeddings):
    """240 items, cameras 0-4 (every 11th unknown), one a minute from T0 (every
    7th unknown)."""
    emb = random_embeddings(N, DIM, seed=7)
    emb.camids = np.where(np.arange(N) % 11 == 0, -1, emb.camids)
    emb.times = np.where(np.arange(N) % 7 == 0, -1, T0 + np.arange(N) * 60)
    return emb


@pytest.fixture(scope="module")
def queries(random_embeddings):
    q = random_embeddings(6, DIM, seed=8)
    q.camids = np.asarray([1, 2, -1, 1, 3, 0], np.int64)
    return q


@pytest.fixture(scope="module")
def flat(gallery):
    return build_index([gallery])


def exact_top(gallery, queries, mask, k):
    """The exact top-k ids among ``mask`` (NumPy), -1 padded."""
    s = queries @ gallery.embedding.T
    s = np.where(mask[None, :], s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(s, order, 1) > -np.inf, order, -1)


def test_cameras_kept_and_left_out(flat, gallery, queries):
    cam = gallery.camids
    _, ids = flat.search(queries.embedding, 10, cameras="1,3")
    np.testing.assert_array_equal(
        ids, exact_top(gallery, queries.embedding, np.isin(cam, [1, 3]), 10)
    )
    _, ranged = flat.search(queries.embedding, 10, cameras=["1-2", 3])
    np.testing.assert_array_equal(
        ranged, exact_top(gallery, queries.embedding, np.isin(cam, [1, 2, 3]), 10)
    )
    # left out: those cameras and the unknown ones
    _, ids = flat.search(queries.embedding, 10, not_cameras=[0, 4])
    keep = (cam >= 0) & ~np.isin(cam, [0, 4])
    np.testing.assert_array_equal(ids, exact_top(gallery, queries.embedding, keep, 10))
    # both: kept less left out
    mask = flat.filter_mask({}, cameras="1-3", not_cameras=2)
    np.testing.assert_array_equal(mask, np.isin(cam, [1, 3]))
    # a camera the gallery does not have matches nothing (no error)
    _, none = flat.search(queries.embedding, 3, cameras=99)
    assert (none == -1).all()
    assert parse_cameras("7, 3-5") == (3, 4, 5, 7) and parse_cameras(None) is None


def test_time_window_is_since_inclusive_until_exclusive(flat, gallery):
    t = gallery.times
    since, until = int(t[10]), int(t[20])
    mask = flat.filter_mask({}, since=since, until=until)
    assert mask[10] and not mask[20] and not mask[14]  # 14: unknown time
    np.testing.assert_array_equal(mask, (t >= since) & (t < until))
    # ISO 8601 text (UTC without an offset) and seconds mean the same
    iso = flat.filter_mask(
        {}, since="2026-12-03T08:10:00", until="2026-12-03 09:20:00+01:00"
    )
    np.testing.assert_array_equal(iso, mask)
    # the boundary items are found by their own vectors
    _, ids = flat.search(gallery.embedding[[10, 20]], 1, since=since, until=until)
    assert ids[0, 0] == 10 and ids[1, 0] != 20
    only_since = flat.filter_mask({}, since=since)
    np.testing.assert_array_equal(only_since, t >= since)
    only_until = flat.filter_mask({}, until=until)
    np.testing.assert_array_equal(only_until, (t >= 0) & (t < until))


def test_unknown_camera_or_time_never_matches(flat, gallery):
    unknown_cam = gallery.camids < 0
    unknown_time = gallery.times < 0
    assert unknown_cam.any() and unknown_time.any()
    assert not flat.filter_mask({}, not_cameras=[4])[unknown_cam].any()
    assert not flat.filter_mask({}, since=-(10**9))[unknown_time].any()
    assert not flat.filter_mask({}, until=T0 + 10**6)[unknown_time].any()
    assert not flat.filter_mask({}, cameras="0-4")[unknown_cam].any()


def test_camera_and_time_combine_with_attribute_filters(flat, gallery, queries):
    where = parse_where("color=red|white")
    since, until = T0 + 30 * 60, T0 + 200 * 60
    mask = flat.filter_mask(
        where, cameras="0-2", not_cameras="1", since=since, until=until
    )
    want = (
        np.isin(gallery.predicted["color"], ["red", "white"])
        & np.isin(gallery.camids, [0, 2])
        & (gallery.times >= since)
        & (gallery.times < until)
    )
    np.testing.assert_array_equal(mask, want)
    _, ids = flat.search(
        queries.embedding,
        5,
        where=where,
        cameras="0-2",
        not_cameras="1",
        since=since,
        until=until,
    )
    np.testing.assert_array_equal(ids, exact_top(gallery, queries.embedding, want, 5))
    # known labels: the filter runs on the known colour
    known = flat.filter_mask({"color": ["blue"]}, "known", cameras=[3])
    np.testing.assert_array_equal(
        known, (gallery.known["color"] == "blue") & (gallery.camids == 3)
    )


def test_the_query_camera_is_left_out(flat, gallery, queries):
    _, ids = flat.search(queries.embedding, 8, query_cameras=queries.camids, since=T0)
    for row, camid in zip(ids, queries.camids, strict=True):
        keep = gallery.times >= T0
        if camid >= 0:
            keep &= (gallery.camids >= 0) & (gallery.camids != camid)
        found = row[row >= 0]
        assert len(found) == 8 and keep[found].all()
    # the query of unknown camera (row 2) is searched without a camera condition
    _, plain = flat.search(queries.embedding[2:3], 8, since=T0)
    np.testing.assert_array_equal(ids[2], plain[0])
    # only one camera kept, the query's own: nothing left for that query
    _, own = flat.search(
        queries.embedding, 3, cameras=[1], query_cameras=queries.camids
    )
    assert (own[[0, 3]] == -1).all() and (own[1] >= 0).all()
    with pytest.raises(SearchError, match="2 camera ids for 6 queries"):
        flat.search(queries.embedding, 3, query_cameras=[1, 2])


def test_exact_search_over_a_small_selection_answers_as_the_selector(gallery, queries):
    """The brute-force path (selection <= exact_max) against the index searched
    with a faiss IDSelectorBitmap (exact_max 0), on flat and on IVF probing every
    list (exact too), with excluded ids as well."""
    where = parse_where("type=suv")
    filters = dict(where=where, cameras="0-3", since=T0 + 600)
    excluded = [np.asarray([int(i)]) for i in range(len(queries.embedding))]
    for kind, params in (("flat", {}), ("ivf", {"nlist": 4, "nprobe": 4})):
        index = build_index([gallery], kind=kind, **params)
        s1, i1 = index.search(queries.embedding, 7, **filters)
        e1 = index.search(queries.embedding, 7, **filters, exclude=excluded)
        chosen = index.selection(where, cameras="0-3", since=T0 + 600)
        assert index._selections[chosen]._exact is not None  # the brute-force path
        index.exact_max = 0
        s2, i2 = index.search(queries.embedding, 7, **filters)
        e2 = index.search(queries.embedding, 7, **filters, exclude=excluded)
        assert index._selections[chosen]._selector is not None
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, atol=1e-6)
        np.testing.assert_array_equal(e1[1], e2[1])
        mask = index.filter_mask(where, cameras="0-3", since=T0 + 600)
        np.testing.assert_array_equal(
            i1, exact_top(gallery, queries.embedding, mask, 7)
        )
        # more asked than kept: the rows end in -1 on both paths
        k = int(mask.sum()) + 2
        index.exact_max = 10**6
        _, wide = index.search(queries.embedding, k, **filters)
        assert (wide[:, -2:] == -1).all() and (wide[:, :-2] >= 0).all()


def test_kinds_answer_alike_with_camera_and_time(gallery, queries, flat):
    filters = dict(
        where=parse_where("color=blue"), not_cameras=[2], until=T0 + 150 * 60
    )
    want = flat.search(queries.embedding, 6, **filters, query_cameras=queries.camids)
    for kind, params in (
        ("ivf", {"nlist": 4, "nprobe": 4}),
        ("hnsw", {}),
    ):
        index = build_index([gallery], kind=kind, **params)
        for exact_max in (index.exact_max, 0):
            index.exact_max = exact_max
            index.forget_selections()
            got = index.search(
                queries.embedding, 6, **filters, query_cameras=queries.camids
            )
            np.testing.assert_array_equal(got[1], want[1], err_msg=kind)


# ------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def files(gallery, queries, random_embeddings, tmp_path_factory):
    root = tmp_path_factory.mktemp("camera_time")
    bare = random_embeddings(50, DIM, seed=9)
    bare.camids = np.full(50, -1, np.int64)  # no camera, no time recorded
    no_cam_queries = random_embeddings(3, DIM, seed=10)
    no_cam_queries.camids = np.full(3, -1, np.int64)
    out = {"root": root}
    for name, emb in (
        ("gallery", gallery),
        ("queries", queries),
        ("bare", bare),
        ("anonymous", no_cam_queries),
    ):
        out[name] = str(root / f"{name}.npz")
        save_embeddings(emb, out[name])
    for name in ("gallery", "bare"):
        out[f"{name}.index"] = str(root / f"{name}.index")
        assert main(["index", "build", out[name], "-o", out[f"{name}.index"]]) == 0
    return out


def test_cli_search_with_camera_and_time(files, gallery, capsys):
    capsys.readouterr()
    args = [
        "search",
        "--index",
        files["gallery.index"],
        "--query-embeddings",
        files["queries"],
        "-k",
        "5",
        "--where",
        "type=sedan",
        "--camera",
        "0-3",
        "--not-camera",
        "2",
        "--since",
        "2026-12-03T08:30:00Z",
        "--until",
        str(T0 + 3 * 3600),
        "--exclude-query-camera",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cameras"] == [0, 1, 2, 3] and out["not_cameras"] == [2]
    assert (out["since"], out["until"]) == (T0 + 1800, T0 + 3 * 3600)
    assert out["exclude_query_camera"] is True
    query_cams = [1, 2, -1, 1, 3, 0]
    for result, qcam in zip(out["results"], query_cams, strict=True):
        assert result["matches"]
        for m in result["matches"]:
            assert m["camid"] in (0, 1, 3) and m["camid"] != qcam
            assert T0 + 1800 <= m["time"] < T0 + 3 * 3600
            assert m["attributes"]["type"] == "sedan"


def test_cli_table_shows_the_capture_time(files, capsys):
    """The table gives each image match its capture time (UTC) where the gallery
    records one, and no time column where it records none."""
    capsys.readouterr()
    search = ["search", "--query-embeddings", files["queries"], "-k", "3"]
    window = ["--since", str(T0 + 1800), "--until", str(T0 + 3 * 3600)]
    assert main([*search, "--index", files["gallery.index"], *window]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [line for line in lines if line.strip().startswith("rank")]
    assert heads and all(" time " in h for h in heads)
    stamps = re.findall(r"  (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  ", "\n".join(lines))
    assert len(stamps) == 3 * len(heads)
    for stamp in stamps:
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert T0 + 1800 <= moment.timestamp() < T0 + 3 * 3600
    assert main([*search, "--index", files["bare.index"]]) == 0
    heads = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith("rank")
    ]
    assert heads and not any(" time " in h for h in heads)


def test_cli_bad_camera_and_time_input_is_one_line(files, capsys):
    capsys.readouterr()
    before = sorted(os.listdir(files["root"]))
    search = ["search", "--index", files["gallery.index"]]
    queries = ["--query-embeddings", files["queries"]]
    for extra, says in (
        (["--since", "noon"], "--since: 'noon' is not a time"),
        (["--until", "2026-13-01"], "--until: '2026-13-01' is not a time"),
        (
            ["--since", str(T0), "--until", "2026-12-03T08:00:00Z"],
            "is not before --until 2026-12-03T08:00:00Z: the capture-time window "
            "[since, until) is empty",
        ),
        (["--camera", "front"], "--camera 'front': 'front' is not a camera id"),
        (["--camera", "7-3"], "'7-3' is not a camera id"),
        (["--not-camera", "-1"], "--not-camera '-1': '-1' is not a camera id"),
        (
            ["--camera", "3", "--not-camera", "3"],
            "--camera 3 and --not-camera 3: no camera is left",
        ),
        (["--where", "camera=3"], "the model has no attribute 'camera'"),
    ):
        assert main([*search, *queries, *extra]) == 1, extra
        assert says in one_error_line(capsys), extra
    bare = ["search", "--index", files["bare.index"], *queries]
    for extra, says in (
        (["--camera", "1"], "--camera: the gallery"),
        (["--exclude-query-camera"], "records no camera ids"),
        (["--since", str(T0)], "--since/--until: the gallery"),
    ):
        assert main([*bare, *extra]) == 1, extra
        assert says in one_error_line(capsys), extra
    anonymous = [*search, "--query-embeddings", files["anonymous"]]
    assert main([*anonymous, "--exclude-query-camera"]) == 1
    assert "--exclude-query-camera: no query of" in one_error_line(capsys)
    assert sorted(os.listdir(files["root"])) == before


# --------------------------------------------------------------------- Milvus


@pytest.fixture(scope="module")
def milvus(files):
    pytest.importorskip("pymilvus", reason="pip install -e '.[search-milvus]'")
    pytest.importorskip("milvus_lite", reason="pip install -e '.[search-milvus]'")
    from anet_tf.search.targets import open_gallery

    db = str(files["root"] / "gallery.db")
    assert main(["index", "build", files["gallery"], "-o", db]) == 0
    assert (
        main(["index", "build", files["bare"], "-o", db, "--collection", "bare"]) == 0
    )
    gallery = open_gallery(db)
    yield db, gallery
    gallery.close()


def test_milvus_answers_as_faiss_with_camera_and_time(milvus, flat, queries):
    from anet_tf.search.milvus import selection_expression

    _, collection = milvus
    where = parse_where("color=red|blue")
    for filters in (
        dict(cameras="1,3"),
        dict(not_cameras=[0, 4]),
        dict(since=T0 + 600, until=T0 + 100 * 60),
        dict(until=T0 + 60 * 60),
        dict(where=where, cameras="0-3", not_cameras=2, since=T0 + 300),
    ):
        for qcams in (None, queries.camids):
            s1, i1 = flat.search(queries.embedding, 6, **filters, query_cameras=qcams)
            s2, i2 = collection.search(
                queries.embedding, 6, **filters, query_cameras=qcams
            )
            np.testing.assert_array_equal(i1, i2, err_msg=str(filters))
            np.testing.assert_allclose(s1, s2, atol=1e-5)
    chosen = collection.selection(where, cameras="1-2", since=T0, until=T0 + 60)
    assert selection_expression(chosen) == (
        f"color_pred in [0, 1] and camid in [1, 2] and time >= {T0} and "
        f"time < {T0 + 60}"
    )
    assert collection.filter_expression({}, not_cameras=[3]) == (
        "camid >= 0 and camid not in [3]"
    )


def test_milvus_collection_has_scalar_indexes_on_filter_fields(milvus):
    _, collection = milvus
    names = collection.client.list_indexes(collection._name)
    fields = {
        collection.client.describe_index(collection._name, n)["field_name"]: (
            collection.client.describe_index(collection._name, n)["index_type"]
        )
        for n in names
    }
    for field in ("camid", "time", "color_pred", "color_known", "type_pred"):
        assert fields[field] == "INVERTED", fields


def test_milvus_bad_camera_and_time_input_is_one_line(milvus, files, capsys):
    db, collection = milvus
    collection.close()  # the CLI opens the database itself
    capsys.readouterr()
    queries = ["--query-embeddings", files["queries"]]
    for target, extra, says in (
        ([], ["--since", "noon"], "--since: 'noon' is not a time"),
        (["--collection", "bare"], ["--camera", "2"], "--camera: the gallery"),
        (["--collection", "bare"], ["--until", str(T0)], "records no capture times"),
    ):
        assert main(["search", "--index", db, *target, *queries, *extra]) == 1
        assert says in one_error_line(capsys), extra
    assert main(["search", "--index", db, *queries, "--camera", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(m["camid"] == 1 for r in out["results"] for m in r["matches"])
