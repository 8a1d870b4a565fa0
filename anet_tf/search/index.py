"""A searchable gallery in a faiss index folder: embeddings with their attributes.

``anet-tf index build EMB.npz [EMB.npz ...] -o INDEX`` writes the folder::

    INDEX/index.faiss   the faiss index (ids = item positions 0..N-1)
    INDEX/items.npz     per item: path (UTF-8), pid, camid, time, and per attribute
                        the predicted class (<a>_pred) and known class (<a>_known),
                        as class indices (-1 unknown), and the predicted class
                        probabilities (<a>_probs)
    INDEX/index.json    format, kind, dimension, item count, the model (path,
                        fingerprint, embedding dim, attributes) and index settings

``anet-tf index add INDEX EMB.npz`` appends items (ids N, N+1, ...). The rows,
filters and matches are those of :mod:`anet_tf.search.gallery`, shared with the
Milvus backend (:mod:`anet_tf.search.milvus`).

Kinds:

``flat`` (default)
    ``IndexFlatIP``: exact inner product, i.e. exact cosine similarity of the
    L2-normalised embeddings. Memory 4·D bytes per image; a batch-1 query scans
    the whole gallery (see ``benchmarks/search.py`` for timings).
``ivf``
    ``IVF{nlist},Flat`` (inner product): 4·D bytes per image, only ``nprobe`` of
    the ``nlist`` inverted lists are scanned per query.
``ivfpq``
    ``IVF{nlist},PQ{m}x{bits}`` (inner product): approximate, for galleries beyond
    about a million images; m bytes per image, and only ``nprobe`` of the ``nlist``
    inverted lists are scanned per query.
``hnsw``
    ``HNSW{M},Flat`` (inner product): a graph, 4·D + 8·M bytes per image, no
    training, ``ef_search`` candidates per query.

Attribute filters (``--where color=red,type=sedan``) keep the items whose predicted
(or, with ``labels="known"``, known) classes match. They are applied inside the
search by a faiss ``IDSelectorBitmap``, so the flat index returns the exact top-k
among the matching items, however few match; the approximate kinds return the
best matches among the probed lists or graph nodes.

An index remembers the model that embedded its gallery; a query embedded by another
model (another dimension or fingerprint) is refused with :class:`IndexMismatchError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from anet_tf.search.embeddings import Embeddings
from anet_tf.search.errors import IndexMismatchError
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import KINDS
from anet_tf.search.gallery import LABEL_SOURCES
from anet_tf.search.gallery import Gallery
from anet_tf.search.gallery import Match
from anet_tf.search.gallery import Rows
from anet_tf.search.gallery import check_new_paths
from anet_tf.search.gallery import check_same_model
from anet_tf.search.gallery import gallery_rows
from anet_tf.search.gallery import index_params
from anet_tf.search.gallery import parse_where

__all__ = [
    "FORMAT",
    "KINDS",
    "LABEL_SOURCES",
    "GalleryIndex",
    "IndexMismatchError",
    "Match",
    "add_to_index",
    "build_index",
    "check_index_target",
    "check_same_model",
    "load_index",
    "parse_where",
    "search_threads",
]

FORMAT = "anet-tf-index/1"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.npz"
META_FILE = "index.json"


def _faiss():
    try:
        import faiss
    except ImportError:
        raise SearchError(
            "the gallery index needs faiss: pip install 'anet-tf[search]' (faiss-cpu)"
        ) from None
    return faiss


# -------------------------------------------------------------------------- index


class GalleryIndex(Gallery):
    """A faiss index plus what each item is (path, ids, attributes) and which model
    embedded it. Built by :func:`build_index`, read by :func:`load_index`.

    Args:
        index: the faiss index; item ``i`` has faiss id ``i``.
        meta: the ``index.json`` dict.
        items: the ``items.npz`` arrays.
    """

    def __init__(
        self, index, meta: dict, items: dict[str, np.ndarray], path: str | None = None
    ):
        self.index = index
        self.path = path
        self.meta = meta
        self.items = items
        self._paths: list[str] | None = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [p.decode("utf-8") for p in self.items["path"].tolist()]
        return self._paths

    # --- filters
    def filter_mask(
        self, where: dict[str, list[str]], labels: str = "predicted"
    ) -> np.ndarray | None:
        """The items that satisfy ``where`` (bool [N]), or None for no filter.

        Raises:
            SearchError: an attribute or class the model does not have, listing
                the valid ones; an unknown label source.
        """
        codes = self.check_filter(where, labels)
        if not codes:
            return None
        mask = np.ones(len(self), bool)
        for column, allowed in codes.items():
            mask &= np.isin(self.items[column], allowed)
        return mask

    # --- search
    def search(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        *,
        where: dict[str, list[str]] | None = None,
        labels: str = "predicted",
        nprobe: int | None = None,
        exclude: Sequence[np.ndarray] | None = None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` most similar items of each query.

        Args:
            queries: float32 [Q, D] L2-normalised embeddings of the index's model.
            top_k: matches per query.
            where: attribute filter (:func:`parse_where`).
            labels: filter on the predicted or the known classes.
            nprobe: IVF lists scanned per query (ivf, ivfpq; default from the
                index), candidates kept per query (hnsw's ef_search).
            exclude: per query, item ids to leave out (e.g. the same vehicle seen by
                the same camera, which the re-id protocol ignores).
            threads: faiss (OpenMP) threads for this call; None keeps faiss's
                setting (all cores). Batch-1 queries are fastest with 1 thread
                on 2 cores (``benchmarks/search.py``). faiss's thread count is
                process-wide: it is set for the call and restored after it.

        Returns:
            (scores float32 [Q, top_k], ids int64 [Q, top_k]), best first; where
            fewer items qualify, the rows end with score -inf and id -1.
        """
        faiss = _faiss()
        queries = self.check_queries(queries, top_k)
        mask = self.filter_mask(where or {}, labels)
        q = len(queries)
        scores = np.full((q, top_k), -np.inf, np.float32)
        ids = np.full((q, top_k), -1, np.int64)
        if len(self) == 0 or q == 0:
            return scores, ids
        previous = faiss.omp_get_max_threads()
        if threads:
            faiss.omp_set_num_threads(threads)
        try:
            self._search_rows(faiss, queries, top_k, mask, nprobe, exclude, scores, ids)
        finally:
            faiss.omp_set_num_threads(previous)
        return scores, ids

    def _search_rows(self, faiss, queries, top_k, mask, nprobe, exclude, scores, ids):
        if exclude is None:
            self._search_into(faiss, queries, top_k, mask, nprobe, scores, ids)
            return
        for i in range(len(queries)):
            row_mask = mask.copy() if mask is not None else np.ones(len(self), bool)
            drop = np.asarray(exclude[i], np.int64)
            row_mask[drop[(drop >= 0) & (drop < len(self))]] = False
            self._search_into(
                faiss,
                queries[i : i + 1],
                top_k,
                row_mask,
                nprobe,
                scores[i : i + 1],
                ids[i : i + 1],
            )

    def _search_into(self, faiss, queries, top_k, mask, nprobe, scores, ids) -> None:
        if mask is not None and not mask.any():
            return
        k = min(top_k, len(self))
        selector = None
        # `bits` must outlive the search: the selector reads it through a pointer.
        bits = None
        if mask is not None and not mask.all():
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        if self.kind in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF(
                sel=selector, nprobe=int(nprobe or self.meta["params"]["nprobe"])
            )
        elif self.kind == "hnsw":
            ef = int(nprobe or self.meta["params"]["ef_search"])
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef, k))
        elif selector is not None:
            params = faiss.SearchParameters(sel=selector)
        else:
            params = None
        d, i = self.index.search(queries, k, params=params)
        found = i >= 0
        scores[:, :k] = np.where(found, d, -np.inf)
        ids[:, :k] = np.where(found, i, -1)

    def row(self, item: int) -> dict:
        """Item ``item``'s values of the ``items.npz`` arrays."""
        return {key: values[item] for key, values in self.items.items()}

    def same_pid_camera(self, pid: int, camid: int) -> np.ndarray:
        """Items of vehicle ``pid`` seen by camera ``camid`` (the re-id protocol's
        junk for such a query); empty where either is unknown."""
        if pid < 0 or camid < 0:
            return np.zeros(0, np.int64)
        return np.flatnonzero(
            (self.items["pid"] == pid) & (self.items["camid"] == camid)
        )

    # --- files
    def save(self, out_dir: str) -> str:
        """Write the index folder; it is written beside ``out_dir`` and renamed in
        when complete (an existing index there is replaced)."""
        faiss = _faiss()
        out_dir = os.path.abspath(out_dir)
        parent = os.path.dirname(out_dir)
        check_index_target(out_dir)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".index-tmp-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would stay on the index
        try:
            faiss.write_index(self.index, os.path.join(staging, INDEX_FILE))
            with open(os.path.join(staging, ITEMS_FILE), "wb") as fh:
                np.savez(fh, **self.items)
            with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as fh:
                json.dump(self.meta, fh, indent=2)
            if os.path.exists(out_dir):
                shutil.rmtree(out_dir)
            os.replace(staging, out_dir)
            self.path = out_dir
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out_dir


def search_threads(num_queries: int) -> int:
    """faiss threads for a search: 1 for a few queries (faiss then scans the
    gallery once per query, and a second OpenMP thread made a batch-1 query 2x
    slower on 2 cores, 8x on a busy machine: ``benchmarks/search.py``), all cores
    (0) for a batch of 20 or more, which faiss runs as one matrix product."""
    return 1 if num_queries < 20 else 0


def check_index_target(out_dir: str) -> None:
    """Raise :class:`SearchError` (one line) unless ``out_dir`` can receive an index:
    a new path, an empty folder or an existing index (replaced). Called before any
    work is spent, and again when saving."""
    path = os.path.abspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise SearchError(f"-o {out_dir}: exists and is a file; an index is a folder, give a new path")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, META_FILE)) and os.listdir(path):
        raise SearchError(f"-o {out_dir}: exists and is not an anet-tf index; give a new folder")
    probe = os.path.dirname(path)
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise SearchError(f"-o {out_dir}: {probe} is a file, not a folder")


def build_index(
    embeddings: Sequence[Embeddings],
    *,
    kind: str = "flat",
    nlist: int | None = None,
    m: int | None = None,
    bits: int | None = None,
    nprobe: int | None = None,
    M: int | None = None,  # noqa: N803 (HNSW's name for it)
    seed: int = 0,
) -> GalleryIndex:
    """A gallery index of one or more embeddings files of the same model.

    Args:
        embeddings: the galleries to index, in order (item ids follow it).
        kind: flat (exact) | ivf | ivfpq | hnsw (approximate; see the module
            docstring).
        nlist, m, bits, nprobe: IVF(-PQ) settings; M: HNSW links per node; None =
            the defaults of :func:`anet_tf.search.gallery.index_params`.
        seed: seed of the IVF k-means.

    Raises:
        IndexMismatchError: the files come from different models.
        SearchError: no embeddings; too few vectors to train IVF.
    """
    rows = gallery_rows(embeddings)
    n, dim = rows.vectors.shape
    params = index_params(kind, n, dim, nlist=nlist, m=m, bits=bits, nprobe=nprobe, M=M)
    index = _new_faiss_index(kind, params, rows.vectors, seed)
    index.add(rows.vectors)
    meta = {
        "format": FORMAT,
        "kind": kind,
        "dim": dim,
        "count": n,
        "metric": "inner_product",
        "params": params,
        "model": rows.model,
        "sources": rows.sources,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "warnings": rows.warnings,
    }
    return GalleryIndex(index, meta, dict(rows.columns))


def _new_faiss_index(kind: str, params: dict, vectors: np.ndarray, seed: int):
    """An empty faiss index of ``kind`` (trained on ``vectors`` where it needs it);
    ``params`` gets the faiss factory string."""
    faiss = _faiss()
    n, dim = vectors.shape
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
        params["factory"] = f"HNSW{params['M']},Flat"
        return index
    need = params["nlist"]
    if kind == "ivfpq":
        need = max(need, 2 ** params["bits"])
        # "np": no polysemous training (minutes, and only for Hamming filtering,
        # which the search does not use).
        factory = f"IVF{params['nlist']},PQ{params['m']}x{params['bits']}np"
    else:
        factory = f"IVF{params['nlist']},Flat"
    if n < need:
        codes = f" and {params['bits']}-bit codes" if kind == "ivfpq" else ""
        raise SearchError(
            f"{'IVF-PQ' if kind == 'ivfpq' else 'IVF'} with nlist={params['nlist']}"
            f"{codes} needs at least {need} gallery vectors to train; this gallery "
            f"has {n}. Use --kind flat (exact, fine up to about a million images)"
        )
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    if kind == "ivfpq":
        index.pq.cp.seed = seed
    index.train(vectors)
    index.nprobe = params["nprobe"]
    params["factory"] = factory
    return index


def add_to_index(target: str, embeddings: Sequence[Embeddings]) -> tuple[GalleryIndex, Rows]:
    """Append ``embeddings`` to the index folder ``target`` (ids continue from its
    item count) and rewrite it; refused, with nothing written, for another model
    or an image already in the index (:func:`~anet_tf.search.gallery.check_new_paths`).
    An IVF index keeps the lists it was trained with."""
    index = load_index(target)
    rows = gallery_rows(embeddings, index.model, f"the index {target}")
    present = set(index.paths)
    check_new_paths(rows, [p for p in rows.paths if p in present], target)
    items = dict(index.items)
    old = len(index)
    for key, values in rows.columns.items():
        # an index written without per-item probabilities: NaN (no confidence)
        if key not in items:
            items[key] = np.full((old, *values.shape[1:]), np.nan, values.dtype)
        items[key] = np.concatenate([items[key], values])
    index.index.add(rows.vectors)
    index.items = items
    index._paths = None
    index.meta["count"] = len(index)
    index.meta["sources"] = [*index.meta["sources"], *rows.sources]
    index.meta["warnings"] = [*index.meta.get("warnings", []), *rows.warnings]
    index.save(target)
    return index, rows


def read_meta(path: str) -> dict:
    """The ``index.json`` of the index folder ``path``.

    Raises:
        SearchError: the folder is missing or is not an index of this format.
    """
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise SearchError(
            f"{path} is not an anet-tf index ({META_FILE} missing); build one with "
            f"`anet-tf index build EMBEDDINGS.npz -o {path}`"
        )
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format") != FORMAT:
        raise SearchError(
            f"{meta_path}: format {meta.get('format')!r}, this anet-tf reads {FORMAT}"
        )
    return meta


def load_index(path: str) -> GalleryIndex:
    """Read an index folder written by :meth:`GalleryIndex.save`.

    Raises:
        SearchError: the folder is missing, not an index, or its files disagree.
    """
    faiss = _faiss()
    meta = read_meta(path)
    try:
        index = faiss.read_index(os.path.join(path, INDEX_FILE))
        with np.load(os.path.join(path, ITEMS_FILE), allow_pickle=False) as data:
            items = {k: data[k] for k in data.files}
    except (RuntimeError, OSError, ValueError) as exc:
        first = (
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        raise SearchError(
            f"{path}: the index is incomplete or damaged ({first}); rebuild it"
        ) from None
    if (
        index.d != meta["dim"]
        or index.ntotal != meta["count"]
        or len(items["path"]) != meta["count"]
    ):
        raise SearchError(
            f"{path}: the index files disagree ({INDEX_FILE}: {index.ntotal} x "
            f"{index.d}, {ITEMS_FILE}: {len(items['path'])} items, {META_FILE}: "
            f"{meta['count']} x {meta['dim']}); rebuild it"
        )
    items.setdefault("time", np.full(len(items["path"]), -1, np.int64))
    if meta["kind"] in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = int(meta["params"]["nprobe"])
    elif meta["kind"] == "hnsw":
        index.hnsw.efSearch = int(meta["params"]["ef_search"])
    return GalleryIndex(index, meta, items, path=os.path.abspath(path))
