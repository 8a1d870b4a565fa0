"""A gallery by its target: a faiss index folder (:mod:`anet_tf.search.index`) or a
Milvus URI (:mod:`anet_tf.search.milvus`), opened, built and added to with the same
call, so the commands are written once. Writes to a faiss folder hold its writer's
lock and replace it whole (see :mod:`anet_tf.search.index`)."""

from __future__ import annotations

from collections.abc import Sequence

from anet_tf.search.embeddings import Embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import Gallery
from anet_tf.search.gallery import Rows
from anet_tf.search.index import add_to_index
from anet_tf.search.index import build_index
from anet_tf.search.index import check_index_target
from anet_tf.search.index import load_index
from anet_tf.search.index import writer_lock
from anet_tf.search.milvus import DEFAULT_COLLECTION
from anet_tf.search.milvus import MILVUS_SCHEMES
from anet_tf.search.milvus import add_to_collection
from anet_tf.search.milvus import build_collection
from anet_tf.search.milvus import check_collection_target
from anet_tf.search.milvus import open_collection


def is_milvus_target(target: str) -> bool:
    """A Milvus URI (``http(s)://``, ``tcp://``, ``grpc://``, ``unix:``) or a
    Milvus Lite database file (``*.db``); anything else is a faiss folder."""
    return target.startswith(MILVUS_SCHEMES) or target.endswith(".db")


def open_gallery(target: str, collection: str | None = None) -> Gallery:
    """The gallery at ``target``: a faiss index folder, or a Milvus URI with
    ``collection`` (default ``gallery``).

    Raises:
        SearchError: nothing there, not a gallery, unreachable, damaged.
    """
    if is_milvus_target(target):
        return open_collection(target, collection or DEFAULT_COLLECTION)
    _no_collection(target, collection)
    return load_index(target)


def close_gallery(gallery: Gallery) -> None:
    """Give back what ``gallery`` holds: a Milvus Lite database is then free for
    other processes (Milvus Lite serves one at a time); nothing for a faiss index
    without a ``close``."""
    close = getattr(gallery, "close", None)
    if close is not None:
        close()


def check_build_target(target: str, collection: str | None = None) -> None:
    """Raise :class:`SearchError` (one line) unless ``target`` can receive a new
    gallery; called before any work is spent."""
    if is_milvus_target(target):
        check_collection_target(target, collection or DEFAULT_COLLECTION)
        return
    _no_collection(target, collection)
    check_index_target(target)


def build_gallery(
    embeddings: Sequence[Embeddings],
    target: str,
    collection: str | None = None,
    *,
    kind: str = "flat",
    **params,
) -> Gallery:
    """Build a gallery of ``embeddings`` at ``target`` (an existing gallery there is
    replaced once the new one is complete); ``params`` are those of
    :func:`~anet_tf.search.gallery.index_params` (nlist, m, bits, nprobe, M), and
    ``shards`` for Milvus. A faiss folder is built and written under its writer's
    lock (:func:`~anet_tf.search.index.writer_lock`).

    Raises:
        LockHeldError: another process is writing the faiss folder ``target``.
        GalleryDiskFullError: the disk filled up (the old folder is kept).
    """
    if is_milvus_target(target):
        if kind == "ivfpqr":
            # Its server counterpart (IVF_RABITQ with an FP16 refine) cannot be
            # built or searched by Milvus Lite, so it is not offered untested:
            # docs/search.md, "Milvus index types on Milvus Lite, measured".
            raise SearchError(
                f"--kind ivfpqr: {target} is a Milvus target; ivfpqr is a faiss index "
                f"(give a folder), a Milvus collection takes flat, ivf, ivfpq (a "
                f"server) or hnsw"
            )
        return build_collection(
            embeddings, target, collection or DEFAULT_COLLECTION, kind=kind, **params
        )
    _no_collection(target, collection)
    if params.pop("shards", None):
        raise SearchError(
            f"--shards: {target} is a faiss index folder, on one machine; shards are "
            f"those of a Milvus collection"
        )
    with writer_lock(target):  # a second writer is refused before the work
        index = build_index(embeddings, kind=kind, **params)
        index.save(target)
    return index


def add_to_gallery(
    target: str, embeddings: Sequence[Embeddings], collection: str | None = None
) -> tuple[Gallery, Rows]:
    """Append ``embeddings`` to the gallery at ``target``: same model, no image
    already there (:func:`~anet_tf.search.gallery.check_new_paths`); all checks
    come before anything is written. Returns the gallery and the rows added. A
    faiss folder is read and rewritten under its writer's lock
    (:func:`~anet_tf.search.index.add_to_index`)."""
    if is_milvus_target(target):
        return add_to_collection(target, collection or DEFAULT_COLLECTION, embeddings)
    _no_collection(target, collection)
    return add_to_index(target, embeddings)


def _no_collection(target: str, collection: str | None) -> None:
    if collection is not None:
        raise SearchError(
            f"--collection {collection}: {target} is a faiss index folder, which holds "
            f"one gallery; a collection is part of a Milvus target (a .db file or "
            f"http://host:19530)"
        )
