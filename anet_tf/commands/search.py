"""``anet-tf embed`` (images -> an embeddings ``.npz``), ``anet-tf index build`` /
``add`` / ``remove`` (embeddings -> a gallery: a faiss index folder or a Milvus
collection) and ``anet-tf search`` (query images -> the most similar gallery
images, with attribute filters); the work is done by :mod:`anet_tf.search`. Heavy
imports (TensorFlow, faiss, pymilvus) happen inside the functions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from anet_tf.commands.config import add_config_arguments
from anet_tf.commands.errors import UsageError
from anet_tf.progress import silenced
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import KINDS
from anet_tf.search.gallery import REFINES
from anet_tf.search.milvus import DEFAULT_COLLECTION
from anet_tf.search.sources import DATASET_PREFIX

TARGET_HELP = (
    "index folder (faiss), or a Milvus URI: a Milvus Lite database PATH.db or "
    "http://host:19530"
)


def add_collection_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collection",
        default=None,
        help="collection of a Milvus target (default: gallery)",
    )


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="ATTR=CLASS[|CLASS],...",
        help="keep gallery items with these attributes, e.g. color=red,type=sedan "
        "(repeatable; conditions are ANDed, | separates allowed classes)",
    )
    p.add_argument(
        "--labels",
        choices=["predicted", "known"],
        default="predicted",
        help="filter on the predicted attributes (default) or the known labels "
        "from the gallery's manifest or dataset",
    )
    p.add_argument(
        "--camera",
        action="append",
        default=None,
        metavar="ID[,ID|A-B...]",
        help="keep gallery items of these cameras, e.g. 3,7 or 3-7 (repeatable); "
        "items of unknown camera never match",
    )
    p.add_argument(
        "--not-camera",
        action="append",
        default=None,
        metavar="ID[,ID|A-B...]",
        help="leave out gallery items of these cameras (and of unknown camera)",
    )
    p.add_argument(
        "--since",
        default=None,
        metavar="TIME",
        help="keep items captured at or after TIME (ISO 8601, UTC where no offset "
        "is given, or seconds since 1970 UTC); unknown times never match",
    )
    p.add_argument(
        "--until", default=None, metavar="TIME", help="keep items captured before TIME"
    )
    p.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="IVF lists to scan (ivf, ivfpq), candidates kept (hnsw's ef)",
    )


def add_decision_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="the gallery model's `anet-tf calibrate` file: each match's P(same "
        "vehicle) and a same/different decision at --fmr or --probability",
    )
    p.add_argument(
        "--fmr",
        type=float,
        default=None,
        help="with --calibration: decide 'same' at the score threshold of this "
        "false-match rate, e.g. 1e-3",
    )
    p.add_argument(
        "--probability",
        type=float,
        default=None,
        help="with --calibration: decide 'same' where P(same vehicle) reaches "
        "this, e.g. 0.9",
    )


def check_decision_arguments(args) -> None:
    """``--calibration`` with exactly one operating point in (0, 1), or none of
    the three; checked before anything is opened (one line each)."""
    from anet_tf.search.decisions import check_operating_point

    given = [f"--{n}" for n in ("fmr", "probability") if getattr(args, n) is not None]
    if given and not args.calibration:
        raise UsageError(
            f"{' and '.join(given)} read a score threshold from the model's "
            "calibration: give --calibration FILE (of anet-tf calibrate)"
        )
    if args.calibration:
        check_operating_point(args.fmr, args.probability)


def decision_point(args, index):
    """The :class:`~anet_tf.search.decisions.OperatingPoint` of
    ``--calibration`` for ``index``'s model (None without it); another model's
    or a damaged file is refused here, before any query is embedded."""
    if not args.calibration:
        return None
    from anet_tf.search.decisions import operating_point

    return operating_point(
        args.calibration, index.model, fmr=args.fmr, probability=args.probability
    )


def add_query_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    q = p.add_mutually_exclusive_group(required=required)
    q.add_argument(
        "--query",
        nargs="+",
        metavar="IMG",
        help="query images (files, folders or lists of paths), embedded by the index's "
        "model (or --model)",
    )
    q.add_argument(
        "--query-embeddings",
        metavar="FILE.npz",
        help="queries already embedded by `anet-tf embed` (keeps their known ids)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="SavedModel to embed the queries with (default: the index's own)",
    )


# long: argparse declarations of embed/index/search and their options, read top to bottom like --help.
def add_parsers(subparsers) -> None:
    """Add ``embed``, ``index`` and ``search`` to the ``anet-tf`` sub-command
    parsers."""
    p = subparsers.add_parser(
        "embed", help="embeddings and predicted attributes of images (SavedModel)"
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="image folder, manifest .csv, text list of paths, or "
        f"{DATASET_PREFIX}SPLIT "
        "(train|query|gallery of the config's dataset)",
    )
    p.add_argument(
        "--model", required=True, help="exported SavedModel (version folder or base)"
    )
    p.add_argument("-o", "--out", required=True, metavar="FILE.npz", help="output file")
    p.add_argument("--split", default=None, help="keep one split of a manifest")
    p.add_argument(
        "--batch-size", type=int, default=32, help="images per request (default 32)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--per-track",
        action="store_true",
        help="one row per track (the track_id column): its crops' mean embedding",
    )
    add_config_arguments(
        p, f"YAML config or shipped config name, for {DATASET_PREFIX}SPLIT (default: the config stored in the model)"
    )
    p.set_defaults(handler=cmd_embed)

    p = subparsers.add_parser("index", help="gallery index tools")
    p.set_defaults(usage=p.format_help)
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    b = isub.add_parser(
        "build",
        help="build a gallery (faiss index folder or Milvus collection) from "
        "embeddings files",
    )
    b.add_argument(
        "embeddings", nargs="+", metavar="EMBEDDINGS", help="`anet-tf embed` .npz files"
    )
    b.add_argument("-o", "--out", required=True, metavar="TARGET", help=TARGET_HELP)
    add_collection_argument(b)
    b.add_argument(
        "--kind",
        choices=list(KINDS),
        default="flat",
        help="flat: exact inner product (default); ivf, ivfpq, hnsw: approximate, "
        "for galleries beyond about a million images; ivfpqr (faiss): IVF-PQ "
        "whose shortlist is re-ranked on finer codes (--refine, --k-factor)",
    )
    b.add_argument(
        "--refine",
        choices=list(REFINES),
        default=None,
        help="ivfpqr: codes the shortlist is re-ranked on (default fp16 up to 2 GiB "
        "of them, else sq8); fp16-disk: fp16 rows kept in INDEX/refine.npy and "
        "memory-mapped, so only the IVF-PQ is held in memory",
    )
    b.add_argument(
        "--k-factor",
        type=int,
        default=None,
        help="ivfpqr: shortlist of k-factor x top-k re-ranked per query (default 50)",
    )
    b.add_argument(
        "--nlist", type=int, default=None, help="IVF lists (ivf, ivfpq; default ~4*sqrt(N))"
    )
    b.add_argument(
        "--pq-m",
        type=int,
        default=None,
        help="PQ sub-quantizers, bytes an image (ivfpq, ivfpqr; divides D)",
    )
    b.add_argument(
        "--pq-bits", type=int, default=None, help="bits per PQ code (ivfpq; default 8)"
    )
    b.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="default lists scanned per query (ivf, ivfpq)",
    )
    b.add_argument(
        "--hnsw-m", type=int, default=None, help="links per node (hnsw; default 32)"
    )
    b.add_argument(
        "--shards",
        type=int,
        default=None,
        help="shards of a Milvus collection on a server (default 1)",
    )
    b.add_argument("--quiet", action="store_true", help="print only the result")
    b.set_defaults(handler=cmd_index_build)
    a = isub.add_parser(
        "add",
        help="append embeddings files to a gallery (same model; an image already "
        "in it is refused)",
    )
    a.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    a.add_argument(
        "embeddings", nargs="+", metavar="EMBEDDINGS", help="`anet-tf embed` .npz files"
    )
    add_collection_argument(a)
    a.add_argument("--quiet", action="store_true", help="print only the result")
    a.set_defaults(handler=cmd_index_add)
    r = isub.add_parser(
        "remove", help="delete the rows of cameras or of a time range (Milvus)"
    )
    r.add_argument("target", metavar="TARGET", help="Milvus URI (PATH.db or http://...)")
    add_collection_argument(r)
    r.add_argument(
        "--camera",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="rows seen by this camera (repeatable)",
    )
    r.add_argument(
        "--since",
        default=None,
        metavar="TIME",
        help="rows captured at or after TIME (ISO 8601 or seconds since 1970 UTC)",
    )
    r.add_argument(
        "--until", default=None, metavar="TIME", help="rows captured before TIME"
    )
    r.set_defaults(handler=cmd_index_remove)

    p = subparsers.add_parser(
        "search", help="find gallery images like the query images"
    )
    p.add_argument(
        "--index",
        required=True,
        metavar="TARGET",
        help="the gallery of `anet-tf index build`: " + TARGET_HELP,
    )
    add_collection_argument(p)
    add_query_arguments(p, required=True)
    p.add_argument(
        "--top-k", "-k", type=int, default=10, help="matches per query (default 10)"
    )
    add_filter_arguments(p)
    p.add_argument(
        "--exclude-query-camera",
        action="store_true",
        help="leave out gallery items of each query's own camera (queries whose "
        "camera is known: --query-embeddings of a manifest with camera_id or a "
        "dataset split), as the re-id protocol does",
    )
    add_decision_arguments(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (format anet-tf-search/2) instead of a table",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="faiss threads (default: 1 for fewer than 20 queries, else all cores)",
    )
    p.set_defaults(handler=cmd_search)


# ----------------------------------------------------------------------- helpers


def _model_config(model, args):
    """The config of ``--config/--set``, or the one stored in the SavedModel."""
    from anet_tf.config import load_config
    from anet_tf.export.saved_model import saved_model_config

    if args.config:
        return load_config(args.config, args.overrides)
    try:
        return saved_model_config(model.path, args.overrides)
    except FileNotFoundError as exc:
        raise SearchError(f"{exc} for {args.src}") from None


def _print_failures(command: str, failed) -> None:
    for path, reason in failed:
        print(f"anet-tf {command}: skipped {path}: {reason}", file=sys.stderr)


def _open_model(path: str):
    from anet_tf.search.serving import ServingModel

    return ServingModel(path)


def query_embeddings(args, index, *, progress: bool):
    """The queries of ``--query`` (embedded by the index's model or ``--model``) or
    ``--query-embeddings``, checked against the index's model (``search`` and
    ``visualize ranked``)."""
    from anet_tf.search.embed import embed_images
    from anet_tf.search.embeddings import load_embeddings
    from anet_tf.search.sources import list_sources

    if args.query_embeddings:
        emb = load_embeddings(args.query_embeddings)
        index.check_model(
            emb.model, what=f"the query embeddings {args.query_embeddings}, model"
        )
        return emb
    model_path = args.model or index.model["path"]
    if not args.model and not os.path.exists(model_path):
        raise SearchError(
            f"the index's model {model_path} is gone; give the SavedModel that built "
            f"it with --model"
        )
    model = _open_model(model_path)
    index.check_model(model.info(), what="--model" if args.model else "the model")
    images = list_sources(args.query)
    emb = embed_images(model, images, progress=progress and len(images) > 64)
    _print_failures(args.command, emb.failed)
    if not len(emb):
        raise SearchError("no query image could be read")
    return emb


# ---------------------------------------------------------------------- commands


def cmd_embed(args) -> int:
    """``anet-tf embed SRC --model SAVED_MODEL -o FILE.npz``."""
    from anet_tf.search.embed import embed_images
    from anet_tf.search.embeddings import save_embeddings
    from anet_tf.search.sources import dataset_images

    if not args.out.endswith(".npz"):
        raise SearchError(f"-o {args.out}: the embeddings file must end in .npz")
    model = _open_model(args.model)
    if args.src.startswith(DATASET_PREFIX):
        from anet_tf.data.readers import load_dataset

        if args.split:
            raise SearchError(f"{args.src} names its split; drop --split")
        cfg = _model_config(model, args)
        images = dataset_images(load_dataset(cfg), args.src[len(DATASET_PREFIX) :])
    else:
        images = _source_images(args)
    if args.per_track and not any(images.track_ids):
        raise SearchError(
            f"{images.source}: --per-track needs track ids (a 'track_id' column in "
            f"the manifest, or a dataset with tracks); none of its {len(images)} "
            f"images has one"
        )
    names = ", ".join(model.attribute_names) or "none"
    print(
        f"[anet-tf] embedding {len(images)} images from {images.source} with "
        f"{model.path} ({model.embedding_dim}-d, attributes: {names})",
        file=sys.stderr,
    )
    emb = embed_images(
        model, images, batch_size=args.batch_size, progress=not args.quiet
    )
    _print_failures("embed", emb.failed)
    if not len(emb):
        raise SearchError("no image could be read")
    if args.per_track:
        from anet_tf.search.embed import per_track

        images_embedded = len(emb)
        emb = per_track(emb)
        print(f"[anet-tf] {images_embedded} images in {len(emb)} tracks", file=sys.stderr)
    save_embeddings(emb, args.out)
    skipped = f", {len(emb.failed)} skipped (listed above)" if emb.failed else ""
    print(f"wrote {args.out}: {len(emb)} embeddings ({emb.dim}-d){skipped}")
    return 0


def _source_images(args):
    from anet_tf.search.sources import list_images

    if args.config or args.overrides:
        raise SearchError(
            f"--config/--set choose the dataset of {DATASET_PREFIX}SPLIT; {args.src} "
            f"is a folder or file"
        )
    return list_images(args.src, args.split)


def _describe(index) -> str:
    params = index.meta["params"]
    if index.collection is not None:
        from anet_tf.search.milvus import MILVUS_INDEX

        settings = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"Milvus {MILVUS_INDEX[index.kind]}" + (f" ({settings})" if settings else "")
    if getattr(index, "refine_on_disk", False):
        return f"{params['factory']}, re-ranked on fp16 rows on disk (refine.npy)"
    return params.get("factory", "IndexFlatIP, exact")


def cmd_index_build(args) -> int:
    """``anet-tf index build EMBEDDINGS... -o TARGET [--collection NAME]``."""
    from anet_tf.search.embeddings import load_embeddings
    from anet_tf.search.targets import build_gallery
    from anet_tf.search.targets import check_build_target
    from anet_tf.search.targets import close_gallery

    check_build_target(args.out, args.collection)
    embeddings = [load_embeddings(p) for p in args.embeddings]
    with silenced(args.quiet):
        index = build_gallery(
            embeddings,
            args.out,
            args.collection,
            kind=args.kind,
            nlist=args.nlist,
            m=args.pq_m,
            bits=args.pq_bits,
            nprobe=args.nprobe,
            M=args.hnsw_m,
            shards=args.shards,
            **{
                k: v
                for k, v in (("refine", args.refine), ("k_factor", args.k_factor))
                if v is not None
            },
        )
    try:
        for warning in index.meta["warnings"]:
            print(f"anet-tf index: warning: {warning}", file=sys.stderr)
        print(
            f"wrote {index.where}: {len(index)} items, {index.dim}-d, "
            f"{_describe(index)}"
        )
    finally:
        close_gallery(index)  # a Milvus Lite database is free for others again
    return 0


def cmd_index_add(args) -> int:
    """``anet-tf index add TARGET EMBEDDINGS... [--collection NAME]``."""
    from anet_tf.search.embeddings import load_embeddings
    from anet_tf.search.index import read_meta
    from anet_tf.search.milvus import check_collection_target
    from anet_tf.search.targets import add_to_gallery
    from anet_tf.search.targets import close_gallery
    from anet_tf.search.targets import is_milvus_target

    # a bad target (or one another writer has) fails before the files are read
    if is_milvus_target(args.target):
        collection = args.collection or DEFAULT_COLLECTION
        check_collection_target(args.target, collection, exists=True)
    else:
        read_meta(args.target)
    embeddings = [load_embeddings(p) for p in args.embeddings]
    with silenced(args.quiet):
        index, rows = add_to_gallery(args.target, embeddings, args.collection)
    try:
        for warning in rows.warnings:
            print(f"anet-tf index: warning: {warning}", file=sys.stderr)
        print(f"added {len(rows)} items to {index.where}: {len(index)} items")
    finally:
        close_gallery(index)
    return 0


def cmd_index_remove(args) -> int:
    """``anet-tf index remove TARGET [--camera ID] [--since T] [--until T]``."""
    from anet_tf.search.sources import parse_time
    from anet_tf.search.targets import is_milvus_target

    if not is_milvus_target(args.target):
        raise SearchError(
            f"{args.target}: index remove works on a Milvus target (PATH.db or "
            f"http://host:19530); a faiss index folder is rebuilt from the "
            f"embeddings to keep"
        )
    times = {}
    for flag in ("since", "until"):
        value = getattr(args, flag)
        try:
            times[flag] = None if value is None else parse_time(value)
        except ValueError as exc:
            raise SearchError(f"--{flag}: {exc}") from None
    from anet_tf.search.milvus import remove_rows

    index, count, expr = remove_rows(
        args.target, args.collection or DEFAULT_COLLECTION, cameras=args.camera, **times
    )
    with index:  # closed: the Milvus Lite database is free for others again
        print(f"removed {count} items ({expr}) from {index.where}: {len(index)} items")
    return 0


def camera_time_arguments(args) -> dict:
    """``--camera``, ``--not-camera``, ``--since``, ``--until`` as the keyword
    arguments of ``Gallery.search``, checked (one line each where bad)."""
    from anet_tf.search.gallery import camera_time_filter

    return camera_time_filter(args.camera, args.not_camera, args.since, args.until)


def query_cameras(args, emb):
    """Each query's camera for ``--exclude-query-camera`` (None without it).

    Raises:
        SearchError: no query has a known camera.
    """
    if not getattr(args, "exclude_query_camera", False):
        return None
    cams = emb.camids
    if not len(cams) or (cams < 0).all():
        source = args.query_embeddings or " ".join(args.query or [])
        raise SearchError(
            f"--exclude-query-camera: no query of {source} has a known camera; give "
            f"--query-embeddings of images with camera ids (anet-tf embed of a "
            f"manifest with a camera_id column, or of a dataset split)"
        )
    return cams


def search_payload(
    index,
    emb,
    matches,
    where,
    labels,
    camera_time=None,
    exclude_query_camera=False,
    point=None,
) -> dict:
    """The ``--json`` output of ``anet-tf search`` (format
    :data:`~anet_tf.search.decisions.SEARCH_FORMAT`, every field in
    docs/search.md); ``camera_time``: the :func:`camera_time_arguments` it
    searched with; ``point``: the operating point ``matches`` were decided at
    (:meth:`OperatingPoint.decide
    <anet_tf.search.decisions.OperatingPoint.decide>`), None for none."""
    from anet_tf.search.decisions import SEARCH_FORMAT
    from anet_tf.search.decisions import answer

    camera_time = camera_time or {}
    cameras = camera_time.get("cameras")
    results = []
    for i, row in enumerate(matches):
        result = {
            "query": emb.paths[i],
            "attributes": {a: str(emb.predicted[a][i]) for a in emb.attribute_names},
        }
        if point is not None:
            result["answer"] = answer(row)
        results.append({**result, "matches": [m.to_dict() for m in row]})
    payload = {
        "format": SEARCH_FORMAT,
        "index": index.path,
        "kind": index.kind,
        "model": {k: index.model[k] for k in ("path", "fingerprint", "embedding_dim")},
        "where": where,
        "labels": labels,
        "cameras": None if cameras is None else list(cameras),
        "not_cameras": list(camera_time.get("not_cameras", ())),
        "since": camera_time.get("since"),
        "until": camera_time.get("until"),
        "exclude_query_camera": exclude_query_camera,
        "rows": "tracks" if index.holds_tracks else "images",
        **({} if point is None else {"operating_point": point.to_dict()}),
        "results": results,
        "failed": [{"path": p, "reason": r} for p, r in emb.failed],
    }
    if index.collection is not None:
        payload["collection"] = index.collection
    return payload


def _when(seconds: int) -> str:
    """A time as ISO 8601 UTC, "-" unknown."""
    if seconds < 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _track_cells(row) -> tuple:
    """The head and the cells of a gallery of tracks' columns (track id, first and
    last time, crops); for images the capture time where a match of ``row`` has
    one, else "" and none."""
    if not row or row[0].track_id is None:
        if not any(m.time >= 0 for m in row):
            return "", lambda m: ""
        return f"  {'time':<20}", lambda m: f"  {_when(m.time):<20}"
    width = max(5, *(len(m.track_id or "-") for m in row))
    head = f"  {'track':<{width}}  {'first':<20}  {'last':<20}  {'crops':>5}"
    return head, lambda m: (
        f"  {m.track_id or '-':<{width}}  {_when(m.time):<20}  "
        f"{_when(m.time_last):<20}  {m.track_length:>5}"
    )


def _decision_cells(point):
    """The head and the cells of the decision columns (P(same), decision); ""
    and none without an operating point."""
    if point is None:
        return "", lambda m: ""
    return (
        f"  {'P(same)':>7}  {'decision':<9}",
        lambda m: f"  {m.probability:>7.3f}  {m.decision:<9}",
    )


def format_search_table(
    emb, matches, attribute_names, labels: str = "predicted", point=None
) -> str:
    """The table ``anet-tf search`` prints: per query (with its predicted
    attributes), rank, score, the matches' ``labels`` (predicted or known)
    attributes, ids and path; for a gallery of tracks also each track's id, first
    and last time (UTC) and crops. With an operating point (``point``, the
    matches decided at it): first a line saying where it decides, each match's
    P(same vehicle) and decision, and a "no match" line under a query none of
    whose matches is the same vehicle."""
    from anet_tf.search.decisions import NO_MATCH
    from anet_tf.search.decisions import answer

    lines = []
    if point is not None:
        lines += [
            f"same vehicle at score >= {point.threshold:.4f} ({point.describe()} of "
            f"{point.calibration.path})",
            "",
        ]
    decision_head, decision = _decision_cells(point)
    for i, row in enumerate(matches):
        attrs = " ".join(f"{a}={emb.predicted[a][i]}" for a in attribute_names)
        lines.append(
            f"query {emb.paths[i]}" + (f"  (predicted {attrs})" if attrs else "")
        )
        if not row:
            lines.append(
                "  no gallery item matches"
                if point is None
                else "  no match: no gallery item passes the filters"
            )
            lines.append("")
            continue

        def value(m, a):
            return (m.predicted if labels == "predicted" else m.known)[a] or "-"

        heads = {
            a: a if labels == "predicted" else f"{a} (known)" for a in attribute_names
        }
        widths = {
            a: max(len(heads[a]), *(len(value(m, a)) for m in row))
            for a in attribute_names
        }
        head = f"  {'rank':>4}  {'score':>6}  " + "  ".join(
            f"{heads[a]:<{widths[a]}}" for a in attribute_names
        )
        track_head, track = _track_cells(row)
        lines.append(f"{head}  {'id':>5}  {'cam':>3}{track_head}{decision_head}  path")
        for m in row:
            cells = "  ".join(f"{value(m, a):<{widths[a]}}" for a in attribute_names)
            pid = str(m.pid) if m.pid >= 0 else "-"
            cam = str(m.camid) if m.camid >= 0 else "-"
            lines.append(
                f"  {m.rank:>4}  {m.score:>6.3f}  {cells}  {pid:>5}  {cam:>3}"
                f"{track(m)}{decision(m)}  {m.path}"
            )
        if point is not None and answer(row) == NO_MATCH:
            lines.append(
                f"  no match: no gallery item reaches score {point.threshold:.4f} "
                f"({point.describe()})"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def cmd_search(args) -> int:
    """``anet-tf search --index TARGET --query IMG... --top-k K [--where ...]
    [--calibration FILE --fmr F | --probability P]``."""
    from anet_tf.search.gallery import parse_where
    from anet_tf.search.index import search_threads
    from anet_tf.search.targets import close_gallery
    from anet_tf.search.targets import open_gallery

    where = parse_where(args.where)
    camera_time = camera_time_arguments(args)
    check_decision_arguments(args)
    index = open_gallery(args.index, args.collection)
    try:
        # a bad filter or calibration fails before embedding
        index.selection(
            where,
            args.labels,
            **camera_time,
            by_query_camera=args.exclude_query_camera,
        )
        point = decision_point(args, index)
        if args.query:  # embedding images takes a while: Milvus Lite is free meanwhile
            close_gallery(index)  # (and opened again to search)
        emb = query_embeddings(args, index, progress=not args.json)
        scores, ids = index.search(
            emb.embedding,
            args.top_k,
            where=where,
            labels=args.labels,
            **camera_time,
            query_cameras=query_cameras(args, emb),
            nprobe=args.nprobe,
            threads=args.threads or search_threads(len(emb)),
        )
        matches = index.matches(scores, ids)
    finally:
        close_gallery(index)  # a Milvus Lite database: other processes may open it
    if point is not None:
        matches = point.decide(matches)
    if args.json:
        print(
            json.dumps(
                search_payload(
                    index,
                    emb,
                    matches,
                    where,
                    args.labels,
                    camera_time,
                    args.exclude_query_camera,
                    point,
                ),
                indent=2,
            )
        )
    else:
        print(
            format_search_table(emb, matches, index.attribute_names, args.labels, point)
        )
    return 0
