"""A searchable gallery in a Milvus collection: the rows of
:mod:`anet_tf.search.gallery`, searched with the same filters as the faiss index.

The target is a Milvus URI: a Milvus Lite database (a path ending in ``.db``; Milvus
Lite runs inside the process, for a laptop or a test) or a Milvus server or
cluster (``http://host:19530``, ``https://...``), which the same client reaches.
One database holds many collections; the gallery is one of them (default
``gallery``). A collection's fields:

=================  ==========================  =====================================
field              type                        meaning
=================  ==========================  =====================================
``id``             INT64, primary key          item id: 0..N-1 for a build, then
                                               continuing with each ``index add``
``embedding``      FLOAT_VECTOR [D]            L2-normalised embedding
``path``           VARCHAR (4096 bytes)        image path
``pid``, ``camid``  INT64                      vehicle and camera ids, -1 unknown
``time``           INT64                       capture time, seconds since
                                               1970-01-01 UTC, -1 unknown
``<a>_pred``       INT16                       predicted class index of attribute a
``<a>_known``      INT16                       known class index, -1 unknown
``<a>_probs``      ARRAY<FLOAT> [m_a]          predicted class probabilities
=================  ==========================  =====================================

The collection property ``anet_tf.gallery`` holds the JSON of what a faiss
folder's ``index.json`` holds (format, kind, dim, params, the model record with its
fingerprint, sources) and ``next_id``. ``--where`` becomes a Milvus filter
expression on the ``<a>_pred`` (or ``<a>_known``) fields
(``color_pred in [0, 2] and type_pred in [1]``).

Index kinds (the vector index of the ``embedding`` field, metric IP): ``flat``
(FLAT, exact; default), ``ivf`` (IVF_FLAT), ``ivfpq`` (IVF_PQ), ``hnsw`` (HNSW),
with the settings of :func:`anet_tf.search.gallery.index_params`. Milvus Lite
accepts each kind and searches exactly what it holds; a server builds the index
per sealed segment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence

import numpy as np

from anet_tf.search.embeddings import Embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import Gallery
from anet_tf.search.gallery import Rows
from anet_tf.search.gallery import check_new_paths
from anet_tf.search.gallery import gallery_rows
from anet_tf.search.gallery import index_params

FORMAT = "anet-tf-milvus/1"
DEFAULT_COLLECTION = "gallery"
MILVUS_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
META_PROPERTY = "anet_tf.gallery"
STAGING_SUFFIX = "_anet_building"
MAX_PATH_BYTES = 4096
INSERT_BATCH = 2000
QUERY_BATCH = 1000
CONNECT_TIMEOUT_S = 10.0
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
MILVUS_INDEX = {"flat": "FLAT", "ivf": "IVF_FLAT", "ivfpq": "IVF_PQ", "hnsw": "HNSW"}
__all__ = [
    "FORMAT",
    "MilvusGallery",
    "add_to_collection",
    "build_collection",
    "check_collection_target",
    "open_collection",
    "remove_rows",
]


def _pymilvus():
    # grpc's C core prints keepalive notices on stderr; errors are raised instead.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        import pymilvus
    except ImportError:
        raise SearchError(
            "a Milvus target needs pymilvus (and milvus-lite for a .db file): pip "
            "install 'anet-tf[search-milvus]'"
        ) from None
    # pymilvus logs every failed call at ERROR on stderr; the error raised says it.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    return pymilvus


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0]


@contextlib.contextmanager
def _milvus_errors(where: str):
    """Milvus' exceptions as one :class:`SearchError` line naming ``where``."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise SearchError(f"{where}: Milvus: {_first_line(exc)}") from None


def is_lite(uri: str) -> bool:
    return not uri.startswith(MILVUS_SCHEMES)


def connect(uri: str, create: bool = False):
    """A ``MilvusClient`` of ``uri``; a Milvus Lite database must exist unless
    ``create``.

    Raises:
        SearchError: no such database, a server that does not answer.
    """
    pymilvus = _pymilvus()
    target = uri
    if is_lite(uri):
        target = os.path.abspath(uri)
        if not create and not os.path.exists(target):
            raise SearchError(
                f"{uri}: no such Milvus Lite database; build one with `anet-tf index "
                f"build EMBEDDINGS.npz -o {uri}`"
            )
        _check_lite_path(uri, target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        return pymilvus.MilvusClient(uri=target, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the client raises several kinds
        raise SearchError(f"{uri}: cannot reach Milvus ({_first_line(exc)})") from None


def _check_lite_path(uri: str, path: str) -> None:
    probe = os.path.dirname(path)
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise SearchError(f"{uri}: {probe} is a file, not a folder")
    if os.path.isfile(path):
        raise SearchError(
            f"{uri}: is a file; a Milvus Lite database is a folder Milvus Lite "
            f"makes, give a new path"
        )


def _check_name(collection: str) -> None:
    if not NAME.match(collection):
        raise SearchError(
            f"--collection {collection!r}: a Milvus collection name is letters, "
            f"digits and _, starting with a letter or _ (at most 255)"
        )


def _meta_of(client, uri: str, collection: str) -> dict | None:
    """The gallery record of ``collection``, None where there is no such collection.

    Raises:
        SearchError: the collection is not an anet-tf gallery.
    """
    with _milvus_errors(uri):
        if not client.has_collection(collection):
            return None
        described = client.describe_collection(collection)
    text = (described.get("properties") or {}).get(META_PROPERTY)
    if text is None:
        raise SearchError(
            f"{uri}: the collection {collection!r} is not an anet-tf gallery (no "
            f"{META_PROPERTY} property); give another --collection"
        )
    meta = json.loads(text)
    if meta.get("format") != FORMAT:
        raise SearchError(
            f"{uri}: collection {collection!r}: format {meta.get('format')!r}, this "
            f"anet-tf reads {FORMAT}"
        )
    dims = [
        f["params"].get("dim") for f in described["fields"] if f["name"] == "embedding"
    ]
    if not dims or int(dims[0]) != int(meta["dim"]):
        raise SearchError(
            f"{uri}: collection {collection!r}: its embedding field is "
            f"{dims[0] if dims else 'missing'}-d, its record says {meta['dim']}-d; "
            f"rebuild it"
        )
    return meta


# ------------------------------------------------------------------------ gallery


class MilvusGallery(Gallery):
    """A gallery collection, opened by :func:`open_collection`."""

    def __init__(self, client, uri: str, collection: str, meta: dict):
        self.client = client
        self.path = uri
        self.collection = collection
        self.meta = meta
        self._rows: dict[int, dict] = {}

    @property
    def fields(self) -> list[str]:
        """The fields a match is read from."""
        out = ["path", "pid", "camid", "time"]
        for name in self.attribute_names:
            out += [f"{name}_pred", f"{name}_known", f"{name}_probs"]
        return out

    def __len__(self) -> int:
        return self.count()

    def count(self, expr: str = "") -> int:
        """Rows matching the filter expression ``expr`` (all rows for "")."""
        with _milvus_errors(self.where):
            out = self.client.query(
                self.collection, filter=expr, output_fields=["count(*)"]
            )
        return int(out[0]["count(*)"])

    def filter_expression(
        self, where: dict[str, list[str]] | None, labels: str = "predicted"
    ) -> str | None:
        """The Milvus filter of ``where`` ("" for none), or None where it can match
        nothing (an attribute filtered to no class)."""
        codes = self.check_filter(where or {}, labels)
        if any(not allowed for allowed in codes.values()):
            return None
        return " and ".join(
            f"{col} in {sorted(allowed)}" for col, allowed in codes.items()
        )

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
        """As :meth:`anet_tf.search.index.GalleryIndex.search` (``threads`` is
        the server's business and is ignored)."""
        del threads
        queries = self.check_queries(queries, top_k)
        expr = self.filter_expression(where, labels)
        q = len(queries)
        scores = np.full((q, top_k), -np.inf, np.float32)
        ids = np.full((q, top_k), -1, np.int64)
        if expr is None or q == 0:
            return scores, ids
        params = {}
        if self.kind in ("ivf", "ivfpq"):
            params = {"nprobe": int(nprobe or self.meta["params"]["nprobe"])}
        elif self.kind == "hnsw":
            ef = int(nprobe or self.meta["params"]["ef_search"])
            params = {"ef": max(ef, top_k)}
        if exclude is None:
            batches = [(slice(0, q), expr)]
        else:
            batches = []
            for i in range(q):
                drop = [int(x) for x in np.asarray(exclude[i]).tolist() if x >= 0]
                row_expr = expr
                if drop:
                    row_expr = " and ".join(x for x in (expr, f"id not in {drop}") if x)
                batches.append((slice(i, i + 1), row_expr))
        for rows, row_expr in batches:
            with _milvus_errors(self.where):
                hits = self.client.search(
                    self.collection,
                    data=[v for v in queries[rows]],
                    limit=top_k,
                    filter=row_expr,
                    output_fields=self.fields,
                    search_params={"metric_type": "IP", "params": params},
                )
            for offset, found in enumerate(hits):
                r = rows.start + offset
                for j, hit in enumerate(found[:top_k]):
                    item = int(hit["id"])
                    scores[r, j] = hit["distance"]
                    ids[r, j] = item
                    self._rows[item] = hit["entity"]
        return scores, ids

    def row(self, item: int) -> dict:
        if item not in self._rows:
            with _milvus_errors(self.where):
                got = self.client.get(
                    self.collection, ids=[item], output_fields=self.fields
                )
            if not got:
                raise SearchError(f"{self.where}: no item {item}")
            self._rows[item] = got[0]
        return self._rows[item]

    def same_pid_camera(self, pid: int, camid: int) -> np.ndarray:
        """Items of vehicle ``pid`` seen by camera ``camid``; empty where either
        is unknown."""
        if pid < 0 or camid < 0:
            return np.zeros(0, np.int64)
        with _milvus_errors(self.where):
            got = self.client.query(
                self.collection,
                filter=f"pid == {int(pid)} and camid == {int(camid)}",
                output_fields=["id"],
            )
        return np.asarray(sorted(int(r["id"]) for r in got), np.int64)

    def existing_paths(self, paths: Sequence[str]) -> list[str]:
        """Those of ``paths`` that are in the collection."""
        found = []
        for start in range(0, len(paths), QUERY_BATCH):
            chunk = list(paths[start : start + QUERY_BATCH])
            with _milvus_errors(self.where):
                got = self.client.query(
                    self.collection,
                    filter=f"path in {json.dumps(chunk, ensure_ascii=False)}",
                    output_fields=["path"],
                )
            found += [r["path"] for r in got]
        return found

    def save_meta(self) -> None:
        with _milvus_errors(self.where):
            self.client.alter_collection_properties(
                self.collection, properties={META_PROPERTY: json.dumps(self.meta)}
            )


def open_collection(uri: str, collection: str = DEFAULT_COLLECTION) -> MilvusGallery:
    """The gallery ``collection`` at ``uri``, loaded for search.

    Raises:
        SearchError: no such database or collection, not an anet-tf gallery,
            a server that does not answer.
    """
    _check_name(collection)
    client = connect(uri)
    meta = _meta_of(client, uri, collection)
    if meta is None:
        with _milvus_errors(uri):
            names = client.list_collections()
        there = ", ".join(sorted(names)) if names else "none"
        raise SearchError(
            f"{uri}: no collection {collection!r} (collections: {there}); build one "
            f"with `anet-tf index build EMBEDDINGS.npz -o {uri} --collection "
            f"{collection}`"
        )
    with _milvus_errors(uri):
        client.load_collection(collection)
    return MilvusGallery(client, uri, collection, meta)


def check_collection_target(uri: str, collection: str = DEFAULT_COLLECTION) -> None:
    """Raise :class:`SearchError` (one line) unless a gallery can be built as
    ``collection`` at ``uri``: a new collection or an anet-tf gallery (replaced);
    a Milvus Lite database that does not exist yet is not made here."""
    _check_name(collection)
    if is_lite(uri):
        _pymilvus()
        _check_lite_path(uri, os.path.abspath(uri))
        if not os.path.exists(os.path.abspath(uri)):
            return
    _meta_of(connect(uri), uri, collection)


# -------------------------------------------------------------------------- write


def _schema(pymilvus, rows: Rows):
    from pymilvus import DataType

    schema = pymilvus.MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=int(rows.vectors.shape[1]))
    schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
    for name in ("pid", "camid", "time"):
        schema.add_field(name, DataType.INT64)
    for a in rows.model["attributes"]:
        schema.add_field(f"{a['name']}_pred", DataType.INT16)
        schema.add_field(f"{a['name']}_known", DataType.INT16)
        schema.add_field(
            f"{a['name']}_probs",
            DataType.ARRAY,
            element_type=DataType.FLOAT,
            max_capacity=max(1, len(a["classes"])),
        )
    return schema


def _check_rows(rows: Rows) -> None:
    for a in rows.model["attributes"]:
        if not NAME.match(f"{a['name']}_known"):
            raise SearchError(
                f"attribute {a['name']!r}: a Milvus field name is letters, digits "
                f"and _; this model's attribute cannot be one"
            )
    long = [p for p in rows.columns["path"].tolist() if len(p) > MAX_PATH_BYTES]
    if long:
        raise SearchError(
            f"{long[0].decode('utf-8')[:80]}...: {len(long[0])} bytes, a Milvus "
            f"gallery holds paths of up to {MAX_PATH_BYTES}"
        )


def _insert(client, where: str, collection: str, rows: Rows, first_id: int) -> None:
    columns = rows.columns
    scalar = ["pid", "camid", "time"] + [
        f"{a['name']}_{s}" for a in rows.model["attributes"] for s in ("pred", "known")
    ]
    probs = [f"{a['name']}_probs" for a in rows.model["attributes"]]
    for start in range(0, len(rows), INSERT_BATCH):
        stop = min(start + INSERT_BATCH, len(rows))
        part = {k: columns[k][start:stop].tolist() for k in scalar + probs}
        paths = [p.decode("utf-8") for p in columns["path"][start:stop].tolist()]
        batch = []
        for j in range(stop - start):
            record = {k: part[k][j] for k in scalar + probs}
            record["id"] = first_id + start + j
            record["embedding"] = rows.vectors[start + j]
            record["path"] = paths[j]
            batch.append(record)
        with _milvus_errors(where):
            client.insert(collection, batch)


# long: 11 lines of docstring; 73 lines of code: check, create, insert, index, in the order Milvus needs them.
def build_collection(
    embeddings: Sequence[Embeddings],
    uri: str,
    collection: str = DEFAULT_COLLECTION,
    *,
    kind: str = "flat",
    seed: int = 0,
    shards: int | None = None,
    **given,
) -> MilvusGallery:
    """A gallery collection of ``embeddings`` at ``uri``: written as a staging
    collection and renamed in when complete (an anet-tf gallery of that name is
    replaced). ``shards``: the collection's shards on a server (insert channels;
    default the server's, 1; Milvus Lite keeps one). ``given``: the settings of
    :func:`~anet_tf.search.gallery.index_params`.

    Raises:
        IndexMismatchError: the files come from different models.
        SearchError: bad input, a collection that is not an anet-tf gallery, a
            server that does not answer; nothing is written.
    """
    del seed  # Milvus trains its IVF lists itself
    pymilvus = _pymilvus()
    _check_name(collection)
    rows = gallery_rows(embeddings)
    _check_rows(rows)
    n, dim = rows.vectors.shape
    params = index_params(kind, n, dim, **given)
    client = connect(uri, create=True)
    _meta_of(client, uri, collection)
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
        "next_id": n,
    }
    staging = f"{collection}{STAGING_SUFFIX}"[:255]
    index = client.prepare_index_params()
    milvus_params = {
        "flat": {},
        "ivf": {"nlist": params.get("nlist")},
        "ivfpq": {
            "nlist": params.get("nlist"),
            "m": params.get("m"),
            "nbits": params.get("bits"),
        },
        "hnsw": {"M": params.get("M"), "efConstruction": params.get("ef_construction")},
    }[kind]
    index.add_index(
        "embedding",
        index_type=MILVUS_INDEX[kind],
        metric_type="IP",
        params=milvus_params,
    )
    with _milvus_errors(uri):
        if client.has_collection(staging):
            client.drop_collection(staging)
        client.create_collection(
            staging,
            schema=_schema(pymilvus, rows),
            index_params=index,
            properties={META_PROPERTY: json.dumps(meta)},
            **({"num_shards": int(shards)} if shards else {}),
        )
    try:
        _insert(client, uri, staging, rows, 0)
        with _milvus_errors(uri):
            client.flush(staging)
            if client.has_collection(collection):
                client.drop_collection(collection)
            client.rename_collection(staging, collection)
            client.load_collection(collection)
    except BaseException:
        with contextlib.suppress(Exception):
            client.drop_collection(staging)
        raise
    return MilvusGallery(client, uri, collection, meta)


def add_to_collection(
    uri: str, collection: str, embeddings: Sequence[Embeddings]
) -> tuple[MilvusGallery, Rows]:
    """Append ``embeddings`` to the gallery ``collection`` (ids from its
    ``next_id``); refused, with nothing written, for another model or an image
    already in it (:func:`~anet_tf.search.gallery.check_new_paths`)."""
    gallery = open_collection(uri, collection)
    rows = gallery_rows(embeddings, gallery.model, f"the collection {gallery.where}")
    _check_rows(rows)
    check_new_paths(rows, gallery.existing_paths(rows.paths), gallery.where)
    first = int(gallery.meta["next_id"])
    _insert(gallery.client, gallery.where, collection, rows, first)
    with _milvus_errors(gallery.where):
        gallery.client.flush(collection)
    gallery.meta["next_id"] = first + len(rows)
    gallery.meta["count"] = len(gallery)
    gallery.meta["sources"] = [*gallery.meta["sources"], *rows.sources]
    gallery.meta["warnings"] = [*gallery.meta.get("warnings", []), *rows.warnings]
    gallery.save_meta()
    return gallery, rows


def remove_rows(
    uri: str,
    collection: str = DEFAULT_COLLECTION,
    *,
    cameras: Sequence[int] = (),
    since: int | None = None,
    until: int | None = None,
) -> tuple[MilvusGallery, int, str]:
    """Delete the rows of the cameras ``cameras`` and/or captured in
    [``since``, ``until``) (seconds since 1970-01-01 UTC; rows of unknown time are
    never in a time range). Returns the gallery, the number deleted and the filter
    used.

    Raises:
        SearchError: no condition given; ``since`` not before ``until``.
    """
    if not cameras and since is None and until is None:
        raise SearchError(
            "index remove: say which rows: --camera N (repeatable) and/or --since / "
            "--until TIME"
        )
    if since is not None and until is not None and since >= until:
        raise SearchError(
            f"index remove: --since {since} is not before --until {until}"
        )
    gallery = open_collection(uri, collection)
    conditions = []
    if cameras:
        conditions.append(f"camid in {sorted({int(c) for c in cameras})}")
    if since is None and until is not None:
        conditions.append("time >= 0")  # unknown times (-1) are in no range
    if since is not None:
        conditions.append(f"time >= {int(since)}")
    if until is not None:
        conditions.append(f"time < {int(until)}")
    expr = " and ".join(conditions)
    count = gallery.count(expr)
    if count:
        with _milvus_errors(gallery.where):
            gallery.client.delete(collection, filter=expr)
            gallery.client.flush(collection)
    gallery.meta["count"] = len(gallery)
    gallery.save_meta()
    return gallery, count, expr
