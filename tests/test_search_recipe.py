"""The ivfpqr index (IVF-PQ with an HNSW coarse quantizer, re-ranked on finer
codes): exact where its shortlist covers the gallery, measured where it does not,
saved and loaded, filtered as the flat index filters, refused where it cannot be."""

from __future__ import annotations

import numpy as np
import pytest

from anet_tf.cli import main
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import index_params
from anet_tf.search.index import build_index
from anet_tf.search.index import load_index
from anet_tf.search.index import parse_where

N, D = 600, 24
# 8 lists all probed, a shortlist of 60 x 10 = every item: the re-ranking sees
# the whole gallery, so flat refine codes give the exact top-10.
EXACT = {"nlist": 8, "m": 4, "bits": 6, "nprobe": 8, "k_factor": 60}


@pytest.fixture(scope="module")
def gallery(random_embeddings):
    return random_embeddings(N, D, seed=11)


@pytest.fixture(scope="module")
def flat(gallery):
    return build_index([gallery])


@pytest.fixture(scope="module")
def exact_recipe(gallery):
    return build_index([gallery], kind="ivfpqr", refine="flat", **EXACT)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]
        )
    )


def test_exact_refine_over_the_whole_shortlist_is_the_flat_index(
    gallery, flat, exact_recipe, random_embeddings
):
    assert exact_recipe.meta["params"]["factory"] == "IVF8_HNSW32,PQ4x6np,RFlat"
    queries = random_embeddings(9, D, seed=12).embedding
    scores, ids = exact_recipe.search(queries, 10)
    ref_scores, ref_ids = flat.search(queries, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_a_short_shortlist_is_measured_and_refining_it_helps(
    gallery, flat, random_embeddings
):
    queries = random_embeddings(40, D, seed=13).embedding
    _, exact = flat.search(queries, 10)
    recall = {}
    for k_factor in (1, 8):
        index = build_index(
            [gallery],
            kind="ivfpqr",
            refine="sq8",
            nlist=8,
            m=4,
            bits=6,
            nprobe=4,
            k_factor=k_factor,
        )
        recall[k_factor] = _recall(index.search(queries, 10)[1], exact)
    # k_factor 1 re-ranks PQ's own top-10 (PQ's recall); 8 re-ranks its top-80
    assert 0.2 < recall[1] < 0.9, recall
    assert recall[8] >= recall[1] + 0.2 and recall[8] > 0.75, recall


def test_save_load_round_trip(gallery, exact_recipe, tmp_path, random_embeddings):
    exact_recipe.save(str(tmp_path / "idx"))
    loaded = load_index(str(tmp_path / "idx"))
    assert (
        loaded.kind == "ivfpqr" and loaded.meta["params"] == exact_recipe.meta["params"]
    )
    queries = random_embeddings(5, D, seed=14).embedding
    for where in (None, parse_where("type=sedan")):
        for a, b in zip(
            exact_recipe.search(queries, 7, where=where),
            loaded.search(queries, 7, where=where),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    # nprobe at query time still reaches the loaded index's IVF
    few = loaded.search(queries, 7, nprobe=1)[1]
    assert not np.array_equal(few, loaded.search(queries, 7)[1])


@pytest.mark.parametrize("through", ["exact selection", "selector"])
def test_filters_agree_with_the_flat_index(
    gallery, flat, exact_recipe, random_embeddings, through
):
    queries = random_embeddings(6, D, seed=15).embedding
    # a large selection is searched through the index with an IDSelectorBitmap
    exact_recipe.exact_max = 4096 if through == "exact selection" else 0
    try:
        for kwargs in (
            {"where": parse_where("color=red|white")},
            {"where": parse_where("type=suv"), "cameras": "1-3"},
            {"not_cameras": [0]},
            {"where": parse_where("color=blue"), "query_cameras": [0, 1, 2, 3, 4, -1]},
        ):
            scores, ids = exact_recipe.search(queries, 10, **kwargs)
            ref_scores, ref_ids = flat.search(queries, 10, **kwargs)
            np.testing.assert_array_equal(ids, ref_ids)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    finally:
        exact_recipe.forget_selections()
        exact_recipe.exact_max = 4096


def test_defaults_by_size():
    small, large = (
        index_params("ivfpqr", 10**6, 512),
        index_params("ivfpqr", 10**7, 512),
    )
    assert (small["nlist"], small["refine"], small["opq"]) == (4096, "fp16", 256)
    assert (large["nlist"], large["refine"], large["k_factor"]) == (
        16384,
        "fp16-disk",
        50,
    )
    # past the in-memory refine, twice the PQ bytes: D/4 up to 128
    assert (small["m"], large["m"], large["opq"]) == (64, 128, 256)
    assert index_params("ivfpqr", 10**8, 128)["m"] == 32
    assert index_params("ivfpqr", 10**7, 512, m=64)["m"] == 64
    assert index_params("ivfpq", 10**7, 512)["m"] == 64
    assert index_params("ivfpqr", 10**6, 128)["opq"] == 0
    assert (
        index_params("ivfpqr", 10**7, 512, refine="fp16", k_factor=20)["k_factor"] == 20
    )


def test_bad_settings_are_one_line(gallery, random_embeddings):
    with pytest.raises(SearchError, match="refine must be one of flat, fp16, sq8, sq4"):
        index_params("ivfpqr", 1000, 24, refine="sq2")
    with pytest.raises(
        SearchError, match="ivfpqr with nlist=8 and 8-bit codes needs at least 256"
    ):
        build_index([random_embeddings(100, D)], kind="ivfpqr", nlist=8, m=4)
    with pytest.raises(
        SearchError, match="m=5 sub-quantizers must divide the dimension 24"
    ):
        build_index([gallery], kind="ivfpqr", m=5)


def test_cli_builds_and_searches_it_and_refuses_milvus(gallery, tmp_path, capsys):
    emb = str(tmp_path / "g.npz")
    save_embeddings(gallery, emb)
    out = str(tmp_path / "g.index")
    code = main(
        [
            "index",
            "build",
            emb,
            "-o",
            out,
            "--kind",
            "ivfpqr",
            "--nlist",
            "8",
            "--pq-m",
            "4",
            "--pq-bits",
            "6",
            "--refine",
            "fp16",
            "--k-factor",
            "20",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "IVF8_HNSW32,PQ4x6np,Refine(SQfp16)" in capsys.readouterr().out
    params = load_index(out).meta["params"]
    assert (params["refine"], params["k_factor"]) == ("fp16", 20)
    code = main(
        ["index", "build", emb, "-o", str(tmp_path / "g.db"), "--kind", "ivfpqr"]
    )
    err = capsys.readouterr().err
    assert (
        code == 1
        and "ivfpqr is a faiss index" in err
        and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "g.db").exists()
