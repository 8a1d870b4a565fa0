"""The faiss gallery index and ``anet-tf search``: exact results against NumPy,
attribute filters, IVF-PQ, save/load, refusal of another model's index, and a
planted duplicate found at rank 1 through a real SavedModel."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from anet_tf.cli import main
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.index import IndexMismatchError
from anet_tf.search.index import build_index
from anet_tf.search.index import load_index
from anet_tf.search.index import parse_where


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int, mask=None):
    scores = queries @ gallery.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, 1), ids


@pytest.fixture(scope="module")
def gallery(random_embeddings):
    return random_embeddings(600, 24)


@pytest.fixture(scope="module")
def index(gallery):
    return build_index([gallery])


def test_flat_search_is_exact(gallery, index, random_embeddings):
    queries = random_embeddings(7, 24, seed=1).embedding
    scores, ids = index.search(queries, 10)
    ref_scores, ref_ids = brute_force(gallery.embedding, queries, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_filters_return_exactly_the_best_matching_items(gallery, index, random_embeddings):
    queries = random_embeddings(5, 24, seed=2).embedding
    where = parse_where("color=red|white,type=suv")
    mask = np.isin(gallery.predicted["color"], ["red", "white"]) & (
        gallery.predicted["type"] == "suv"
    )
    assert 10 < mask.sum() < 600

    scores, ids = index.search(queries, 10, where=where)

    ref_scores, ref_ids = brute_force(gallery.embedding, queries, 10, mask)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    for row in index.matches(scores, ids):
        assert len(row) == 10
        for m in row:
            assert (
                m.predicted["color"] in ("red", "white")
                and m.predicted["type"] == "suv"
            )


def test_filter_on_known_labels_and_with_few_matches(gallery, index):
    query = gallery.embedding[:1]
    scores, ids = index.search(query, 5, where={"color": ["blue"]}, labels="known")
    assert all(gallery.known["color"][i] == "blue" for i in ids[0])

    few = np.flatnonzero(gallery.known["color"] == "white")[:3]
    sub = gallery.rows(few)
    small = build_index([sub])
    scores, ids = small.search(query, 5, where={"color": ["white"]}, labels="known")
    assert ids[0].tolist()[3:] == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    assert sorted(ids[0, :3].tolist()) == [0, 1, 2]
    assert [len(r) for r in small.matches(scores, ids)] == [3]
    _, none = small.search(query, 5, where={"color": ["red"]}, labels="known")
    assert (none == -1).all()


def test_exclude_leaves_items_out(gallery, index):
    query = gallery.embedding[10:11]
    _, ids = index.search(query, 3)
    assert ids[0, 0] == 10
    _, ids2 = index.search(query, 3, exclude=[np.asarray([10, ids[0, 1]])])
    assert ids2[0, 0] == ids[0, 2] and 10 not in ids2[0]


def test_bad_filters_name_the_valid_choices(index):
    with pytest.raises(
        SearchError, match="no attribute 'colour'; it predicts color, type"
    ):
        index.filter_mask(parse_where("colour=red"))
    with pytest.raises(
        SearchError,
        match="color has no class 'purple'; its classes are red, blue, white",
    ):
        index.filter_mask(parse_where("color=purple"))
    with pytest.raises(SearchError, match="is not ATTRIBUTE=CLASS"):
        parse_where("color")
    assert parse_where(["color=red|blue", "color=blue,type=suv"]) == {
        "color": ["blue"],
        "type": ["suv"],
    }


def test_save_load_round_trip(gallery, index, tmp_path):
    index.save(str(tmp_path / "idx"))
    loaded = load_index(str(tmp_path / "idx"))
    queries = gallery.embedding[:4]
    for a, b in zip(
        index.search(queries, 5, where={"type": ["sedan"]}),
        loaded.search(queries, 5, where={"type": ["sedan"]}),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    m = loaded.matches(*loaded.search(queries[:1], 1))[0][0]
    assert m.path == gallery.paths[0] and m.pid == gallery.pids[0]
    assert m.known["color"] == gallery.known["color"][0]
    with pytest.raises(SearchError, match="is not an anet-tf index"):
        load_index(str(tmp_path))


def test_index_target_of_the_wrong_kind_is_one_line_before_any_work(gallery, index, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(SearchError, match="exists and is a file"):
        index.save(str(a_file))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("mine")
    # The embeddings file is not even an .npz: the target is checked first.
    (tmp_path / "not-read.npz").write_bytes(b"")
    for target, why in ((a_file, "exists and is a file"), (busy, "is not an anet-tf index"),
                        (a_file / "idx", "is a file, not a folder")):
        code = main(["index", "build", str(tmp_path / "not-read.npz"), "-o", str(target)])
        err = capsys.readouterr().err
        assert code == 1 and why in err and len(err.strip().splitlines()) == 1
    assert a_file.read_text() == "keep me" and os.listdir(busy) == ["x.txt"]


def test_ivfpq_finds_most_vectors_themselves(tmp_path, random_embeddings):
    gallery = random_embeddings(1500, 32, seed=4)
    index = build_index([gallery], kind="ivfpq", nlist=8, m=8, bits=5, nprobe=4)
    assert index.meta["params"]["factory"] == "IVF8,PQ8x5np"
    index.save(str(tmp_path / "ivf"))
    loaded = load_index(str(tmp_path / "ivf"))
    _, ids = loaded.search(gallery.embedding[:200], 1)
    assert (ids[:, 0] == np.arange(200)).mean() > 0.8
    _, ids = loaded.search(gallery.embedding[:50], 5, where={"color": ["red"]})
    assert all(gallery.predicted["color"][i] == "red" for i in ids[ids >= 0])
    with pytest.raises(SearchError, match="needs at least 256 gallery vectors"):
        build_index([random_embeddings(100, 32)], kind="ivfpq")


def test_another_models_embeddings_are_refused(gallery, index, fake_model, random_embeddings):
    with pytest.raises(IndexMismatchError, match="holds 24-d embeddings.*gives 32-d"):
        index.check_model(fake_model(32, "beef"))
    with pytest.raises(
        IndexMismatchError, match="fingerprint f00d.*has fingerprint beef.*rebuild"
    ):
        index.check_model(fake_model(24, "beef"))
    with pytest.raises(IndexMismatchError) as err:
        build_index([gallery, random_embeddings(5, 24, fingerprint="beef")])
    # two galleries of different models: the way out is one model, not a query
    assert "embed every part with the same --model" in str(err.value)
    assert "Search with" not in str(err.value)
    with pytest.raises(IndexMismatchError, match="do not fit the index of 24-d"):
        index.search(np.zeros((1, 32), np.float32))


# ------------------------------------------------- end to end with a SavedModel


@pytest.fixture(scope="module")
def served_gallery(tmp_path_factory, search_assets, write_images):
    """A gallery of distinct images embedded by the tiny SavedModel and indexed,
    and a query that is a byte copy of gallery image 3 under another name."""
    assets = search_assets
    root = tmp_path_factory.mktemp("served")
    paths = write_images(root / "gallery", 12, seed=11)
    query = root / "queries" / "planted.jpg"
    os.makedirs(query.parent)
    shutil.copy(paths[3], query)
    emb_path = root / "gallery.npz"
    assert (
        main(
            [
                "embed",
                str(root / "gallery"),
                "--model",
                assets.model,
                "-o",
                str(emb_path),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(["index", "build", str(emb_path), "-o", str(root / "index")]) == 0
    )
    return {
        "assets": assets,
        "root": root,
        "paths": sorted(paths),
        "query": str(query),
        "index": str(root / "index"),
        "emb": str(emb_path),
    }


def test_planted_duplicate_is_rank_1(served_gallery, capsys):
    g = served_gallery
    capsys.readouterr()
    code = main(
        [
            "search",
            "--index",
            g["index"],
            "--query",
            g["query"],
            "--top-k",
            "5",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["query"] == g["query"]
    top = result["matches"][0]
    assert top["rank"] == 1 and top["path"] == g["paths"][3]
    assert top["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(result["matches"]) == 5
    assert result["attributes"] == top["attributes"]

    assert (
        main(["search", "--index", g["index"], "--query", g["query"], "-k", "2"])
        == 0
    )
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith(f"query {g['query']}")
    assert g["paths"][3] in table.splitlines()[2]


def test_search_filter_returns_only_matching_attributes(served_gallery, capsys):
    g = served_gallery
    emb = load_embeddings(g["emb"])
    color = str(emb.predicted["color"][3])
    capsys.readouterr()
    code = main(
        [
            "search",
            "--index",
            g["index"],
            "--query",
            g["query"],
            "-k",
            "12",
            "--where",
            f"color={color}",
            "--json",
        ]
    )
    assert code == 0
    matches = json.loads(capsys.readouterr().out)["results"][0]["matches"]
    assert matches[0]["path"] == g["paths"][3]
    assert len(matches) == int((emb.predicted["color"] == color).sum())
    assert {m["attributes"]["color"] for m in matches} == {color}


def test_search_refuses_an_index_of_another_model(served_gallery, tmp_path, capsys, random_embeddings):
    g = served_gallery
    other = random_embeddings(20, 8)
    save_embeddings(other, str(tmp_path / "other.npz"))
    build_index([load_embeddings(str(tmp_path / "other.npz"))]).save(
        str(tmp_path / "idx8")
    )
    code = main(
        [
            "search",
            "--index",
            str(tmp_path / "idx8"),
            "--query",
            g["query"],
            "--model",
            g["assets"].model,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "holds 8-d embeddings" in err and "gives 16-d" in err

    shutil.copytree(g["index"], tmp_path / "tampered")
    meta_path = tmp_path / "tampered" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["fingerprint"] = "0123456789abcdef"
    meta_path.write_text(json.dumps(meta))
    assert (
        main(
            ["search", "--index", str(tmp_path / "tampered"), "--query", g["query"]]
        )
        == 1
    )
    assert "fingerprint 0123456789abcdef" in capsys.readouterr().err


def test_unreadable_queries_are_reported_and_the_rest_answered(
    served_gallery, tmp_path, capsys
):
    g = served_gallery
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    capsys.readouterr()
    code = main(
        ["search", "--index", g["index"], "--query", str(bad), g["query"], "--json"]
    )
    assert code == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert [r["query"] for r in payload["results"]] == [g["query"]]
    assert payload["failed"] == [
        {"path": str(bad), "reason": "truncated PNG (no IEND chunk)"}
    ]
    assert f"skipped {bad}" in captured.err
