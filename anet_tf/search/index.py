"""A searchable gallery in a faiss index folder: embeddings with their attributes.

``anet-tf index build EMB.npz [EMB.npz ...] -o INDEX`` writes the folder::

    INDEX/index.faiss   the faiss index (ids = item positions 0..N-1)
    INDEX/items.npz     per item: path (UTF-8), pid, camid, time, and per attribute
                        the predicted class (<a>_pred) and known class (<a>_known),
                        as class indices (-1 unknown), and the predicted class
                        probabilities (<a>_probs); a gallery of tracks also
                        track_id (UTF-8), time_last and track_length
    INDEX/index.json    format, kind, dimension, item count, the model (path,
                        fingerprint, embedding dim, attributes) and index
                        settings; "rows": "tracks" for a gallery of tracks
    INDEX/refine.npy    ivfpqr with ``refine="fp16-disk"`` only: every item's
                        vector as float16 [N, D] (row i = id i), memory-mapped

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
``ivfpqr``
    ``IVF{nlist}_HNSW32,PQ{m}x{bits}`` (optionally after OPQ) whose best
    ``k_factor`` · k per query are re-ranked on finer codes (``refine``: exact
    vectors, fp16, SQ8 or SQ4; faiss ``IndexRefine``): for galleries of 10^6-10^7
    images (m + refine bytes per image; ``docs/search.md`` has the measurements).
    ``refine="fp16-disk"`` keeps the fp16 codes out of memory: ``index.faiss``
    holds the IVF-PQ alone, and the shortlist it returns is re-ranked exactly on
    the float16 rows of ``refine.npy``, read through a read-only memory map (the
    operating system's page cache holds the rows read; :meth:`GalleryIndex.search`).

Attribute filters (``--where color=red,type=sedan``) keep the items whose predicted
(or, with ``labels="known"``, known) classes match; camera and time filters
(``--camera``, ``--not-camera``, ``--since``, ``--until``) the items of those cameras
and capture times. A filter's items are found once and kept on the index; a small
selection (:data:`EXACT_SELECTION_MAX`) is searched exactly over its own vectors,
a larger one inside the search by a faiss ``IDSelectorBitmap``, so the flat index
returns the exact top-k among the matching items, however few match; the
approximate kinds return the best matches among the probed lists or graph nodes.

An index remembers the model that embedded its gallery; a query embedded by another
model (another dimension or fingerprint) is refused with :class:`IndexMismatchError`.

Writes and reads. Every write of a folder (``index build``, ``index add``,
:meth:`GalleryIndex.save`) holds the lock file ``.INDEX.lock`` beside it (an
exclusive :class:`~anet_tf.io.FileLock`; a second writer is refused at once with
:class:`~anet_tf.io.LockHeldError`, naming the holder) and, under it, first rolls
back what an interrupted write left (:func:`~anet_tf.io.recover_folder`), then
reads the folder (``index add``), writes the new one into a staging folder beside
it and swaps it in (:func:`~anet_tf.io.replace_folder`): the old folder stays whole
until the new one is complete, whatever fails (a full disk:
:class:`GalleryDiskFullError`, exit 4) or however the writer dies. A reader takes no
lock: it reads the committed folder (:func:`~anet_tf.io.committed_folder`) through
one directory handle, so its files are of one version, and reads again if a
writer swapped the folder while it opened them.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence

import numpy as np

from anet_tf.io import FileLock
from anet_tf.io import committed_folder
from anet_tf.io import damaged
from anet_tf.io import is_disk_full
from anet_tf.io import recover_folder
from anet_tf.io import remove_path
from anet_tf.io import replace_folder
from anet_tf.io import staging_path
from anet_tf.progress import note
from anet_tf.search.embeddings import READ_ERRORS
from anet_tf.search.embeddings import Embeddings
from anet_tf.search.errors import GalleryDiskFullError
from anet_tf.search.errors import IndexMismatchError
from anet_tf.search.errors import SearchError
from anet_tf.search.errors import first_line
from anet_tf.search.errors import npz_array_problem
from anet_tf.search.gallery import KINDS
from anet_tf.search.gallery import LABEL_SOURCES
from anet_tf.search.gallery import REFINE_ON_DISK
from anet_tf.search.gallery import Gallery
from anet_tf.search.gallery import Match
from anet_tf.search.gallery import Rows
from anet_tf.search.gallery import Selection
from anet_tf.search.gallery import check_new_paths
from anet_tf.search.gallery import check_same_model
from anet_tf.search.gallery import gallery_rows
from anet_tf.search.gallery import index_params
from anet_tf.search.gallery import parse_where

__all__ = [
    "FORMAT",
    "KINDS",
    "LABEL_SOURCES",
    "GalleryDiskFullError",
    "GalleryIndex",
    "IndexMismatchError",
    "Match",
    "add_to_index",
    "build_index",
    "check_index_target",
    "check_same_model",
    "load_index",
    "lock_path",
    "parse_where",
    "search_threads",
    "writer_lock",
]

FORMAT = "anet-tf-index/1"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.npz"
META_FILE = "index.json"
REFINE_FILE = "refine.npy"
# refine.npy is written and copied this many bytes at a time (``index add``
# copies the old rows into the new folder without reading them all at once).
REFINE_CHUNK_BYTES = 64 * 2**20
# What a writer refused for a held lock is told to do.
LOCK_ADVICE = (
    "wait for the other `index add` or `index build` to finish, then run this again"
)
# How many times a reader opens the folder again when a writer swapped it meanwhile.
READ_TRIES = 10


def _faiss():
    try:
        import faiss
    except ImportError:
        raise SearchError(
            "the gallery index needs faiss: pip install 'anet-tf[search]' (faiss-cpu)"
        ) from None
    return faiss


# -------------------------------------------------------------------------- index

# A filter keeping at most this many items is searched exactly over their own
# vectors instead of through the index with a selector (IVF, IVF-PQ, HNSW): exact,
# and faster than IVF256 at nprobe 32 with a selector up to about this size at
# 10^5 (benchmarks/search_filters.py, docs/search.md#filters-and-speed).
EXACT_SELECTION_MAX = 4096
# The same for a flat index, whose selector search still scans every item: the
# exact search of the selection was 2-6x faster at every size measured (up to
# 32,000 of 10^5); the bound keeps the copy of their vectors small (64 MB at 512-d).
EXACT_SELECTION_MAX_FLAT = 32768
# How many filters' selections an index keeps for its next searches, and the
# bytes their masks, ids and vectors may take together (the oldest go first).
SELECTIONS_KEPT = 64
SELECTIONS_BYTES = 512 * 2**20


class _Selected:
    """What one filter keeps of a faiss gallery, made once and kept: the mask,
    the item ids, and, made on first use, the ``IDSelectorBitmap`` over them (with
    the bits it reads through a pointer) or a flat index of their vectors."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.ids = np.flatnonzero(mask)
        self._bits: np.ndarray | None = None
        self._selector = None
        self._exact = None

    @property
    def nbytes(self) -> int:
        held = self.mask.nbytes + self.ids.nbytes
        if self._bits is not None:
            held += self._bits.nbytes
        if self._exact is not None:
            held += self._exact.ntotal * self._exact.d * 4
        return held

    def selector(self, faiss):
        if self._selector is None:
            self._bits = np.packbits(self.mask, bitorder="little")
            self._selector = faiss.IDSelectorBitmap(
                len(self.mask), faiss.swig_ptr(self._bits)
            )
        return self._selector

    def search_exact(self, faiss, index, queries, top_k, exclude, scores, ids) -> None:
        """The exact top-k among the selected items (an inner product with each
        of their vectors), less the items of ``exclude`` (per query)."""
        if self._exact is None:
            self._exact = faiss.IndexFlatIP(index.dim)
            self._exact.add(index.stored_vectors(faiss, self.ids))
        extra = 0 if exclude is None else max((len(e) for e in exclude), default=0)
        k = min(top_k + extra, len(self.ids))
        d, i = self._exact.search(queries, k)
        found = i >= 0
        items = np.where(found, self.ids[np.maximum(i, 0)], -1)
        d = np.where(found, d, -np.inf)
        if exclude is None:
            scores[:, :k], ids[:, :k] = d[:, :top_k], items[:, :top_k]
            return
        for r in range(len(queries)):
            keep = found[r] & ~np.isin(items[r], np.asarray(exclude[r], np.int64))
            got = items[r][keep][:top_k]
            scores[r, : len(got)], ids[r, : len(got)] = d[r][keep][:top_k], got


def _shortlist_params(faiss, params: dict, selector, nprobe: int | None):
    """Search parameters of an ivfpqr's IVF-PQ: ``nprobe`` lists (default the
    index's) found by the HNSW quantizer with efSearch max(ef_search, nprobe),
    items outside ``selector`` (None: none) skipped."""
    nprobe = int(nprobe or params["nprobe"])
    quantizer = faiss.SearchParametersHNSW(efSearch=max(params["ef_search"], nprobe))
    base = faiss.SearchParametersIVF(
        sel=selector, nprobe=nprobe, quantizer_params=quantizer
    )
    base._keep = quantizer  # the C++ parameters point at it
    return base


def _refine_params(faiss, params: dict, selector, nprobe: int | None):
    """Search parameters of an ivfpqr index: the IVF-PQ's
    (:func:`_shortlist_params`), then the best ``k_factor`` * k of its results
    re-ranked on the refine codes."""
    base = _shortlist_params(faiss, params, selector, nprobe)
    out = faiss.IndexRefineSearchParameters(
        k_factor=float(params["k_factor"]), base_index_params=base
    )
    out._keep = base  # the C++ parameters point at it
    return out


def _shortlist_size(params: dict, k: int) -> int:
    """How many of the IVF-PQ's best items are re-ranked for a top-k: k_factor *
    k, as faiss ``IndexRefine`` takes them."""
    return max(k, int(k * float(params["k_factor"])))


def _vectors(faiss, index, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of items ``ids`` (float32 [len(ids), D]); an IVF
    index gets a direct map (8 bytes an item) on first use; IVF-PQ gives its
    decoded vectors, whose inner products are its own scores."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.no():
        ivf.make_direct_map()
    vectors = index.reconstruct_batch(ids.astype(np.int64))
    return np.ascontiguousarray(vectors, np.float32)


class GalleryIndex(Gallery):
    """A faiss index plus what each item is (path, ids, attributes) and which model
    embedded it. Built by :func:`build_index`, read by :func:`load_index`.
    ``prefetch``: an on-disk refine asks for its shortlist's rows at once
    (:meth:`prefetch_refine_rows`).

    Args:
        index: the faiss index; item ``i`` has faiss id ``i``.
        meta: the ``index.json`` dict.
        items: the ``items.npz`` arrays.
        refine: ivfpqr with the refine on disk (:data:`REFINE_ON_DISK`): the
            items' float16 vectors [N, D] (row i = item i), the memory map of
            ``refine.npy`` of a saved index; None for the other kinds.
    """

    def __init__(
        self,
        index,
        meta: dict,
        items: dict[str, np.ndarray],
        path: str | None = None,
        refine: np.ndarray | None = None,
    ):
        self.index = index
        self.path = path
        self.meta = meta
        self.items = items
        # the refine rows in id order: one array (a memory map once saved or
        # loaded), more after `add_vectors` until the next save
        self.refine_parts: list[np.ndarray] = [] if refine is None else [refine]
        self._paths: list[str] | None = None
        flat = meta.get("kind") == "flat"
        self.exact_max = EXACT_SELECTION_MAX_FLAT if flat else EXACT_SELECTION_MAX
        self._selections: dict[Selection, _Selected] = {}
        self._recorded: dict[str, bool] = {}

    prefetch = True

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def refine_on_disk(self) -> bool:
        """Whether the refine codes are ``refine.npy`` rows, not in the faiss index."""
        return self.meta.get("params", {}).get("refine") == REFINE_ON_DISK

    def add_vectors(self, vectors: np.ndarray) -> None:
        """Append ``vectors`` (float32 [n, D]) as items len(self), len(self)+1, ...
        to the faiss index (and to the refine rows kept on disk)."""
        self.index.add(vectors)
        if self.refine_on_disk:
            self.refine_parts.append(np.asarray(vectors, np.float16))

    def refine_rows(self, ids: np.ndarray) -> np.ndarray:
        """The float16 refine rows of items ``ids`` (an on-disk refine)."""
        ids = np.asarray(ids, np.int64)
        if not self.refine_parts:
            raise SearchError(
                f"{self.where}: its refine rows ({REFINE_FILE}) are not open"
            )
        if len(self.refine_parts) == 1:
            return np.asarray(self.refine_parts[0][ids])
        out = np.empty((len(ids), self.dim), np.float16)
        start = 0
        for part in self.refine_parts:
            inside = (ids >= start) & (ids < start + len(part))
            out[inside] = part[ids[inside] - start]
            start += len(part)
        return out

    def prefetch_refine_rows(self, ids: np.ndarray) -> None:
        """Ask the kernel to read the pages of the refine rows ``ids`` (sorted)
        of ``refine.npy`` all at once (``madvise(MADV_WILLNEED)`` on the memory
        map), so rows not in the page cache are read in parallel rather than one
        page fault after another (off a cold cache many times faster, at some
        cost where they are cached: measured in
        docs/search.md#the-refine-on-disk-fp16-disk). Off where
        :attr:`prefetch` is False."""
        if not self.prefetch:
            return
        start = 0
        for part in self.refine_parts:
            inside = ids[(ids >= start) & (ids < start + len(part))] - start
            start += len(part)
            file_map = getattr(part, "_mmap", None)  # np.memmap's mmap.mmap
            if file_map is None or not len(inside) or not hasattr(file_map, "madvise"):
                continue
            row = part.itemsize * part.shape[1]
            first = part.offset % mmap.ALLOCATIONGRANULARITY + inside * row
            pages = first - first % mmap.PAGESIZE
            for page, end in zip(pages.tolist(), (first + row).tolist(), strict=True):
                file_map.madvise(mmap.MADV_WILLNEED, page, end - page)

    def stored_vectors(self, faiss, ids: np.ndarray) -> np.ndarray:
        """The vectors the index scores items ``ids`` by (float32 [len(ids), D]):
        the refine codes' where it has them, else :func:`_vectors`."""
        if self.refine_on_disk:
            return self.refine_rows(ids).astype(np.float32)
        return _vectors(faiss, self.index, ids)

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [p.decode("utf-8") for p in self.items["path"].tolist()]
        return self._paths

    # --- filters
    def selection_mask(self, chosen: Selection) -> np.ndarray | None:
        """The items ``chosen`` keeps (bool [N]), or None where it keeps all
        (no condition): one vectorised pass over the class, camera and time
        columns; an unknown camera or time (-1) never matches a condition on it."""
        if not chosen:
            return None
        mask = np.ones(len(self), bool)
        for column, allowed in chosen.codes:
            mask &= np.isin(self.items[column], allowed)
        camid = self.items["camid"]
        kept = chosen.kept_cameras
        if kept is not None:
            mask &= np.isin(camid, kept)
        elif chosen.not_cameras:
            mask &= (camid >= 0) & ~np.isin(camid, chosen.not_cameras)
        if chosen.on_time:
            when = self.items["time"]
            last = self.items["time_last"] if chosen.spans else when
            mask &= (when >= 0) & (last >= max(0, chosen.since or 0))
            if chosen.until is not None:
                mask &= when < chosen.until
        return mask

    def filter_mask(
        self, where: dict[str, list[str]], labels: str = "predicted", **camera_time
    ) -> np.ndarray | None:
        """The items that satisfy ``where`` and the camera and time conditions
        (``cameras``, ``not_cameras``, ``since``, ``until`` of :meth:`search`)
        (bool [N]), or None for no filter.

        Raises:
            SearchError: an attribute or class the model does not have, listing
                the valid ones; an unknown label source; a bad camera or time.
        """
        return self.selection_mask(self.selection(where, labels, **camera_time))

    def records(self, column: str) -> bool:
        """Whether any item has a known ``column`` (camid, time): cached."""
        if column not in self._recorded:
            values = self.items.get(column)
            self._recorded[column] = values is not None and bool((values >= 0).any())
        return self._recorded[column]

    def _selected(self, chosen: Selection) -> _Selected:
        """What ``chosen`` keeps, made on its first search and kept for the next
        ones (the :data:`SELECTIONS_KEPT` latest filters, within
        :data:`SELECTIONS_BYTES`)."""
        got = self._selections.pop(chosen, None)
        if got is None:
            got = _Selected(self.selection_mask(chosen))
        self._selections[chosen] = got
        held = sum(s.nbytes for s in self._selections.values())
        while len(self._selections) > 1 and (
            len(self._selections) > SELECTIONS_KEPT or held > SELECTIONS_BYTES
        ):
            held -= self._selections.pop(next(iter(self._selections))).nbytes
        return got

    def forget_selections(self) -> None:
        """Drop what filters kept (after the items or the index changed)."""
        self._selections.clear()
        self._recorded.clear()

    # --- search
    def search(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        *,
        where: dict[str, list[str]] | None = None,
        labels: str = "predicted",
        cameras=None,
        not_cameras=None,
        since: int | str | None = None,
        until: int | str | None = None,
        query_cameras: Sequence[int] | None = None,
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
            cameras: keep the items of these cameras (ids, or text such as
                ``"3,7"`` or ``"3-7"``: :func:`~anet_tf.search.gallery.parse_cameras`).
            not_cameras: leave out the items of these cameras.
            since, until: keep the items captured in [since, until): seconds since
                1970-01-01 UTC, or ISO 8601 text
                (:func:`~anet_tf.search.sources.parse_time`).
            query_cameras: per query its camera id (-1 unknown): leave out the
                items of the query's own camera (as the re-id protocol does).
                Items of an unknown camera or time never match a condition on it.
            nprobe: IVF lists scanned per query (ivf, ivfpq; default from the
                index), candidates kept per query (hnsw's ef_search).
            exclude: per query, item ids to leave out (e.g. the same vehicle seen by
                the same camera, which the re-id protocol ignores).
            threads: faiss (OpenMP) threads for this call; None keeps faiss's
                setting (all cores). Batch-1 queries are fastest with 1 thread
                on 2 cores (``benchmarks/search.py``). faiss's thread count is
                process-wide: it is set for the call and restored after it.

        A filter's items are found once (a vectorised pass over the columns) and
        kept on the index for later calls with the same filter. A filter that
        keeps at most :attr:`exact_max` items is searched exactly over their own
        vectors (any kind: the exact top-k); a larger one through the index with
        a faiss ``IDSelectorBitmap``. :attr:`exact_max` is
        :data:`EXACT_SELECTION_MAX_FLAT` for a flat index (whose selector search
        scans every item), else :data:`EXACT_SELECTION_MAX`.

        Returns:
            (scores float32 [Q, top_k], ids int64 [Q, top_k]), best first; where
            fewer items qualify, the rows end with score -inf and id -1.

        Raises:
            SearchError: a bad filter, camera or time; a camera or time condition
                on a gallery that records none.
        """
        faiss = _faiss()
        filters = dict(cameras=cameras, not_cameras=not_cameras, since=since, until=until)
        queries, groups, scores, ids = self.prepare_search(
            queries, top_k, where, labels, filters, query_cameras
        )
        if len(self) == 0 or len(queries) == 0:
            return scores, ids
        previous = faiss.omp_get_max_threads()
        if threads:
            faiss.omp_set_num_threads(threads)
        try:
            for rows, group in groups:
                drop = None if exclude is None else [exclude[r] for r in rows]
                scores[rows], ids[rows] = self._search_group(
                    faiss, queries[rows], top_k, group, nprobe, drop
                )
        finally:
            faiss.omp_set_num_threads(previous)
        return scores, ids

    def _search_group(self, faiss, queries, top_k, chosen, nprobe, exclude):
        """(scores, ids) of ``queries`` searched with one selection."""
        scores = np.full((len(queries), top_k), -np.inf, np.float32)
        ids = np.full((len(queries), top_k), -1, np.int64)
        if chosen.nothing:
            return scores, ids
        selected = self._selected(chosen) if chosen else None
        if selected is not None and len(selected.ids) <= self.exact_max:
            if len(selected.ids):
                selected.search_exact(faiss, self, queries, top_k, exclude, scores, ids)
            return scores, ids
        whole = selected is None or len(selected.ids) == len(self)
        if exclude is None:
            selector = None if whole else selected.selector(faiss)
            self._search_into(faiss, queries, top_k, selector, nprobe, scores, ids)
            return scores, ids
        for i in range(len(queries)):
            row_mask = np.ones(len(self), bool) if whole else selected.mask.copy()
            drop = np.asarray(exclude[i], np.int64)
            row_mask[drop[(drop >= 0) & (drop < len(self))]] = False
            # `bits` must outlive the search: the selector reads it through a pointer.
            bits = np.packbits(row_mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(row_mask), faiss.swig_ptr(bits))
            self._search_into(
                faiss,
                queries[i : i + 1],
                top_k,
                selector,
                nprobe,
                scores[i : i + 1],
                ids[i : i + 1],
            )
        return scores, ids

    def _search_into(
        self, faiss, queries, top_k, selector, nprobe, scores, ids
    ) -> None:
        k = min(top_k, len(self))
        if self.refine_on_disk:
            self._search_refined_on_disk(
                faiss, queries, k, selector, nprobe, scores, ids
            )
            return
        if self.kind in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF(
                sel=selector, nprobe=int(nprobe or self.meta["params"]["nprobe"])
            )
        elif self.kind == "ivfpqr":
            params = _refine_params(faiss, self.meta["params"], selector, nprobe)
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

    def _search_refined_on_disk(
        self, faiss, queries, k, selector, nprobe, scores, ids
    ) -> None:
        """What faiss ``IndexRefine`` with fp16 codes does, with the codes on
        disk: the IVF-PQ's best :func:`_shortlist_size` items of each query
        (within ``selector``), re-ranked by their exact inner product with the
        query's float16 rows of ``refine.npy`` (read in file order)."""
        params = self.meta["params"]
        shortlist_params = _shortlist_params(faiss, params, selector, nprobe)
        _, shortlist = self.index.search(
            queries, _shortlist_size(params, k), params=shortlist_params
        )
        for r, query in enumerate(queries):
            found = np.sort(shortlist[r][shortlist[r] >= 0])
            if not len(found):
                continue
            self.prefetch_refine_rows(found)
            s = self.refine_rows(found).astype(np.float32) @ query
            best = np.argsort(-s, kind="stable")[:k]
            scores[r, : len(best)], ids[r, : len(best)] = s[best], found[best]

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
        """Write the index folder ``out_dir`` (an existing index there is replaced)
        under its writer's lock (:func:`writer_lock`): the files are written into a
        staging folder beside it, which is swapped in only when complete
        (:func:`~anet_tf.io.replace_folder`); on any failure the staging folder is
        removed and the old folder stays as it was.

        Raises:
            SearchError: ``out_dir`` cannot hold an index (:func:`check_index_target`).
            LockHeldError: another process is writing ``out_dir``.
            GalleryDiskFullError: the disk filled up (the old folder is kept).
        """
        faiss = _faiss()
        out_dir = os.path.abspath(out_dir)
        check_index_target(out_dir)
        try:
            with writer_lock(out_dir):
                recover_folder(out_dir)
                self._write_folder(faiss, out_dir)
        except Exception as exc:
            if is_disk_full(exc) and not isinstance(exc, GalleryDiskFullError):
                raise _disk_full(out_dir) from None
            raise
        self.path = out_dir
        return out_dir

    def _write_folder(self, faiss, out_dir: str) -> None:
        staging = staging_path(out_dir)
        remove_path(staging)  # an earlier process of this pid left it
        os.makedirs(staging)  # umask permissions (mkdtemp's 0700 would stay on it)
        try:
            faiss.write_index(self.index, os.path.join(staging, INDEX_FILE))
            with open(os.path.join(staging, ITEMS_FILE), "wb") as fh:
                np.savez(fh, **self.items)
            if self.refine_on_disk:
                with open(os.path.join(staging, REFINE_FILE), "wb") as fh:
                    _write_refine_header(fh, len(self), self.dim)
                    for part in self.refine_parts:
                        _write_refine_rows(fh, part)
            with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as fh:
                json.dump(self.meta, fh, indent=2)
            replace_folder(staging, out_dir)
            if self.refine_on_disk:  # the rows written, not a copy in memory
                with open(os.path.join(out_dir, REFINE_FILE), "rb") as fh:
                    self.refine_parts = [
                        _map_refine(out_dir, out_dir, fh, len(self), self.dim)
                    ]
        except BaseException:
            remove_path(staging)
            with contextlib.suppress(OSError):
                recover_folder(out_dir)  # a failure between replace_folder's renames
            raise


def _disk_full(out_dir: str) -> GalleryDiskFullError:
    kept = os.path.isfile(os.path.join(committed_folder(out_dir), META_FILE))
    try:
        free = f" ({shutil.disk_usage(os.path.dirname(out_dir)).free / 2**20:.1f} MiB free)"
    except OSError:
        free = ""
    outcome = "the old gallery is kept as it was" if kept else "no gallery was written"
    return GalleryDiskFullError(
        f"{out_dir}: no space left on device while writing the gallery{free}; "
        f"{outcome}; free some space and run this again"
    )


def lock_path(target: str) -> str:
    """The lock file of the index folder ``target``: ``.NAME.lock`` beside it (not
    inside: the folder is replaced whole)."""
    parent, name = os.path.split(os.path.abspath(target))
    return os.path.join(parent, f".{name}.lock")


_held = threading.local()


@contextlib.contextmanager
def writer_lock(target: str):
    """Hold the writer's lock of the index folder ``target`` (:func:`lock_path`)
    for the block; refused at once where another process (or thread) holds it. A
    block inside another of the same thread for the same folder holds it already.

    Raises:
        LockHeldError: naming ``target``, the holder and what to do (exit 4).
    """
    key = lock_path(target)
    held = _held.__dict__.setdefault("paths", set())
    if key in held:
        yield
        return
    lock = FileLock(key, what=target, advice=LOCK_ADVICE).acquire()
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        lock.release()


def search_threads(num_queries: int) -> int:
    """faiss threads for a search: 1 for a few queries (faiss then scans the
    gallery once per query, and a second OpenMP thread made a batch-1 query 2x
    slower on 2 cores, 8x on a busy machine: ``benchmarks/search.py``), all cores
    (0) for a batch of 20 or more, which faiss runs as one matrix product."""
    return 1 if num_queries < 20 else 0


# An index build or add of this many rows or more says what it is doing (reading,
# training, adding: stdout, one line each); a smaller one takes a moment and says
# only its result.
INDEX_NOTE_ROWS = 100_000


def _note(rows: int, text: str) -> None:
    if rows >= INDEX_NOTE_ROWS:
        note(f"[anet-tf] index: {text}")


def check_index_target(out_dir: str) -> None:
    """Raise :class:`SearchError` (one line) unless ``out_dir`` can receive an index:
    a new path, an empty folder or an existing index (replaced). Called before any
    work is spent, and again when saving."""
    path = os.path.abspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise SearchError(
            f"-o {out_dir}: exists and is a file; an index is a folder, give a new path"
        )
    if (
        os.path.isdir(path)
        and not os.path.isfile(os.path.join(path, META_FILE))
        and os.listdir(path)
    ):
        raise SearchError(
            f"-o {out_dir}: exists and is not an anet-tf index; give a new folder"
        )
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
    refine: str | None = None,
    k_factor: int | None = None,
    opq: int | None = None,
    seed: int = 0,
) -> GalleryIndex:
    """A gallery index of one or more embeddings files of the same model.

    Args:
        embeddings: the galleries to index, in order (item ids follow it).
        kind: flat (exact) | ivf | ivfpq | hnsw (approximate; see the module
            docstring).
        nlist, m, bits, nprobe: IVF(-PQ) settings; M: HNSW links per node;
            refine, k_factor, opq: ivfpqr's re-ranking codes, shortlist factor
            and OPQ dims; None = the defaults of
            :func:`anet_tf.search.gallery.index_params`.
        seed: seed of the IVF k-means.

    Raises:
        IndexMismatchError: the files come from different models.
        SearchError: no embeddings; too few vectors to train IVF.
    """
    rows = gallery_rows(embeddings)
    n, dim = rows.vectors.shape
    _note(n, f"read {n} rows ({dim}-d) from {len(embeddings)} embeddings file(s)")
    params = index_params(
        kind,
        n,
        dim,
        nlist=nlist,
        m=m,
        bits=bits,
        nprobe=nprobe,
        M=M,
        refine=refine,
        k_factor=k_factor,
        opq=opq,
    )
    index = _new_faiss_index(kind, params, rows.vectors, seed)
    _note(n, f"adding {n} rows ({kind}) ...")
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
        **({"rows": "tracks"} if rows.tracks else {}),
    }
    refine = None
    if params.get("refine") == REFINE_ON_DISK:
        refine = rows.vectors.astype(np.float16)  # until saved: refine.npy
    return GalleryIndex(index, meta, dict(rows.columns), refine=refine)


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
    if kind == "ivfpqr":
        return _new_ivfpqr(faiss, params, vectors, seed)
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
    _note(n, f"training {factory} on {n} vectors ...")
    index.train(vectors)
    index.nprobe = params["nprobe"]
    params["factory"] = factory
    return index


# ivfpqr trains on a sample of this many vectors per list (at least 65,536).
IVFPQR_TRAIN_PER_LIST = 50
# ... and above this many lists finds them by two-level k-means (faiss.contrib).
IVFPQR_TWO_LEVEL_NLIST = 1024
_REFINE_FACTORY = {
    "flat": "RFlat",
    "fp16": "Refine(SQfp16)",
    "sq8": "Refine(SQ8)",
    "sq4": "Refine(SQ4)",
}


def _new_ivfpqr(faiss, params: dict, vectors: np.ndarray, seed: int):
    """``[OPQ{m}_{opq},]IVF{nlist}_HNSW32,PQ{m}x{bits}np`` whose shortlist is
    re-ranked on ``params["refine"]`` codes (faiss ``IndexRefine``; for
    :data:`REFINE_ON_DISK` the IVF-PQ alone, re-ranked by
    :meth:`GalleryIndex.search` on ``refine.npy``), trained on a sample of
    :data:`IVFPQR_TRAIN_PER_LIST` vectors a list: the lists by spherical
    k-means (two-level, as ``faiss.contrib.clustering`` does, for many lists),
    then the OPQ rotation, PQ codebooks and refine codes."""
    from faiss.contrib.clustering import two_level_clustering

    n, dim = vectors.shape
    nlist, m, bits = params["nlist"], params["m"], params["bits"]
    need = max(nlist, 2**bits)
    if n < need:
        raise SearchError(
            f"ivfpqr with nlist={nlist} and {bits}-bit codes needs at least {need} "
            f"gallery vectors to train; this gallery has {n}. Use --kind flat "
            f"(exact, fine up to about a million images)"
        )
    opq = f"OPQ{m}_{params['opq']}," if params["opq"] else ""
    on_disk = params["refine"] == REFINE_ON_DISK
    refine = "" if on_disk else f",{_REFINE_FACTORY[params['refine']]}"
    factory = f"{opq}IVF{nlist}_HNSW32,PQ{m}x{bits}np{refine}"
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    take = min(n, max(65536, IVFPQR_TRAIN_PER_LIST * nlist))
    rng = np.random.default_rng(seed)
    sample = vectors if take == n else vectors[np.sort(rng.choice(n, take, False))]
    _note(n, f"training {factory} on {take} of {n} vectors ...")
    xt = np.ascontiguousarray(sample, np.float32)
    base = faiss.downcast_index(index if on_disk else index.base_index)
    if isinstance(base, faiss.IndexPreTransform):
        for i in range(base.chain.size()):
            base.chain.at(i).train(xt)
            xt = base.chain.at(i).apply(xt)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.pq.cp.seed = seed
    if nlist > IVFPQR_TWO_LEVEL_NLIST:
        centroids, _ = two_level_clustering(
            xt,
            int(np.sqrt(nlist)),
            nlist,
            clustering_niter=20,
            spherical=True,
            seed=seed,
        )
    else:
        km = faiss.Kmeans(xt.shape[1], nlist, niter=20, seed=seed, spherical=True)
        km.train(xt)
        centroids = km.centroids
    ivf.quantizer.add(np.ascontiguousarray(centroids, np.float32))
    index.train(sample)  # the quantizer holds nlist centroids: faiss keeps them
    ivf.nprobe = params["nprobe"]
    params["factory"] = factory
    return index


def add_to_index(
    target: str, embeddings: Sequence[Embeddings]
) -> tuple[GalleryIndex, Rows]:
    """Append ``embeddings`` to the index folder ``target`` (ids continue from its
    item count) and rewrite it; refused, with nothing written, for another model
    or an image already in the index (:func:`~anet_tf.search.gallery.check_new_paths`).
    An IVF index keeps the lists it was trained with.

    The folder is read, checked and rewritten under its writer's lock
    (:func:`writer_lock`), so two adds at once never lose one: the second waits
    for nothing and is refused (:class:`~anet_tf.io.LockHeldError`), or starts
    after the first and reads its result."""
    read_meta(target)  # not an index: refused before a lock file is made beside it
    with writer_lock(target):
        recover_folder(target)
        index = load_index(target)
        rows = gallery_rows(
            embeddings, index.model, f"the index {target}", index.holds_tracks
        )
        present = set(index.paths)
        check_new_paths(rows, [p for p in rows.paths if p in present], target)
        items = dict(index.items)
        old = len(index)
        for key, values in rows.columns.items():
            # an index written without per-item probabilities: NaN (no confidence)
            if key not in items:
                items[key] = np.full((old, *values.shape[1:]), np.nan, values.dtype)
            items[key] = np.concatenate([items[key], values])
        _note(old + len(rows), f"adding {len(rows)} rows to the {old} of {target} ...")
        index.add_vectors(rows.vectors)
        index.items = items
        index._paths = None
        index.forget_selections()
        index.meta["count"] = len(index)
        index.meta["sources"] = [*index.meta["sources"], *rows.sources]
        index.meta["warnings"] = [*index.meta.get("warnings", []), *rows.warnings]
        index.save(target)
    return index, rows


def read_meta(path: str) -> dict:
    """The ``index.json`` of the index folder ``path`` (its committed version).

    Raises:
        SearchError: the folder is missing, is not an index of this format, or
            its ``index.json`` is damaged (naming the file).
    """
    with _committed_files(path, (META_FILE,)) as (folder, files):
        return _parse_meta(path, folder, files[META_FILE])


def load_index(path: str) -> GalleryIndex:
    """Read an index folder written by :meth:`GalleryIndex.save`: its committed
    version (:func:`~anet_tf.io.committed_folder`), its files of one version
    (see the module docstring).

    Raises:
        SearchError: the folder is missing or not an index; a file of it is
            missing, damaged (naming the file) or disagrees with the others.
    """
    faiss = _faiss()
    names = (META_FILE, INDEX_FILE, ITEMS_FILE)
    with _committed_files(path, names, optional=(REFINE_FILE,)) as (folder, files):
        meta = _parse_meta(path, folder, files[META_FILE])
        index = _parse_faiss(faiss, path, folder, files[INDEX_FILE])
        items = _parse_items(path, folder, files[ITEMS_FILE])
        refine = None
        if meta["params"].get("refine") == REFINE_ON_DISK:
            refine = _map_refine(
                path, folder, files.get(REFINE_FILE), meta["count"], meta["dim"]
            )
    if (
        index.d != meta["dim"]
        or index.ntotal != meta["count"]
        or len(items["path"]) != meta["count"]
    ):
        raise SearchError(
            f"{path}: the index files disagree ({INDEX_FILE}: {index.ntotal} x "
            f"{index.d}, {ITEMS_FILE}: {len(items['path'])} items, {META_FILE}: "
            f"{meta['count']} x {meta['dim']}); {_rebuild(path)}"
        )
    items.setdefault("time", np.full(len(items["path"]), -1, np.int64))
    if meta["kind"] in ("ivf", "ivfpq", "ivfpqr"):
        faiss.extract_index_ivf(index).nprobe = int(meta["params"]["nprobe"])
    elif meta["kind"] == "hnsw":
        index.hnsw.efSearch = int(meta["params"]["ef_search"])
    return GalleryIndex(index, meta, items, path=os.path.abspath(path), refine=refine)


# ----------------------------------------------------------------- reading files


def _rebuild(path: str) -> str:
    return f"rebuild it: anet-tf index build EMBEDDINGS.npz -o {path}"


def _not_an_index(path: str) -> SearchError:
    return SearchError(
        f"{path} is not an anet-tf index ({META_FILE} missing); build one with "
        f"`anet-tf index build EMBEDDINGS.npz -o {path}`"
    )


@contextlib.contextmanager
def _committed_files(path: str, names: Sequence[str], optional: Sequence[str] = ()):
    """``(folder, {name: open binary file})`` of the committed version of the index
    folder ``path``: every file opened through one handle of the folder, so all of
    one version; opened again (up to :data:`READ_TRIES` times) where a file
    vanished because a writer swapped the folder meanwhile. A file of ``optional``
    that the folder lacks is not in the dict."""
    for attempt in range(READ_TRIES):
        if attempt:
            time.sleep(0.005 * attempt)
        folder = committed_folder(path)
        try:
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if committed_folder(path) == folder and not os.path.lexists(folder):
                raise _not_an_index(path) from None
            continue  # swapped between the look and the open
        except NotADirectoryError:
            raise _not_an_index(path) from None
        files: dict = {}
        try:
            missing = _open_all(dir_fd, names, files)
            if missing is None:
                for name in optional:
                    _open_all(dir_fd, (name,), files)
                if set(optional) <= set(files) or not _swapped(path, folder, dir_fd):
                    yield folder, files
                    return
                continue
            if not _swapped(path, folder, dir_fd):
                if missing == META_FILE:
                    raise _not_an_index(path)
                raise SearchError(
                    f"{os.path.join(folder, missing)} is missing: the index is "
                    f"incomplete; {_rebuild(path)}"
                )
        finally:
            for fh in files.values():
                fh.close()
            os.close(dir_fd)
    raise SearchError(
        f"{path}: the index was replaced {READ_TRIES} times while it was read "
        f"(another process is writing it); run this again"
    )


def _open_all(dir_fd: int, names: Sequence[str], files: dict) -> str | None:
    """Open ``names`` in the folder ``dir_fd`` into ``files``; the first missing
    one, or None."""
    for name in names:
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
        except FileNotFoundError:
            return name
        files[name] = os.fdopen(fd, "rb")
    return None


def _swapped(path: str, folder: str, dir_fd: int) -> bool:
    """Whether the committed folder of ``path`` is no longer the folder open as
    ``dir_fd`` (a writer replaced it)."""
    if committed_folder(path) != folder:
        return True
    try:
        now = os.stat(folder)
    except OSError:
        return True
    opened = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)


_META_KEYS = ("format", "kind", "dim", "count", "params", "model", "sources")


def _parse_meta(path: str, folder: str, fh) -> dict:
    file = os.path.join(folder, META_FILE)
    try:
        meta = json.loads(fh.read().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise _damaged(
            path,
            file,
            f"not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from None
    except UnicodeDecodeError as exc:
        raise _damaged(path, file, f"not UTF-8 text at byte {exc.start}") from None
    if not isinstance(meta, dict):
        raise _damaged(path, file, f"a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise SearchError(
            f"{file}: format {meta.get('format')!r}, this anet-tf reads {FORMAT}"
        )
    absent = [k for k in _META_KEYS if k not in meta]
    if absent:
        raise _damaged(path, file, f"no {', '.join(map(repr, absent))}")
    return meta


def _parse_faiss(faiss, path: str, folder: str, fh):
    try:
        return faiss.read_index(faiss.PyCallbackIOReader(fh.read))
    except (RuntimeError, MemoryError) as exc:
        text = " ".join(str(exc).split())
        if "read error" in text:
            why = "truncated: the file ends before the index does"
        else:
            found = re.search(r"\.(?:cpp|h):\d+: (.*)$", text)
            why = f"not a faiss index: {found.group(1) if found else text}"
        raise _damaged(path, os.path.join(folder, INDEX_FILE), why) from None


_ITEMS_ERRORS = READ_ERRORS


def _parse_items(path: str, folder: str, fh) -> dict[str, np.ndarray]:
    file = os.path.join(folder, ITEMS_FILE)
    try:
        data = np.load(fh, allow_pickle=False)
    except _ITEMS_ERRORS as exc:
        raise _damaged(
            path, file, f"not a NumPy .npz archive: {first_line(exc)}"
        ) from None
    if not hasattr(data, "files"):
        raise _damaged(path, file, "a single .npy array, not an .npz archive")
    items = {}
    with data:
        for key in data.files:
            try:
                items[key] = data[key]
            except _ITEMS_ERRORS as exc:
                raise _damaged(path, file, npz_array_problem(key, exc)) from None
    for key in ("path", "pid", "camid"):
        if key not in items:
            raise _damaged(path, file, f"no {key!r} array")
    return items


def _write_refine_header(fh, count: int, dim: int) -> None:
    """The ``.npy`` header of ``refine.npy``: float16 [count, dim], C order."""
    np.lib.format.write_array_header_1_0(
        fh, {"descr": "<f2", "fortran_order": False, "shape": (int(count), int(dim))}
    )


def _write_refine_rows(fh, rows: np.ndarray) -> None:
    """Append ``rows`` (a memory map too) to ``refine.npy`` as float16, a few
    :data:`REFINE_CHUNK_BYTES` at a time (written, not mapped: a full disk is an
    ``OSError``, not a crash)."""
    step = max(1, REFINE_CHUNK_BYTES // max(1, 2 * rows.shape[1]))
    for start in range(0, len(rows), step):
        fh.write(np.ascontiguousarray(rows[start : start + step], "<f2").tobytes())


def _map_refine(path: str, folder: str, fh, count: int, dim: int) -> np.ndarray:
    """The rows of ``refine.npy`` (open as ``fh``, None: missing) as a read-only
    memory map, float16 [count, dim].

    Raises:
        SearchError: the file is missing, not a float16 [count, dim] ``.npy``,
            or shorter or longer than its rows (naming it).
    """
    file = os.path.join(folder, REFINE_FILE)
    if fh is None:
        raise SearchError(
            f"{file} is missing: the index (ivfpqr, refine {REFINE_ON_DISK}) is "
            f"incomplete; {_rebuild(path)}"
        )
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        version = np.lib.format.read_magic(fh)
        if version not in readers:
            raise ValueError(f".npy format version {version}")
        shape, fortran, dtype = readers[version](fh)
    except (ValueError, OSError, EOFError) as exc:
        raise _damaged(
            path, file, f"not a NumPy .npy array: {first_line(exc)}"
        ) from None
    want = (int(count), int(dim))
    if dtype != np.dtype("<f2") or fortran or tuple(shape) != want:
        raise _damaged(
            path,
            file,
            f"holds {dtype} {tuple(shape)}, not float16 {want} (a row per item)",
        )
    offset = fh.tell()
    need = offset + 2 * count * dim
    size = os.fstat(fh.fileno()).st_size
    if size != need:
        why = "truncated" if size < need else "longer than its rows"
        raise _damaged(
            path,
            file,
            f"{why}: {count} x {dim} float16 rows need {need} bytes, it has {size}",
        )
    if count == 0:
        return np.zeros(want, np.float16)
    return np.memmap(fh, dtype="<f2", mode="r", offset=offset, shape=want)


def _damaged(path: str, file: str, what: str) -> SearchError:
    return SearchError(str(damaged(file, what, _rebuild(path))))
