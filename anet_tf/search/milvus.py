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
``track_id``       VARCHAR (4096 bytes)        a gallery of tracks only: the track
``time_last``      INT64                       ... its last time (``time``: first)
``track_length``   INT64                       ... its crops
=================  ==========================  =====================================

The collection property ``anet_tf.gallery`` holds the JSON of what a faiss
folder's ``index.json`` holds (format, kind, dim, params, the model record with its
fingerprint, sources), ``count`` and ``next_id``. ``--where`` and the camera and
time filters become a Milvus filter expression on the ``<a>_pred`` (or
``<a>_known``), ``camid`` and ``time`` fields (``color_pred in [0, 2] and
type_pred in [1] and camid in [3, 4] and time >= 1796284800``,
:func:`selection_expression`; a gallery of tracks keeps the tracks that overlap a
time window: ``time >= 0 and time_last >= since and time < until``); a new
collection has an INVERTED scalar index on each of these fields.

Index kinds (the vector index of the ``embedding`` field, metric IP): ``flat``
(FLAT, exact; default), ``ivf`` (IVF_FLAT), ``ivfpq`` (IVF_PQ), ``hnsw`` (HNSW),
with the settings of :func:`anet_tf.search.gallery.index_params`. Milvus Lite
accepts each kind and searches exactly what it holds; a server builds the index
per sealed segment.

Writes (commit points). Milvus has no transaction over many rows: an insert of
100,000 rows is many calls, and a process killed between them leaves the rows
already sent. So the gallery record's ``next_id`` is the commit watermark: a row
with ``id >= next_id`` is not committed, and every read (search, count, a row, the
paths already in the gallery) filters on ``id < next_id``. ``index add`` removes
what an interrupted add left (``id >= next_id``), checks the paths, inserts rows
``next_id..``, flushes, then writes the record with the new ``next_id`` and
``count``: that one ``alter_collection_properties`` call is the commit (Milvus Lite
writes the collection's schema.json, where the properties live, to a temporary file
and renames it over the old one; a server stores them in its meta store in one
request). ``index remove`` deletes with one ``delete`` call (one batch, one
sequence number, in Milvus Lite) and then writes the record's ``count``; killed
between the two, the rows are gone and ``count`` is stale until the next write,
which recounts. ``index build`` writes a staging collection
``<name>_anet_building``, renames the old gallery aside (``<name>_anet_replaced``),
renames the staging one in (the commit) and drops the old one; a writer that finds
``<name>`` missing and the aside there renames it back (rolls back), drops an
aside next to ``<name>`` and drops a staging collection. Readers change no row and
no record: with ``<name>`` missing they read the aside (on Milvus Lite a reader may
rebuild a torn index file, see :func:`_load`).

One writer at a time. On Milvus Lite a ``build``, ``add`` or ``remove`` holds the
kernel lock ``<db>.writer.lock`` (:class:`anet_tf.io.FileLock`; a second writer is
refused at once, naming the holder). On a server the writer leaves a record
(holder, host, pid, since, beat) in the collection property ``anet_tf.writer`` and
renews it while it inserts; a record whose beat is older than
:data:`WRITER_STALE_S`, or of a dead process on this host, is stale. That record
is best effort: two writers that check at the same moment can both go on.

Milvus Lite serves one process at a time (it holds ``<db>/LOCK`` from the first
client of the database to :meth:`MilvusGallery.close` here, or to the process's
exit in pymilvus). Every open of a ``.db`` here, reader or writer, first takes the
lock ``<db>.lock``, waiting up to :data:`READ_WAIT_S` (a reader) or
:data:`WRITE_WAIT_S` (a writer) for the process that holds it; the commands close
the database as soon as their searching or writing is done. Within one process the
hold is shared and counted (galleries of one database opened together).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Sequence

import numpy as np

from anet_tf.io import FileLock
from anet_tf.io import LockHeldError
from anet_tf.io import is_disk_full
from anet_tf.progress import Progress
from anet_tf.search.embeddings import Embeddings
from anet_tf.search.errors import GalleryDiskFullError
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import TRACK_COLUMNS
from anet_tf.search.gallery import Gallery
from anet_tf.search.gallery import Rows
from anet_tf.search.gallery import Selection
from anet_tf.search.gallery import check_new_paths
from anet_tf.search.gallery import gallery_rows
from anet_tf.search.gallery import index_params

FORMAT = "anet-tf-milvus/1"
DEFAULT_COLLECTION = "gallery"
MILVUS_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
META_PROPERTY = "anet_tf.gallery"
WRITER_PROPERTY = "anet_tf.writer"
STAGING_SUFFIX = "_anet_building"
ASIDE_SUFFIX = "_anet_replaced"
MAX_PATH_BYTES = 4096
INSERT_BATCH = 2000
QUERY_BATCH = 1000
CONNECT_TIMEOUT_S = 10.0
# How long an open of a Milvus Lite database waits for the process that has it.
READ_WAIT_S = 120.0
WRITE_WAIT_S = 120.0
# A server's writer record not renewed for this long is stale; renewed this often.
WRITER_STALE_S = 600.0
WRITER_BEAT_S = 60.0
ONE_PROCESS = (
    "Milvus Lite serves one process at a time; a Milvus server "
    "(http://host:19530) serves many clients"
)
ONE_WRITER = (
    "one index build, add or remove at a time: wait for it to finish or stop it"
)
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
MILVUS_INDEX = {"flat": "FLAT", "ivf": "IVF_FLAT", "ivfpq": "IVF_PQ", "hnsw": "HNSW"}
# The vector index types Milvus Lite (3.2) builds and loads: it accepts IVF_PQ,
# IVF_RABITQ, SCANN, HNSW_PQ and DISKANN in create_index but cannot load them
# (docs/search.md, "Milvus index types on Milvus Lite, measured").
LITE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
__all__ = [
    "FORMAT",
    "MilvusGallery",
    "add_to_collection",
    "build_collection",
    "build_params",
    "check_collection_target",
    "open_collection",
    "remove_rows",
]


class _LiteErrors(logging.Handler):
    """Keeps the last exception milvus_lite logs (its server manager logs why a
    database did not open, with a traceback, and returns None) instead of
    printing it."""

    last: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            _LiteErrors.last = record.exc_info[1]


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
    lite = logging.getLogger("milvus_lite")
    if not any(isinstance(h, _LiteErrors) for h in lite.handlers):
        lite.addHandler(_LiteErrors())
        lite.propagate = False
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
    except (MilvusException, OSError) as exc:
        if is_disk_full(exc):
            raise GalleryDiskFullError(
                f"{where}: no space left on device while Milvus wrote the gallery; "
                "it answers as before this write (what the write left is removed by "
                "the next one); free some space and run this again"
            ) from None
        if not isinstance(exc, MilvusException):
            raise
        raise SearchError(f"{where}: Milvus: {_first_line(exc)}") from None


def is_lite(uri: str) -> bool:
    return not uri.startswith(MILVUS_SCHEMES)


# ---------------------------------------------------------------- connections


class _LiteHold:
    """This process's use of one Milvus Lite database: the lock ``<db>.lock``, the
    client, and how many users (galleries, :func:`connect` callers) share it."""

    def __init__(self, lock: FileLock, client):
        self.lock = lock
        self.client = client
        self.users = 1


_LITE_HOLDS: dict[str, _LiteHold] = {}
_LITE_GUARD = threading.RLock()


def connect(uri: str, create: bool = False, wait_s: float | None = None):
    """A ``MilvusClient`` of ``uri``; a Milvus Lite database must exist unless
    ``create``. Give it back with :func:`disconnect`. On Milvus Lite the database
    is this process's until every client of it is given back: the first client
    takes the lock ``<db>.lock``, waiting up to ``wait_s`` (default
    :data:`READ_WAIT_S`) for another process to let go.

    Raises:
        SearchError: no such database, a server that does not answer.
        LockHeldError: another process has the Milvus Lite database (one line).
    """
    pymilvus = _pymilvus()
    if not is_lite(uri):
        try:
            return pymilvus.MilvusClient(uri=uri, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the client raises several kinds
            raise SearchError(
                f"{uri}: cannot reach Milvus ({_first_line(exc)})"
            ) from None
    target = os.path.abspath(uri)
    with _LITE_GUARD:
        hold = _LITE_HOLDS.get(target)
        if hold is not None:
            hold.users += 1
            return hold.client
        if not create and not os.path.exists(target):
            raise SearchError(
                f"{uri}: no such Milvus Lite database; build one with `anet-tf "
                f"index build EMBEDDINGS.npz -o {uri}`"
            )
        _check_lite_path(uri, target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        wait = READ_WAIT_S if wait_s is None else wait_s
        lock = FileLock(target + ".lock", uri, ONE_PROCESS, wait_s=wait).acquire()
        try:
            client = _start_lite(pymilvus, uri, target, time.monotonic() + wait)
        except BaseException:
            lock.release()
            raise
        _LITE_HOLDS[target] = _LiteHold(lock, client)
        return client


def _start_lite(pymilvus, uri: str, target: str, deadline: float):
    """A client of the Milvus Lite database ``target``, retried until
    ``deadline`` while a process that does not take ``<db>.lock`` has it."""
    from milvus_lite import DataDirLockedError

    delay = 0.1
    while True:
        _LiteErrors.last = None
        try:
            return pymilvus.MilvusClient(
                uri=target, timeout=CONNECT_TIMEOUT_S, dedicated=True
            )
        except Exception as exc:  # noqa: BLE001 - the client raises several kinds
            cause = _LiteErrors.last
            if not isinstance(cause, DataDirLockedError):
                why = _first_line(exc) + (f": {_first_line(cause)}" if cause else "")
                raise SearchError(f"{uri}: cannot reach Milvus ({why})") from None
        if time.monotonic() >= deadline:
            raise LockHeldError(
                f"{uri} is in use by another process (it holds Milvus Lite's own "
                f"lock {os.path.join(target, 'LOCK')}); {ONE_PROCESS}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def disconnect(uri: str, client) -> None:
    """Give back a client of :func:`connect`; the last one of a Milvus Lite
    database stops its server in this process and lets another process have it."""
    if not is_lite(uri):
        with contextlib.suppress(Exception):
            client.close()
        return
    target = os.path.abspath(uri)
    with _LITE_GUARD:
        hold = _LITE_HOLDS.get(target)
        if hold is None or hold.client is not client:
            return
        hold.users -= 1
        if hold.users > 0:
            return
        del _LITE_HOLDS[target]
        try:
            with contextlib.suppress(Exception):
                client.close()
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(target)
        finally:
            hold.lock.release()


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


def _staging(collection: str) -> str:
    return f"{collection}{STAGING_SUFFIX}"[:255]


def _aside(collection: str) -> str:
    return f"{collection}{ASIDE_SUFFIX}"[:255]


# -------------------------------------------------------------------- writers


def _writer_lock(uri: str, shared: bool = False) -> FileLock:
    """The writer lock of a Milvus Lite database (not yet taken)."""
    path = os.path.abspath(uri) + ".writer.lock"
    return FileLock(path, uri, ONE_WRITER, shared=shared)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


class _ServerWriter:
    """The best-effort writer record of a gallery on a Milvus server: the
    property :data:`WRITER_PROPERTY` of the collection (and of its staging
    collection while a build writes it), renewed every :data:`WRITER_BEAT_S`."""

    def __init__(self, client, uri: str, collection: str):
        self.client = client
        self.uri = uri
        self.collection = collection
        self.marked: list[str] = []
        self.beaten = 0.0
        now = datetime.datetime.now().isoformat(timespec="seconds")
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "since": now}

    def acquire(self) -> _ServerWriter:
        self.check()
        with _milvus_errors(self.uri):
            if self.client.has_collection(self.collection):
                self.mark(self.collection)
        return self

    def check(self) -> None:
        """Raise :class:`LockHeldError` where another writer's record is live."""
        for name in (self.collection, _staging(self.collection)):
            held = self.held(name)
            if held:
                raise LockHeldError(
                    f"{self.uri} collection {name!r} is being written by process "
                    f"{held['pid']} on {held['host']} (since {held['since']}; a "
                    f"best-effort record, stale {WRITER_STALE_S:g} s after its "
                    f"last beat); {ONE_WRITER}"
                )

    def held(self, name: str) -> dict | None:
        """The live record of another writer on ``name``, or None."""
        with _milvus_errors(self.uri):
            if not self.client.has_collection(name):
                return None
            props = self.client.describe_collection(name).get("properties") or {}
        try:
            record = json.loads(props.get(WRITER_PROPERTY) or "null")
            if not record:
                return None
            mine = record["host"] == socket.gethostname()
            if mine and record["pid"] == os.getpid():
                return None
            if time.time() - float(record["beat"]) > WRITER_STALE_S:
                return None
            if mine and _pid_gone(int(record["pid"])):
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return record

    def mark(self, name: str) -> None:
        """Write the record (with a new beat) on ``name``."""
        self.beaten = time.time()
        record = json.dumps({**self.record, "beat": self.beaten})
        with _milvus_errors(self.uri):
            self.client.alter_collection_properties(
                name, properties={WRITER_PROPERTY: record}
            )
        if name not in self.marked:
            self.marked.append(name)

    def beat(self) -> None:
        if time.time() - self.beaten >= WRITER_BEAT_S:
            for name in self.marked:
                with contextlib.suppress(Exception):
                    self.mark(name)

    def release(self) -> None:
        """Drop this writer's record (where a build's rename took it too)."""
        for name in {*self.marked, self.collection}:
            with contextlib.suppress(Exception):
                if not self.client.has_collection(name):
                    continue
                props = self.client.describe_collection(name).get("properties") or {}
                record = json.loads(props.get(WRITER_PROPERTY) or "{}")
                if (record.get("pid"), record.get("host")) == (
                    self.record["pid"],
                    self.record["host"],
                ):
                    self.client.drop_collection_properties(
                        name, property_keys=[WRITER_PROPERTY]
                    )


@contextlib.contextmanager
def _writing(uri: str, collection: str, *, create: bool = False):
    """Hold the writer lock of ``uri`` (Milvus Lite: ``<db>.writer.lock``,
    refused at once; a server: the writer record), recover what an interrupted
    build left, and yield ``(client, writer)`` (writer: the server record, None
    on Milvus Lite)."""
    if is_lite(uri):
        with _writer_lock(uri):
            client = connect(uri, create=create, wait_s=WRITE_WAIT_S)
            try:
                _recover(client, uri, collection)
                yield client, None
            finally:
                disconnect(uri, client)
        return
    client = connect(uri)
    try:
        writer = _ServerWriter(client, uri, collection).acquire()
        try:
            _recover(client, uri, collection)
            yield client, writer
        finally:
            writer.release()
    finally:
        disconnect(uri, client)


def _recover(client, uri: str, collection: str) -> None:
    """Undo what an interrupted build left (under the writer lock): the old
    gallery renamed aside with no new one in comes back; an aside next to a
    gallery and a staging collection are dropped."""
    aside, staging = _aside(collection), _staging(collection)
    with _milvus_errors(uri):
        names = set(client.list_collections())
        if aside in names:
            if collection in names:
                client.drop_collection(aside)
            else:
                client.rename_collection(aside, collection)
        if staging in names:
            client.drop_collection(staging)


def _committed_name(client, uri: str, collection: str) -> str | None:
    """The collection a reader reads for ``collection``: itself, or, while a
    build's swap is interrupted (``collection`` missing), the old one aside."""
    with _milvus_errors(uri):
        if client.has_collection(collection):
            return collection
        if client.has_collection(_aside(collection)):
            return _aside(collection)
    return None


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


def _no_collection(client, uri: str, collection: str) -> SearchError:
    with _milvus_errors(uri):
        names = [
            n
            for n in client.list_collections()
            if not n.endswith((STAGING_SUFFIX, ASIDE_SUFFIX))
        ]
    there = ", ".join(sorted(names)) if names else "none"
    return SearchError(
        f"{uri}: no collection {collection!r} (collections: {there}); build one "
        f"with `anet-tf index build EMBEDDINGS.npz -o {uri} --collection "
        f"{collection}`"
    )


def _committed(meta: dict, expr: str = "") -> str:
    """``expr`` restricted to the committed rows (``id < next_id``)."""
    mark = f"id < {int(meta['next_id'])}"
    return f"{mark} and ({expr})" if expr else mark


def _count(client, uri: str, collection: str, expr: str) -> int:
    with _milvus_errors(uri):
        out = client.query(collection, filter=expr, output_fields=["count(*)"])
    return int(out[0]["count(*)"])


def _load(client, uri: str, name: str) -> None:
    """Load the collection ``name`` for search. Milvus Lite (3.2) writes a
    segment's index file (a cache of the segment's vectors) in place, after a
    flush, in a background thread, and trusts it when it loads: a process killed
    meanwhile leaves a torn file that every later load fails on ("file seems not
    fully written?"). So on Milvus Lite a failed load removes the collection's
    index files, which the load builds again from the data, and tries once more."""
    try:
        with _milvus_errors(uri):
            client.load_collection(name)
        return
    except SearchError:
        if not is_lite(uri) or not _remove_lite_index_files(uri, name):
            raise
    with _milvus_errors(uri):
        client.release_collection(name)
        client.load_collection(name)


def _remove_lite_index_files(uri: str, name: str) -> int:
    """Remove the index files of the Milvus Lite collection ``name`` (in
    ``<db>/collections/<name>/partitions/*/indexes``); their number."""
    import glob

    pattern = os.path.join(
        os.path.abspath(uri), "collections", name, "partitions", "*", "indexes", "*"
    )
    found = [p for p in glob.glob(pattern) if p.endswith((".idx", ".sidx"))]
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return len(found)


# ------------------------------------------------------------------------ gallery


def selection_expression(chosen: Selection) -> str | None:
    """The Milvus filter expression of a :class:`~anet_tf.search.gallery.Selection`
    ("" for none), None where it keeps nothing: ``color_pred in [0, 2] and camid in
    [3, 4] and time >= 1796284800 and time < 1796288400``. An unknown camera or
    time (-1) never matches a condition on it."""
    if chosen.nothing:
        return None
    terms = [f"{col} in {list(allowed)}" for col, allowed in chosen.codes]
    kept = chosen.kept_cameras
    if kept is not None:
        terms.append(f"camid in {list(kept)}")
    elif chosen.not_cameras:
        terms.append(f"camid >= 0 and camid not in {list(chosen.not_cameras)}")
    if chosen.on_time and chosen.spans:  # a track overlaps the window
        terms.append(f"time >= 0 and time_last >= {max(0, chosen.since or 0)}")
        if chosen.until is not None:
            terms.append(f"time < {int(chosen.until)}")
    elif chosen.on_time:
        terms.append(f"time >= {max(0, chosen.since or 0)}")
        if chosen.until is not None:
            terms.append(f"time < {int(chosen.until)}")
    return " and ".join(terms)


class MilvusGallery(Gallery):
    """A gallery collection, opened by :func:`open_collection`. It reads the
    committed rows only (``id < next_id``). :meth:`close` gives the database
    back (on Milvus Lite, to other processes); a later call opens it again."""

    def __init__(
        self, client, uri: str, collection: str, meta: dict, name: str | None = None
    ):
        self._client = client
        self.path = uri
        self.collection = collection
        self.meta = meta
        self._name = name or collection  # the aside while a build's swap is undone
        self._rows: dict[int, dict] = {}
        self._recorded: dict[str, bool] = {}

    @property
    def client(self):
        """The Milvus client, opening the database again after :meth:`close`."""
        if self._client is None:
            self._reopen()
        return self._client

    def _reopen(self) -> None:
        client = connect(self.path)
        try:
            name = _committed_name(client, self.path, self.collection)
            meta = None if name is None else _meta_of(client, self.path, name)
            if meta is None or meta["model"] != self.meta["model"]:
                raise SearchError(
                    f"{self.where}: the gallery was removed or rebuilt by another "
                    f"model while this command ran; run it again"
                )
            _load(client, self.path, name)
        except BaseException:
            disconnect(self.path, client)
            raise
        self._client, self._name, self.meta = client, name, meta
        self._rows.clear()
        self._recorded.clear()

    def close(self) -> None:
        """Give the database back (a Milvus Lite one to other processes)."""
        client, self._client = self._client, None
        if client is not None:
            disconnect(self.path, client)

    def __enter__(self) -> MilvusGallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def fields(self) -> list[str]:
        """The fields a match is read from."""
        out = ["path", "pid", "camid", "time"]
        if self.holds_tracks:
            out += list(TRACK_COLUMNS)
        for name in self.attribute_names:
            out += [f"{name}_pred", f"{name}_known", f"{name}_probs"]
        return out

    def __len__(self) -> int:
        return self.count()

    def count(self, expr: str = "") -> int:
        """Committed rows matching the filter expression ``expr`` (all for "")."""
        client = self.client
        return _count(client, self.where, self._name, _committed(self.meta, expr))

    def records(self, column: str) -> bool:
        """Whether any committed row has a known ``column`` (camid, time) and the
        collection has that field: cached."""
        if column not in self._recorded:
            client = self.client
            with _milvus_errors(self.where):
                fields = client.describe_collection(self._name)["fields"]
            has = any(f["name"] == column for f in fields)
            self._recorded[column] = has and self.count(f"{column} >= 0") > 0
        return self._recorded[column]

    def filter_expression(
        self,
        where: dict[str, list[str]] | None,
        labels: str = "predicted",
        **camera_time,
    ) -> str | None:
        """The Milvus filter of ``where`` and the camera and time conditions
        (``cameras``, ``not_cameras``, ``since``, ``until`` of :meth:`search`)
        ("" for none), or None where it can match nothing."""
        return selection_expression(self.selection(where, labels, **camera_time))

    def _search_params(self, top_k: int, nprobe: int | None) -> dict:
        if self.kind in ("ivf", "ivfpq"):
            return {"nprobe": int(nprobe or self.meta["params"]["nprobe"])}
        if self.kind == "hnsw":
            ef = int(nprobe or self.meta["params"]["ef_search"])
            return {"ef": max(ef, top_k)}
        return {}

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
        """As :meth:`anet_tf.search.index.GalleryIndex.search` (``threads`` is
        the server's business and is ignored): the filters become one filter
        expression (:func:`selection_expression`) per query camera."""
        del threads
        filters = dict(cameras=cameras, not_cameras=not_cameras, since=since, until=until)
        queries, groups, scores, ids = self.prepare_search(
            queries, top_k, where, labels, filters, query_cameras
        )
        if len(queries) == 0:
            return scores, ids
        batches = []
        for rows, group in groups:
            expr = selection_expression(group)
            if expr is None:
                continue
            if exclude is None:
                batches.append((rows, _committed(self.meta, expr)))
                continue
            for i in rows.tolist():
                drop = [int(x) for x in np.asarray(exclude[i]).tolist() if x >= 0]
                row_expr = " and ".join(
                    x for x in (expr, f"id not in {drop}" if drop else "") if x
                )
                batches.append((np.asarray([i]), _committed(self.meta, row_expr)))
        if not batches:
            return scores, ids
        client = self.client  # opened again (meta read again) after close()
        params = self._search_params(top_k, nprobe)
        for rows, row_expr in batches:
            with _milvus_errors(self.where):
                hits = client.search(
                    self._name,
                    data=[v for v in queries[rows]],
                    limit=top_k,
                    filter=row_expr,
                    output_fields=self.fields,
                    search_params={"metric_type": "IP", "params": params},
                )
            for r, found in zip(rows.tolist(), hits, strict=True):
                for j, hit in enumerate(found[:top_k]):
                    item = int(hit["id"])
                    scores[r, j] = hit["distance"]
                    ids[r, j] = item
                    self._rows[item] = hit["entity"]
        return scores, ids

    def row(self, item: int) -> dict:
        if item not in self._rows:
            got = []
            if 0 <= item < int(self.meta["next_id"]):
                client = self.client
                with _milvus_errors(self.where):
                    got = client.get(self._name, ids=[item], output_fields=self.fields)
            if not got:
                raise SearchError(f"{self.where}: no item {item}")
            self._rows[item] = got[0]
        return self._rows[item]

    def same_pid_camera(self, pid: int, camid: int) -> np.ndarray:
        """Items of vehicle ``pid`` seen by camera ``camid``; empty where either
        is unknown."""
        if pid < 0 or camid < 0:
            return np.zeros(0, np.int64)
        client = self.client
        expr = _committed(self.meta, f"pid == {int(pid)} and camid == {int(camid)}")
        with _milvus_errors(self.where):
            got = client.query(self._name, filter=expr, output_fields=["id"])
        return np.asarray(sorted(int(r["id"]) for r in got), np.int64)

    def existing_paths(self, paths: Sequence[str]) -> list[str]:
        """Those of ``paths`` that are in the collection."""
        client = self.client
        found = []
        for start in range(0, len(paths), QUERY_BATCH):
            chunk = list(paths[start : start + QUERY_BATCH])
            expr = f"path in {json.dumps(chunk, ensure_ascii=False)}"
            with _milvus_errors(self.where):
                got = client.query(
                    self._name,
                    filter=_committed(self.meta, expr),
                    output_fields=["path"],
                )
            found += [r["path"] for r in got]
        return found

    def save_meta(self) -> None:
        """Write the gallery record (for an add, the commit)."""
        client = self.client
        with _milvus_errors(self.where):
            client.alter_collection_properties(
                self._name, properties={META_PROPERTY: json.dumps(self.meta)}
            )


def open_collection(
    uri: str, collection: str = DEFAULT_COLLECTION, wait_s: float | None = None
) -> MilvusGallery:
    """The gallery ``collection`` at ``uri``, loaded for search; a Milvus Lite
    database is waited for up to ``wait_s`` (default :data:`READ_WAIT_S`).
    :meth:`MilvusGallery.close` gives it back.

    Raises:
        SearchError: no such database or collection, not an anet-tf gallery,
            a server that does not answer.
        LockHeldError: another process has the Milvus Lite database.
    """
    _check_name(collection)
    client = connect(uri, wait_s=wait_s)
    try:
        name = _committed_name(client, uri, collection)
        meta = None if name is None else _meta_of(client, uri, name)
        if meta is None:
            raise _no_collection(client, uri, collection)
        _load(client, uri, name)
    except BaseException:
        disconnect(uri, client)
        raise
    return MilvusGallery(client, uri, collection, meta, name)


def check_collection_target(
    uri: str, collection: str = DEFAULT_COLLECTION, *, exists: bool = False
) -> None:
    """Raise (one line) unless a gallery can be written as ``collection`` at
    ``uri``: no other writer, and a new collection or an anet-tf gallery
    (replaced by a build); ``exists``: the gallery must be there (an add). A
    Milvus Lite database that does not exist yet is not made here.

    Raises:
        SearchError: not a gallery, no such database or collection, unreachable.
        LockHeldError: another writer (or, past the wait, a reader) has it.
    """
    _check_name(collection)
    if is_lite(uri):
        _pymilvus()
        target = os.path.abspath(uri)
        _check_lite_path(uri, target)
        if not os.path.exists(target):
            if exists:
                connect(uri)  # says: no such database
            return
        # another writer: refused at once (shared: two checks do not refuse each other)
        _writer_lock(uri, shared=True).acquire().release()
    client = connect(uri, wait_s=WRITE_WAIT_S)
    try:
        if not is_lite(uri):
            _ServerWriter(client, uri, collection).check()
        name = _committed_name(client, uri, collection)
        if _meta_of(client, uri, name or collection) is None and exists:
            raise _no_collection(client, uri, collection)
    finally:
        disconnect(uri, client)


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
    if rows.tracks:
        schema.add_field("track_id", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
        schema.add_field("time_last", DataType.INT64)
        schema.add_field("track_length", DataType.INT64)
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


def _insert(
    client, where: str, collection: str, rows: Rows, first_id: int, writer=None
) -> None:
    """Insert ``rows`` with ids ``first_id..`` in batches of :data:`INSERT_BATCH`
    (renewing a server's writer record between batches)."""
    columns = rows.columns
    scalar = ["pid", "camid", "time"] + [
        f"{a['name']}_{s}" for a in rows.model["attributes"] for s in ("pred", "known")
    ]
    if rows.tracks:
        scalar += ["time_last", "track_length"]
    probs = [f"{a['name']}_probs" for a in rows.model["attributes"]]
    bar = Progress(len(rows), "[anet-tf] index: inserting", unit="rows")
    for start in range(0, len(rows), INSERT_BATCH):
        stop = min(start + INSERT_BATCH, len(rows))
        part = {k: columns[k][start:stop].tolist() for k in scalar + probs}
        paths = [p.decode("utf-8") for p in columns["path"][start:stop].tolist()]
        tracks = (
            [t.decode("utf-8") for t in columns["track_id"][start:stop].tolist()]
            if rows.tracks
            else None
        )
        batch = []
        for j in range(stop - start):
            record = {k: part[k][j] for k in scalar + probs}
            record["id"] = first_id + start + j
            record["embedding"] = rows.vectors[start + j]
            record["path"] = paths[j]
            if tracks is not None:
                record["track_id"] = tracks[j]
            batch.append(record)
        with _milvus_errors(where):
            client.insert(collection, batch)
        if writer is not None:
            writer.beat()
        bar.update(stop - start)
    bar.close()


def _roll_back(client, uri: str, collection: str, meta: dict) -> int:
    """Delete the rows an interrupted add left (``id >= next_id``); their number."""
    expr = f"id >= {int(meta['next_id'])}"
    left = _count(client, uri, collection, expr)
    if left:
        with _milvus_errors(uri):
            client.delete(collection, filter=expr)
            client.flush(collection)
    return left


def _build_meta(rows: Rows, kind: str, params: dict) -> dict:
    n, dim = rows.vectors.shape
    return {
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
        **({"rows": "tracks"} if rows.tracks else {}),
    }


def _scalar_fields(model: dict, tracks: bool = False) -> list[str]:
    """The fields search filters on: camera, time (and a track's last time) and
    the attribute class codes."""
    return (
        ["camid", "time"]
        + (["time_last"] if tracks else [])
        + [f"{a['name']}_{s}" for a in model["attributes"] for s in ("pred", "known")]
    )


def build_params(params: dict, lite: bool) -> dict:
    """A vector index's build ``params`` as ``add_index`` takes them: for Milvus
    Lite 3.2 as one JSON ``params`` entry, the one it reads (pymilvus 3 sends each
    as an entry of its own, which a server reads and Milvus Lite ignores, building
    with its defaults: nlist 128, M 16)."""
    return {"params": params} if lite and params else params


def _vector_index(
    client,
    kind: str,
    params: dict,
    model: dict | None = None,
    tracks: bool = False,
    lite: bool = False,
):
    """The index parameters of a new collection: the vector index of ``kind``
    and, for ``model``'s filter fields (:func:`_scalar_fields`), an INVERTED
    scalar index each (Milvus Lite 3.2 builds only INVERTED scalar indexes: it
    refuses STL_SORT; a server takes INVERTED as well), so a filter on few rows
    does not scan every row's fields. ``lite``: the build params in Milvus Lite's
    form (:func:`build_params`)."""
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
        params=build_params(milvus_params, lite),
    )
    for name in _scalar_fields(model, tracks) if model is not None else []:
        index.add_index(field_name=name, index_type="INVERTED")
    return index


def _swap_in(client, uri: str, collection: str, staging: str) -> None:
    """Replace ``collection`` by the complete ``staging``: the old one renamed
    aside, the new one renamed in (the commit), the old one dropped."""
    aside = _aside(collection)
    with _milvus_errors(uri):
        if client.has_collection(aside):
            client.drop_collection(aside)
        replaced = client.has_collection(collection)
        if replaced:
            client.rename_collection(collection, aside)
        client.rename_collection(staging, collection)
        if replaced:
            client.drop_collection(aside)
    _load(client, uri, collection)


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
    replaced), under the writer lock. ``shards``: the collection's shards on a
    server (insert channels; default the server's, 1; Milvus Lite keeps one).
    ``given``: the settings of :func:`~anet_tf.search.gallery.index_params`.

    Raises:
        IndexMismatchError: the files come from different models.
        SearchError: bad input, a collection that is not an anet-tf gallery, a
            server that does not answer; nothing is written.
        LockHeldError: another writer has the gallery.
    """
    del seed  # Milvus trains its IVF lists itself
    pymilvus = _pymilvus()
    _check_name(collection)
    rows = gallery_rows(embeddings)
    _check_rows(rows)
    n, dim = rows.vectors.shape
    params = index_params(kind, n, dim, **given)
    index_type = MILVUS_INDEX.get(kind, kind)
    lite = is_lite(uri)
    if lite and index_type not in LITE_INDEX_TYPES:
        raise SearchError(
            f"--kind {kind}: Milvus Lite ({uri}) cannot load the index type "
            f"{index_type} (it builds {', '.join(LITE_INDEX_TYPES)}); build it on a "
            f"Milvus server (http://host:19530) or in a faiss folder"
        )
    meta = _build_meta(rows, kind, params)
    staging = _staging(collection)
    with _writing(uri, collection, create=True) as (client, writer):
        _meta_of(client, uri, collection)  # refuses a collection of someone else's
        with _milvus_errors(uri):
            client.create_collection(
                staging,
                schema=_schema(pymilvus, rows),
                index_params=_vector_index(
                    client, kind, params, rows.model, rows.tracks, lite
                ),
                properties={META_PROPERTY: json.dumps(meta)},
                **({"num_shards": int(shards)} if shards else {}),
            )
        try:
            if writer is not None:
                writer.mark(staging)
            _insert(client, uri, staging, rows, 0, writer)
            with _milvus_errors(uri):
                client.flush(staging)
            _swap_in(client, uri, collection, staging)
        except BaseException:
            with contextlib.suppress(Exception):
                client.drop_collection(staging)
            raise
        return MilvusGallery(connect(uri), uri, collection, meta)


def add_to_collection(
    uri: str, collection: str, embeddings: Sequence[Embeddings]
) -> tuple[MilvusGallery, Rows]:
    """Append ``embeddings`` to the gallery ``collection`` (ids from its
    ``next_id``), under the writer lock; refused, with nothing written, for
    another model or an image already in it
    (:func:`~anet_tf.search.gallery.check_new_paths`). What an interrupted add
    left is deleted first; the new record is the commit."""
    _check_name(collection)
    with _writing(uri, collection) as (client, writer):
        gallery = _writer_gallery(client, uri, collection)
        try:
            rows = gallery_rows(
                embeddings,
                gallery.model,
                f"the collection {gallery.where}",
                gallery.holds_tracks,
            )
            _check_rows(rows)
            _add_rows(client, gallery, rows, writer)
        except BaseException:
            gallery.close()
            raise
    return gallery, rows


def _writer_gallery(client, uri: str, collection: str) -> MilvusGallery:
    """The gallery ``collection`` for a writer, loaded, with a client of its
    own (it outlives the writer lock)."""
    meta = _meta_of(client, uri, collection)
    if meta is None:
        raise _no_collection(client, uri, collection)
    _load(client, uri, collection)
    return MilvusGallery(connect(uri), uri, collection, meta)


def _add_rows(client, gallery: MilvusGallery, rows: Rows, writer) -> None:
    uri, collection, meta = gallery.path, gallery.collection, gallery.meta
    _roll_back(client, uri, collection, meta)
    check_new_paths(rows, gallery.existing_paths(rows.paths), gallery.where)
    first = int(meta["next_id"])
    try:
        _insert(client, uri, collection, rows, first, writer)
        with _milvus_errors(uri):
            client.flush(collection)
    except BaseException:
        with contextlib.suppress(Exception):  # else the next writer does it
            _roll_back(client, uri, collection, meta)
        raise
    new = dict(meta, next_id=first + len(rows))
    new["count"] = _count(client, uri, collection, _committed(new))
    new["sources"] = [*meta["sources"], *rows.sources]
    new["warnings"] = [*meta.get("warnings", []), *rows.warnings]
    gallery.meta = new
    gallery.save_meta()  # the commit


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
    never in a time range), with one delete call, under the writer lock. Returns
    the gallery, the number deleted and the filter used.

    Raises:
        SearchError: no condition given; ``since`` not before ``until``.
        LockHeldError: another writer has the gallery.
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
    _check_name(collection)
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
    with _writing(uri, collection) as (client, _writer):
        gallery = _writer_gallery(client, uri, collection)
        try:
            meta = gallery.meta
            _roll_back(client, uri, collection, meta)
            count = _count(client, uri, collection, _committed(meta, expr))
            if count:
                with _milvus_errors(uri):
                    client.delete(collection, filter=_committed(meta, expr))
                    client.flush(collection)
            meta["count"] = _count(client, uri, collection, _committed(meta))
            gallery.save_meta()
        except BaseException:
            gallery.close()
            raise
    return gallery, count, expr
