"""The ivfpqr refine kept on disk (``--refine fp16-disk``): the IVF-PQ in memory,
its shortlist re-ranked on the float16 rows of ``INDEX/refine.npy`` read through a
memory map. It answers what faiss's in-memory fp16 ``IndexRefine`` over the same
IVF-PQ answers, filtered or not, after ``index add``, saved and reopened (in
another process too); a missing or cut refine file is one line naming it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys

import faiss
import numpy as np
import pytest
from helpers import one_line

from anet_tf.cli import main
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.index import REFINE_FILE
from anet_tf.search.index import GalleryIndex
from anet_tf.search.index import add_to_index
from anet_tf.search.index import build_index
from anet_tf.search.index import load_index
from anet_tf.search.index import parse_where

N, D = 2000, 64
# 16 lists, 4 probed, a shortlist of 5 x k: the re-ranking sees a part of the
# gallery, so the answers depend on the IVF-PQ and on the refine codes. OPQ (the
# ivfpqr default at 512-d) rotates to 32 dims first.
RECIPE = {"nlist": 16, "m": 8, "bits": 4, "nprobe": 4, "k_factor": 5, "opq": 32}


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """OPQ training with 2 OpenMP threads on 2 busy cores takes 10x longer."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def gallery(random_embeddings):
    return random_embeddings(N, D, seed=21)


@pytest.fixture(scope="module")
def queries(random_embeddings):
    return random_embeddings(12, D, seed=22).embedding


@pytest.fixture(scope="module")
def on_disk(gallery, tmp_path_factory):
    index = build_index([gallery], kind="ivfpqr", refine="fp16-disk", **RECIPE)
    index.save(str(tmp_path_factory.mktemp("disk") / "idx"))
    return index


def in_memory(index: GalleryIndex) -> GalleryIndex:
    """faiss's ``IndexRefine`` with fp16 codes (``--refine fp16``) over a copy of
    ``index``'s IVF-PQ, holding the same rows."""
    base = faiss.clone_index(index.index)
    codes = faiss.IndexScalarQuantizer(
        index.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    codes.add(index.refine_rows(np.arange(len(index))).astype(np.float32))
    refined = faiss.IndexRefine(base, codes)
    refined.own_fields = True
    base.this.disown(), codes.this.disown()
    meta = copy.deepcopy(index.meta)
    meta["params"]["refine"] = "fp16"
    return GalleryIndex(refined, meta, dict(index.items))


def assert_same(a, b):
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)  # fp16 rows: float32 sums


def test_it_answers_what_the_in_memory_fp16_refine_answers(on_disk, gallery, queries):
    assert on_disk.meta["params"]["factory"] == "OPQ8_32,IVF16_HNSW32,PQ8x4np"
    # memory: the IVF-PQ, its codes 8 B an item; the rows are a map of the file
    assert isinstance(on_disk.refine_parts[0], np.memmap)
    assert faiss.serialize_index(on_disk.index).nbytes < N * D * 2 / 4
    np.testing.assert_array_equal(
        on_disk.refine_rows(np.arange(N)), gallery.embedding.astype(np.float16)
    )
    reference = in_memory(on_disk)
    for top_k, nprobe in ((10, None), (3, 16), (25, 1)):
        assert_same(
            on_disk.search(queries, top_k, nprobe=nprobe),
            reference.search(queries, top_k, nprobe=nprobe),
        )
    # a short shortlist: not the exact top-10, so the comparison says something
    exact = build_index([gallery]).search(queries, 10)[1]
    assert not np.array_equal(on_disk.search(queries, 10)[1], exact)


@pytest.mark.parametrize("through", ["exact selection", "selector"])
def test_filters_agree_with_the_in_memory_refine(on_disk, queries, through):
    reference = in_memory(on_disk)
    for index in (on_disk, reference):
        # a large selection is searched through the index with an IDSelectorBitmap
        index.exact_max = 4096 if through == "exact selection" else 0
        index.forget_selections()
    try:
        for kwargs in (
            {"where": parse_where("color=red|white")},
            {"where": parse_where("type=suv"), "cameras": "1-3"},
            {"not_cameras": [0]},
            {"where": parse_where("color=blue"), "query_cameras": [0, 1, 2, 3] * 3},
            {"exclude": [np.arange(i, 2000, 7) for i in range(12)]},
        ):
            assert_same(
                on_disk.search(queries, 10, **kwargs),
                reference.search(queries, 10, **kwargs),
            )
    finally:
        on_disk.exact_max = 4096
        on_disk.forget_selections()


def test_saved_it_reopens_and_answers_the_same_in_another_process(
    on_disk, queries, tmp_path
):
    loaded = load_index(on_disk.path)
    assert isinstance(loaded.refine_parts[0], np.memmap)
    for where in (None, parse_where("type=sedan")):
        assert_same(
            loaded.search(queries, 10, where=where),
            on_disk.search(queries, 10, where=where),
        )
    np.save(tmp_path / "q.npy", queries)
    script = (
        "import sys, numpy as np; from anet_tf.search.index import load_index; "
        "s, i = load_index(sys.argv[1]).search(np.load(sys.argv[2]), 10); "
        "np.save(sys.argv[3], i); np.save(sys.argv[4], s)"
    )
    out = [str(tmp_path / "ids.npy"), str(tmp_path / "scores.npy")]
    subprocess.run(
        [sys.executable, "-c", script, on_disk.path, str(tmp_path / "q.npy"), *out],
        check=True,
        timeout=120,
    )
    assert_same((np.load(out[1]), np.load(out[0])), on_disk.search(queries, 10))


def test_add_appends_rows_in_id_order(gallery, queries, tmp_path):
    first, rest = gallery.rows(np.arange(1500)), gallery.rows(np.arange(1500, N))
    built = build_index([first], kind="ivfpqr", refine="fp16-disk", **RECIPE)
    reference = in_memory(built)  # the same IVF-PQ, holding the first 1500
    built.save(str(tmp_path / "idx"))
    added, _ = add_to_index(str(tmp_path / "idx"), [rest])
    reference.add_vectors(rest.embedding)
    loaded = load_index(str(tmp_path / "idx"))
    reference.items = loaded.items
    assert len(loaded) == N and loaded.refine_parts[0].shape == (N, D)
    np.testing.assert_array_equal(
        loaded.refine_rows(np.arange(N)), gallery.embedding.astype(np.float16)
    )
    for index in (added, loaded):
        assert_same(index.search(queries, 10), reference.search(queries, 10))
        where = {"where": parse_where("color=red"), "cameras": "0-2"}
        assert_same(
            index.search(queries, 10, **where), reference.search(queries, 10, **where)
        )
    # the rows added are found as themselves
    _, ids = loaded.search(rest.embedding[:50], 10, nprobe=16)
    assert (ids[:, 0] == np.arange(1500, 1550)).mean() >= 0.95


def _digest(folder) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode() + open(os.path.join(folder, name), "rb").read())
    return h.hexdigest()


@pytest.fixture
def cli_gallery(gallery, tmp_path, capsys, monkeypatch):
    from anet_tf import native_output

    monkeypatch.setattr(native_output, "import_tensorflow", lambda: None)
    emb = str(tmp_path / "g.npz")
    save_embeddings(gallery, emb)
    idx = str(tmp_path / "g.index")
    build = "--kind ivfpqr --refine fp16-disk --nlist 16 --pq-m 8 --pq-bits 4 --quiet"
    assert main(["index", "build", emb, "-o", idx, *build.split()]) == 0
    out = capsys.readouterr().out
    assert "PQ8x4np, re-ranked on fp16 rows on disk (refine.npy)" in out
    return idx, emb


@pytest.mark.parametrize("damage", ["truncated", "missing", "another shape"])
def test_a_damaged_refine_file_is_one_line_and_loses_nothing(
    cli_gallery, gallery, damage, tmp_path, capsys
):
    idx, emb = cli_gallery
    file = os.path.join(idx, REFINE_FILE)
    if damage == "truncated":
        os.truncate(file, os.path.getsize(file) - 1000)
    elif damage == "missing":
        os.remove(file)
    else:
        np.save(file, np.zeros((N, D - 1), np.float16))
    before = _digest(idx)
    expected = {
        "truncated": "truncated: 2000 x 64 float16 rows need",
        "missing": "refine.npy is missing",
        "another shape": "holds float16 (2000, 63), not float16 (2000, 64)",
    }[damage]
    with pytest.raises(SearchError, match=re.escape(expected)) as caught:
        load_index(idx)
    assert file in str(caught.value) and "\n" not in str(caught.value)
    new = tmp_path / "new.npz"
    extra = copy.copy(gallery)
    extra.paths = [p.replace("/gallery/", "/new/") for p in gallery.paths]
    save_embeddings(extra, str(new))
    for argv in (
        ["search", "--index", idx, "--query-embeddings", emb, "--top-k", "3"],
        ["index", "add", idx, str(new)],
    ):
        assert expected in one_line(capsys, argv, 1)
    assert _digest(idx) == before
    assert json.load(open(os.path.join(idx, "index.json")))["count"] == N


def test_remove_is_refused_on_the_folder(cli_gallery, capsys):
    idx, _ = cli_gallery
    before = _digest(idx)
    err = one_line(capsys, ["index", "remove", idx, "--camera", "1"], 1)
    assert "index remove works on a Milvus target" in err
    assert _digest(idx) == before
