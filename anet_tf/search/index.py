"""A searchable gallery: a faiss index of embeddings with their attributes.

``anet-tf index build EMB.npz [EMB.npz ...] -o INDEX`` writes the folder::

    INDEX/index.faiss   the faiss index (ids = item positions 0..N-1)
    INDEX/items.npz     per item: path (UTF-8), pid, camid, and per attribute the
                        predicted class (<a>_pred) and known class (<a>_known), as
                        class indices (-1 unknown)
    INDEX/index.json    format, kind, dimension, item count, the model (path,
                        fingerprint, embedding dim, attributes) and index settings

Kinds:

``flat`` (default)
    ``IndexFlatIP``: exact inner product, i.e. exact cosine similarity of the
    L2-normalised embeddings. Memory 4·D bytes per image; a batch-1 query scans
    the whole gallery (see ``benchmarks/search.py`` for timings).
``ivfpq``
    ``IVF{nlist},PQ{m}x{bits}`` (inner product): approximate, for galleries beyond
    about a million images; m bytes per image, and only ``nprobe`` of the ``nlist``
    inverted lists are scanned per query.

Attribute filters (``--where color=red,type=sedan``) keep the items whose predicted
(or, with ``labels="known"``, known) classes match. They are applied inside the
search by a faiss ``IDSelectorBitmap``, so the flat index returns the exact top-k
among the matching items, however few match; the IVF-PQ index returns the best
matches among the probed lists.

An index remembers the model that embedded its gallery; a query embedded by another
model (another dimension or fingerprint) is refused with :class:`IndexMismatchError`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anet_tf.search.embeddings import Embeddings
from anet_tf.search.embeddings import unknown_known_labels
from anet_tf.search.errors import SearchError

FORMAT = "anet-tf-index/1"
KINDS = ("flat", "ivfpq")
LABEL_SOURCES = ("predicted", "known")
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.npz"
META_FILE = "index.json"


class IndexMismatchError(SearchError):
    """The index and the query (or two embedding files) come from different models."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise SearchError(
            "the gallery index needs faiss: pip install 'anet-tf[search]' (faiss-cpu)"
        ) from None
    return faiss


# ------------------------------------------------------------------------- filters


def parse_where(specs: str | Sequence[str] | None) -> dict[str, list[str]]:
    """``"color=red|blue,type=sedan"`` (or several such strings) -> ``{"color":
    ["red", "blue"], "type": ["sedan"]}``.

    Conditions are joined by ``,`` (and across strings) with AND; ``|`` separates
    the classes one attribute may take. Repeating an attribute intersects.

    Raises:
        SearchError: a condition without ``=`` or without a value.
    """
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    where: dict[str, list[str]] = {}
    for spec in specs:
        for cond in spec.split(","):
            cond = cond.strip()
            if not cond:
                continue
            name, sep, values = cond.partition("=")
            name = name.strip()
            allowed = [v.strip() for v in values.split("|") if v.strip()]
            if not sep or not name or not allowed:
                raise SearchError(
                    f"--where {spec!r}: {cond!r} is not ATTRIBUTE=CLASS[|CLASS...] "
                    f"(e.g. color=red,type=sedan|suv)"
                )
            if name in where:
                allowed = [v for v in where[name] if v in allowed]
            where[name] = allowed
    return where


# -------------------------------------------------------------------------- index


@dataclass
class Match:
    """One gallery item found for a query."""

    rank: int
    id: int
    score: float
    path: str
    pid: int
    camid: int
    predicted: dict[str, str]
    known: dict[str, str]

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "id": self.id,
            "score": round(float(self.score), 6),
            "path": self.path,
            "pid": self.pid,
            "camid": self.camid,
            "attributes": self.predicted,
            "known": self.known,
        }


class GalleryIndex:
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

    # --- description
    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def model(self) -> dict:
        return self.meta["model"]

    @property
    def attribute_names(self) -> list[str]:
        return [a["name"] for a in self.meta["model"]["attributes"]]

    @property
    def attribute_classes(self) -> list[list[str]]:
        return [list(a["classes"]) for a in self.meta["model"]["attributes"]]

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [p.decode("utf-8") for p in self.items["path"].tolist()]
        return self._paths

    # --- checks
    def check_model(self, model: dict, what: str = "the query model") -> None:
        """Refuse embeddings of another model than the gallery's.

        Args:
            model: ``ServingModel.info()`` or an embeddings file's ``model``.
            what: how to name that model in the message.

        Raises:
            IndexMismatchError: naming both models and what to do.
        """
        check_same_model(self.model, model, "the index", what)

    # --- filters
    def filter_mask(
        self, where: dict[str, list[str]], labels: str = "predicted"
    ) -> np.ndarray | None:
        """The items that satisfy ``where`` (bool [N]), or None for no filter.

        Raises:
            SearchError: an attribute or class the model does not have, listing
                the valid ones; an unknown label source.
        """
        if labels not in LABEL_SOURCES:
            raise SearchError(
                f"labels must be one of {', '.join(LABEL_SOURCES)}. "
                f"Received: labels={labels!r}"
            )
        if not where:
            return None
        names = self.attribute_names
        mask = np.ones(len(self), bool)
        for name, values in where.items():
            if name not in names:
                raise SearchError(
                    f"--where: the model has no attribute {name!r}; it predicts "
                    f"{', '.join(names) if names else 'no attributes'}"
                )
            classes = self.attribute_classes[names.index(name)]
            bad = [v for v in values if v not in classes]
            if bad:
                raise SearchError(
                    f"--where: {name} has no class {', '.join(map(repr, bad))}; its "
                    f"classes are {', '.join(classes)}"
                )
            codes = self.items[f"{name}_{'pred' if labels == 'predicted' else 'known'}"]
            mask &= np.isin(codes, [classes.index(v) for v in values])
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
            nprobe: IVF lists scanned per query (ivfpq; default from the index).
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
        queries = np.ascontiguousarray(np.asarray(queries, np.float32))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise IndexMismatchError(
                f"queries of shape {tuple(queries.shape)} do not fit the index of "
                f"{self.dim}-d embeddings"
            )
        if top_k < 1:
            raise SearchError(f"top_k must be >= 1. Received: top_k={top_k}")
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
        if self.kind == "ivfpq":
            params = faiss.SearchParametersIVF(
                sel=selector, nprobe=int(nprobe or self.meta["params"]["nprobe"])
            )
        elif selector is not None:
            params = faiss.SearchParameters(sel=selector)
        else:
            params = None
        d, i = self.index.search(queries, k, params=params)
        found = i >= 0
        scores[:, :k] = np.where(found, d, -np.inf)
        ids[:, :k] = np.where(found, i, -1)

    def match(self, item: int, rank: int, score: float) -> Match:
        """The :class:`Match` of item ``item``."""
        predicted, known = {}, {}
        for name, classes in zip(
            self.attribute_names, self.attribute_classes, strict=True
        ):
            p = int(self.items[f"{name}_pred"][item])
            k = int(self.items[f"{name}_known"][item])
            predicted[name] = classes[p] if p >= 0 else ""
            known[name] = classes[k] if k >= 0 else ""
        return Match(
            rank=rank,
            id=int(item),
            score=float(score),
            path=self.paths[item],
            pid=int(self.items["pid"][item]),
            camid=int(self.items["camid"][item]),
            predicted=predicted,
            known=known,
        )

    def matches(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Match]]:
        """Rows of :meth:`search` as lists of :class:`Match` (padding dropped)."""
        return [
            [
                self.match(int(i), rank + 1, float(s))
                for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True))
                if i >= 0
            ]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]

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


def check_same_model(
    expected: dict, got: dict, expected_name: str, got_name: str, advice: str | None = None
) -> None:
    """Raise :class:`IndexMismatchError` unless both model records agree on the
    embedding dimension and fingerprint; ``advice`` (what to do) replaces the
    default, which is a query's (search with the index's model)."""
    d_e, d_g = int(expected["embedding_dim"]), int(got["embedding_dim"])
    if advice is None:
        advice = (
            f"Search with the model the index was built with (--model "
            f"{expected['path']}), or embed the gallery again with this model and "
            f"rebuild the index"
        )
    if d_e != d_g:
        raise IndexMismatchError(
            f"{expected_name} holds {d_e}-d embeddings of the model {expected['path']} "
            f"(fingerprint {expected['fingerprint']}), but {got_name} "
            f"{got['path']} gives {d_g}-d embeddings: they were made by different "
            f"models. {advice}"
        )
    if expected["fingerprint"] != got["fingerprint"]:
        raise IndexMismatchError(
            f"{expected_name} was built with the model {expected['path']} "
            f"(fingerprint {expected['fingerprint']}), but {got_name} {got['path']} "
            f"has fingerprint {got['fingerprint']} (other weights or outputs): "
            f"similarities across models mean nothing. {advice}"
        )


def _class_codes(values: np.ndarray, classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.asarray([lookup.get(v, -1) for v in values.tolist()], np.int16)


def default_ivfpq_params(n: int, dim: int) -> dict:
    """nlist about 4·sqrt(N) (a power of two, capped at N/39 so each list trains on
    39+ points), m the largest divisor of D up to min(64, D/4) (D/m dims per
    sub-quantizer, m bytes per image), 8 bits, nprobe = min(32, nlist)."""
    nlist = 2 ** max(0, round(math.log2(max(1.0, 4 * math.sqrt(n)))))
    nlist = max(1, min(nlist, n // 39 or 1))
    m = max(d for d in range(1, max(1, min(64, dim // 4)) + 1) if dim % d == 0)
    return {"nlist": nlist, "m": m, "bits": 8, "nprobe": min(32, nlist)}


def build_index(
    embeddings: Sequence[Embeddings],
    *,
    kind: str = "flat",
    nlist: int | None = None,
    m: int | None = None,
    bits: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> GalleryIndex:
    """A gallery index of one or more embeddings files of the same model.

    Args:
        embeddings: the galleries to index, in order (item ids follow it).
        kind: flat (exact) | ivfpq (approximate; see the module docstring).
        nlist, m, bits, nprobe: IVF-PQ settings; None = :func:`default_ivfpq_params`.
        seed: seed of the IVF-PQ k-means.

    Raises:
        IndexMismatchError: the files come from different models.
        SearchError: no embeddings; too few vectors to train IVF-PQ.
    """
    faiss = _faiss()
    if kind not in KINDS:
        raise SearchError(f"kind must be one of {', '.join(KINDS)}. Received: {kind!r}")
    embeddings = list(embeddings)
    if not embeddings or not sum(len(e) for e in embeddings):
        raise SearchError("no embeddings to index")
    first = embeddings[0]
    for i, emb in enumerate(embeddings[1:], start=2):
        check_same_model(
            first.model,
            emb.model,
            "embeddings file 1",
            f"file {i}, model",
            advice=(
                "An index holds the embeddings of one model: embed every gallery "
                f"with the same --model (anet-tf embed), e.g. {first.model['path']}, "
                "then build it from those files"
            ),
        )
    vectors = np.ascontiguousarray(
        np.concatenate([e.embedding for e in embeddings], 0).astype(np.float32)
    )
    n, dim = vectors.shape
    if dim != int(first.model["embedding_dim"]):
        raise IndexMismatchError(
            f"the embeddings are {dim}-d, their model records "
            f"{first.model['embedding_dim']}"
        )
    names, classes = first.attribute_names, first.attribute_classes
    items: dict[str, np.ndarray] = {
        "path": np.asarray(
            [p.encode("utf-8") for e in embeddings for p in e.paths], dtype=bytes
        ),
        "pid": np.concatenate([e.pids for e in embeddings]).astype(np.int64),
        "camid": np.concatenate([e.camids for e in embeddings]).astype(np.int64),
    }
    warnings = []
    for name, cls in zip(names, classes, strict=True):
        items[f"{name}_pred"] = np.concatenate(
            [np.argmax(e.probs[name], axis=1) for e in embeddings]
        ).astype(np.int16)
        items[f"{name}_known"] = np.concatenate(
            [_class_codes(e.known[name], cls) for e in embeddings]
        )
    for e in embeddings:
        for name, values in unknown_known_labels(e).items():
            warnings.append(
                f"{e.source}: known {name} labels {values} are not classes of the "
                f"model ({', '.join(classes[names.index(name)])}); they match no filter"
            )
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    else:
        params = default_ivfpq_params(n, dim)
        for key, value in (
            ("nlist", nlist),
            ("m", m),
            ("bits", bits),
            ("nprobe", nprobe),
        ):
            if value is not None:
                params[key] = int(value)
        if dim % params["m"]:
            raise SearchError(
                f"IVF-PQ: m={params['m']} sub-quantizers must divide the "
                f"dimension {dim}"
            )
        need = max(params["nlist"], 2 ** params["bits"])
        if n < need:
            raise SearchError(
                f"IVF-PQ with nlist={params['nlist']} and {params['bits']}-bit codes "
                f"needs at least {need} gallery vectors to train; this gallery has "
                f"{n}. "
                f"Use --kind flat (exact, fine up to about a million images)"
            )
        # "np": no polysemous training (minutes, and only for Hamming filtering,
        # which the search does not use).
        factory = f"IVF{params['nlist']},PQ{params['m']}x{params['bits']}np"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.pq.cp.seed = seed
        index.train(vectors)
        index.add(vectors)
        index.nprobe = params["nprobe"]
        params["factory"] = factory
    meta = {
        "format": FORMAT,
        "kind": kind,
        "dim": dim,
        "count": n,
        "metric": "inner_product",
        "params": params,
        "model": first.model,
        "sources": [e.source for e in embeddings],
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "warnings": warnings,
    }
    return GalleryIndex(index, meta, items)


def load_index(path: str) -> GalleryIndex:
    """Read an index folder written by :meth:`GalleryIndex.save`.

    Raises:
        SearchError: the folder is missing, not an index, or its files disagree.
    """
    faiss = _faiss()
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
    if meta["kind"] == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = int(meta["params"]["nprobe"])
    return GalleryIndex(index, meta, items, path=os.path.abspath(path))
