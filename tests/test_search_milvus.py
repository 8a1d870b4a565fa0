"""The Milvus backend against a real Milvus Lite database (no mocks): a collection
answers as faiss's exact index on the same rows, filtered or not; a gallery built
in parts answers like one built at once; `index add` refuses duplicates and other
models; rows are removed by camera and time; bad targets and filters are one line
with nothing written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip(
    "pymilvus",
    reason="the Milvus backend needs pymilvus: pip install -e '.[search-milvus]'",
)
pytest.importorskip(
    "milvus_lite",
    reason="a local Milvus database needs milvus-lite: pip install -e '.[search-milvus]'",
)

from test_search_gallery import one_error_line  # noqa: E402
from test_search_gallery import part  # noqa: E402

from anet_tf.cli import main  # noqa: E402
from anet_tf.search.embeddings import save_embeddings  # noqa: E402
from anet_tf.search.gallery import parse_where  # noqa: E402
from anet_tf.search.index import build_index  # noqa: E402
from anet_tf.search.milvus import META_PROPERTY  # noqa: E402
from anet_tf.search.milvus import connect  # noqa: E402
from anet_tf.search.milvus import open_collection  # noqa: E402
from anet_tf.search.targets import build_gallery  # noqa: E402
from anet_tf.search.targets import open_gallery  # noqa: E402

DIM = 16


@pytest.fixture(scope="module")
def gallery(random_embeddings):
    emb = random_embeddings(240, DIM, seed=7)
    # one odd path: quotes, a backslash and non-ASCII go through filters verbatim
    emb.paths[5] = '/gallery/o"dd\\ñame.jpg'
    emb.times = np.where(
        np.arange(240) % 7 == 0, -1, 1_800_000_000 + np.arange(240, dtype=np.int64) * 60
    )
    return emb


@pytest.fixture(scope="module")
def files(gallery, random_embeddings, tmp_path_factory):
    root = tmp_path_factory.mktemp("milvus")
    out = {"root": root}
    for name, emb in (
        ("all", gallery),
        ("a", part(gallery, range(0, 150))),
        ("b", part(gallery, range(150, 240))),
        ("dup", part(gallery, range(145, 160))),
        ("fp", random_embeddings(5, DIM, fingerprint="beef")),
        ("dim", random_embeddings(5, 8)),
        ("queries", random_embeddings(6, DIM, seed=8)),
    ):
        out[name] = str(root / f"{name}.npz")
        save_embeddings(emb, out[name])
    return out


@pytest.fixture(scope="module")
def db(files):
    """A Milvus Lite database with the gallery built at once (collection whole)
    and in two parts (collection parts), through the CLI."""
    path = str(files["root"] / "gallery.db")
    assert (
        main(["index", "build", files["all"], "-o", path, "--collection", "whole"]) == 0
    )
    assert (
        main(["index", "build", files["a"], "-o", path, "--collection", "parts"]) == 0
    )
    assert main(["index", "add", path, files["b"], "--collection", "parts"]) == 0
    return path


def same_answers(g1, g2, queries, where=None, labels="predicted", k=10):
    s1, i1 = g1.search(queries, k, where=where, labels=labels)
    s2, i2 = g2.search(queries, k, where=where, labels=labels)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    m1, m2 = g1.matches(s1, i1), g2.matches(s2, i2)
    for r1, r2 in zip(m1, m2, strict=True):
        for a, b in zip(r1, r2, strict=True):
            assert (a.id, a.path, a.pid, a.camid, a.time) == (
                b.id,
                b.path,
                b.pid,
                b.camid,
                b.time,
            )
            assert a.predicted == b.predicted and a.known == b.known
            assert a.confidence == pytest.approx(b.confidence, abs=1e-6)
    return i1


def test_collection_answers_as_the_exact_faiss_index(db, gallery, random_embeddings):
    faiss_index = build_index([gallery])
    whole = open_gallery(db, "whole")
    assert len(whole) == 240 and whole.kind == "flat" and whole.dim == DIM
    queries = np.concatenate(
        [random_embeddings(6, DIM, seed=8).embedding, gallery.embedding[5:6]]
    )
    same_answers(faiss_index, whole, queries)
    ids = same_answers(
        faiss_index, whole, queries, parse_where("color=red|white,type=suv")
    )
    assert (ids >= 0).all()
    same_answers(faiss_index, whole, queries, {"color": ["blue"]}, labels="known")
    # few matches: the rows end in -1, as for faiss
    rare = parse_where("color=white,type=sedan")
    mask = (gallery.predicted["color"] == "white") & (
        gallery.predicted["type"] == "sedan"
    )
    ids = same_answers(faiss_index, whole, queries, rare, k=int(mask.sum()) + 3)
    assert (ids[:, -3:] == -1).all()
    # the odd path is found, and read back verbatim
    top = whole.matches(*whole.search(gallery.embedding[5:6], 1))[0][0]
    assert top.path == gallery.paths[5] and top.time == int(gallery.times[5])
    _, none = whole.search(queries, 3, where={"color": []})
    assert (none == -1).all()


def test_gallery_built_in_parts_answers_like_one_built_at_once(db, random_embeddings):
    whole, parts = open_gallery(db, "whole"), open_gallery(db, "parts")
    assert len(parts) == 240 and parts.meta["next_id"] == 240
    queries = random_embeddings(6, DIM, seed=8).embedding
    same_answers(whole, parts, queries)
    same_answers(whole, parts, queries, parse_where("type=sedan"))


def test_cli_search_on_milvus_prints_what_faiss_prints(db, files, tmp_path, capsys):
    assert main(["index", "build", files["all"], "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    outputs = []
    for target in (
        ["--index", str(tmp_path / "idx")],
        ["--index", db, "--collection", "whole"],
    ):
        args = [
            "search",
            *target,
            "--query-embeddings",
            files["queries"],
            "-k",
            "4",
            "--where",
            "color=red,type=suv",
            "--json",
        ]
        assert main(args) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    faiss_out, milvus_out = outputs
    assert milvus_out["collection"] == "whole" and milvus_out["index"] == db
    for r1, r2 in zip(faiss_out["results"], milvus_out["results"], strict=True):
        assert [m["path"] for m in r1["matches"]] == [m["path"] for m in r2["matches"]]
        assert all(
            m["attributes"] == {"color": "red", "type": "suv"} for m in r2["matches"]
        )


def test_add_refuses_duplicates_and_other_models_writing_nothing(db, files, capsys):
    capsys.readouterr()
    parts = open_gallery(db, "parts")
    meta_before = dict(parts.meta)
    for name, says in (
        ("dup", "5 of the 15 images are already in"),
        ("fp", "has fingerprint beef"),
        ("dim", "holds 16-d embeddings"),
    ):
        assert main(["index", "add", db, files[name], "--collection", "parts"]) == 1
        assert says in one_error_line(capsys)
        assert len(parts) == 240
    assert open_collection(db, "parts").meta == meta_before


def test_search_refuses_another_models_queries(db, files, capsys):
    capsys.readouterr()
    for name, says in (
        ("fp", "has fingerprint beef"),
        ("dim", "holds 16-d embeddings"),
    ):
        code = main(
            [
                "search",
                "--index",
                db,
                "--collection",
                "whole",
                "--query-embeddings",
                files[name],
            ]
        )
        assert code == 1 and says in one_error_line(capsys)


def test_bad_targets_and_filters_are_one_line_writing_nothing(
    db, files, tmp_path, capsys
):
    capsys.readouterr()
    search = ["--query-embeddings", files["queries"]]
    for args, says in (
        (
            [
                "search",
                "--index",
                db,
                "--collection",
                "whole",
                *search,
                "--where",
                "colour=red",
            ],
            "no attribute 'colour'; it predicts color, type",
        ),
        (
            [
                "search",
                "--index",
                db,
                "--collection",
                "whole",
                *search,
                "--where",
                "color=pink",
            ],
            "color has no class 'pink'; its classes are red, blue, white",
        ),
        (
            ["search", "--index", db, "--collection", "nope", *search],
            "no collection 'nope' (collections: parts, whole)",
        ),
        (
            ["search", "--index", "http://127.0.0.1:9", *search],
            "http://127.0.0.1:9: cannot reach Milvus",
        ),
        (
            ["index", "build", files["all"], "-o", "http://127.0.0.1:9"],
            "cannot reach Milvus",
        ),
        (["index", "add", "http://127.0.0.1:9", files["b"]], "cannot reach Milvus"),
        (
            ["index", "add", str(tmp_path / "none.db"), files["b"]],
            "no such Milvus Lite database",
        ),
        (
            ["search", "--index", str(tmp_path / "none.db"), *search],
            "none.db: no such file",
        ),
        (
            ["index", "build", files["all"], "-o", db, "--collection", "bad-name"],
            "a Milvus collection name is letters, digits and _",
        ),
        (
            [
                "index",
                "build",
                files["all"],
                "-o",
                str(tmp_path / "new.db"),
                "--kind",
                "ivfpq",
                "--pq-m",
                "5",
            ],
            "m=5 sub-quantizers must divide the dimension 16",
        ),
        (
            ["index", "build", files["all"], "-o", str(tmp_path / "new.db")]
            + ["--kind", "ivfpq"],
            "Milvus Lite (" + str(tmp_path / "new.db") + ") cannot load the index "
            "type IVF_PQ",
        ),
        (
            ["index", "build", files["all"], "-o", str(tmp_path / "new.db")]
            + ["--kind", "ivfpqr"],
            "ivfpqr is a faiss index (give a folder)",
        ),
        (["index", "remove", db, "--collection", "whole"], "say which rows"),
        (
            ["index", "remove", db, "--collection", "whole", "--since", "noon"],
            "--since: 'noon' is not a time",
        ),
    ):
        assert main(args) == 1, args
        assert says in one_error_line(capsys), args
    assert os.listdir(tmp_path) == []
    assert len(open_gallery(db, "whole")) == 240


def test_a_collection_that_is_not_a_gallery_is_left_alone(db, files, capsys):
    from pymilvus import DataType
    from pymilvus import MilvusClient

    client = connect(db)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
    index = client.prepare_index_params()
    index.add_index("v", index_type="FLAT", metric_type="L2")
    client.create_collection("foreign", schema=schema, index_params=index)
    client.insert("foreign", [{"id": 1, "v": [0.0, 1.0, 0.0, 0.0]}])
    capsys.readouterr()
    for args in (
        ["index", "build", files["all"], "-o", db, "--collection", "foreign"],
        ["index", "add", db, files["b"], "--collection", "foreign"],
    ):
        assert main(args) == 1
        assert "'foreign' is not an anet-tf gallery" in one_error_line(capsys)
    assert (
        client.query("foreign", filter="", output_fields=["count(*)"])[0]["count(*)"]
        == 1
    )
    assert META_PROPERTY not in client.describe_collection("foreign")["properties"]


def test_build_replaces_a_gallery_and_kinds_are_recorded(db, files, gallery, capsys):
    assert (
        main(
            [
                "index",
                "build",
                files["a"],
                "-o",
                db,
                "--collection",
                "kinds",
                "--kind",
                "hnsw",
                "--shards",
                "2",
            ]
        )
        == 0
    )
    assert "Milvus HNSW (M=32" in capsys.readouterr().out
    # the build params reach Milvus Lite (pymilvus 3 sends them in a form it
    # ignores, building its defaults: M 16, nlist 128)
    index = connect(db).describe_index("kinds", "embedding")
    assert index["params"] == {"M": 32, "efConstruction": 200}
    hnsw = open_gallery(db, "kinds")
    assert hnsw.kind == "hnsw" and len(hnsw) == 150
    _, ids = hnsw.search(gallery.embedding[:20], 1)
    assert (ids[:, 0] == np.arange(20)).all()
    built = build_gallery(
        [part(gallery, range(150, 240))], db, "kinds", kind="ivf", nlist=4
    )
    assert built.meta["params"] == {"nlist": 4, "nprobe": 4}
    ivf = open_gallery(db, "kinds")
    assert ivf.kind == "ivf" and len(ivf) == 90
    client = connect(db)
    index = client.describe_index("kinds", "embedding")
    assert (index["index_type"], index["params"]) == ("IVF_FLAT", {"nlist": 4})
    assert "kinds_anet_building" not in client.list_collections()


def test_remove_by_camera_and_time_range(files, gallery, tmp_path, capsys):
    path = str(tmp_path / "rm.db")
    assert main(["index", "build", files["all"], "-o", path]) == 0
    capsys.readouterr()
    assert main(["index", "remove", path, "--camera", "1", "--camera", "3"]) == 0
    on_cameras = int(np.isin(gallery.camids, [1, 3]).sum())
    assert f"removed {on_cameras} items (camid in [1, 3])" in capsys.readouterr().out
    since, until = 1_800_000_000 + 60 * 50, 1_800_000_000 + 60 * 120
    assert (
        main(
            [
                "index",
                "remove",
                path,
                "--since",
                "2027-01-15T08:50:00Z",
                "--until",
                str(until),
            ]
        )
        == 0
    )
    assert "time >= 1800003000 and time < 1800007200" in capsys.readouterr().out
    keep = ~np.isin(gallery.camids, [1, 3]) & ~(
        (gallery.times >= since) & (gallery.times < until)
    )
    left = open_gallery(path)
    assert len(left) == int(keep.sum()) and left.meta["count"] == len(left)
    # what is left answers as an exact faiss index of the rows kept (ids are kept)
    kept = np.flatnonzero(keep)
    faiss_left = build_index([part(gallery, kept)])
    queries = gallery.embedding[:8]
    s1, i1 = faiss_left.search(queries, 10)
    s2, i2 = left.search(queries, 10)
    np.testing.assert_array_equal(kept[i1], i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    # rows of unknown time are in no range
    assert main(["index", "remove", path, "--until", "2100-01-01"]) == 0
    unknown_left = int((keep & (gallery.times == -1)).sum())
    assert len(open_gallery(path)) == unknown_left > 0


def test_milvus_lite_loads_the_index_types_it_is_said_to(tmp_path):
    """``LITE_INDEX_TYPES`` is what this Milvus Lite builds and loads; it refuses
    IVF_PQ and the refine types when it builds the segments' indexes, which
    is why ``--kind ivfpq`` on Milvus Lite and ``--kind ivfpqr`` on any Milvus
    target are refused up front (docs/search.md)."""
    from pymilvus import DataType
    from pymilvus import MilvusClient

    from anet_tf.search.milvus import LITE_INDEX_TYPES
    from anet_tf.search.milvus import disconnect

    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    uri = str(tmp_path / "types.db")
    client = connect(uri, create=True)
    loads = {}
    for index_type in (*LITE_INDEX_TYPES, "IVF_PQ", "IVF_RABITQ"):
        name = f"c_{index_type.lower()}"
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=8)
        client.create_collection(name, schema=schema)
        client.insert(name, [{"id": i, "v": v} for i, v in enumerate(x.tolist())])
        client.flush(name)
        index = client.prepare_index_params()
        params = {"nlist": 4, "m": 4, "nbits": 4} if "IVF" in index_type else {}
        index.add_index("v", index_type=index_type, metric_type="IP", params=params)
        try:
            client.create_index(name, index)
            client.load_collection(name)
            loads[index_type] = True
        except Exception:  # noqa: BLE001 - pymilvus raises MilvusException
            loads[index_type] = False
    disconnect(uri, client)
    assert loads == {**dict.fromkeys(LITE_INDEX_TYPES, True), "IVF_PQ": False,
                     "IVF_RABITQ": False}  # fmt: skip
