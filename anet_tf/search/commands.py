"""The ``embed``, ``index build``, ``search`` and ``visualize`` commands.

``anet_tf.cli`` wires them in with::

    from anet_tf.search import commands as search_commands

    search_commands.add_parsers(sub)          # in build_parser()
    COMMANDS.update(search_commands.dispatch)  # {command: fn(args) -> exit code}

Each function prints its errors (``anet-tf <command>: error: ...``) and returns an
exit code: 0 done, 1 failed, 2 usage. Heavy imports (TensorFlow, faiss,
matplotlib) happen inside the functions.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from anet_tf.config import add_config_arguments
from anet_tf.search.embed import DATASET_PREFIX
from anet_tf.search.embed import SearchError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _filter_args(p: argparse.ArgumentParser) -> None:
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
        "--nprobe", type=int, default=None, help="IVF lists to scan (ivfpq index)"
    )


def _query_args(p: argparse.ArgumentParser, required: bool) -> None:
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


def add_parsers(subparsers) -> None:
    """Add ``embed``, ``index``, ``search`` and ``visualize`` to the ``anet-tf``
    sub-command parsers."""
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
    add_config_arguments(
        p, f"YAML config or shipped config name, for {DATASET_PREFIX}SPLIT (default: the config stored in the model)"
    )

    p = subparsers.add_parser("index", help="gallery index tools")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    p.set_defaults(_usage=p.format_help)
    b = isub.add_parser(
        "build", help="build a faiss gallery index from embeddings files"
    )
    b.add_argument(
        "embeddings", nargs="+", metavar="EMBEDDINGS", help="`anet-tf embed` .npz files"
    )
    b.add_argument("-o", "--out", required=True, metavar="INDEX", help="index folder")
    b.add_argument(
        "--kind",
        choices=["flat", "ivfpq"],
        default="flat",
        help="flat: exact inner product (default); ivfpq: approximate, for "
        "galleries beyond about a million images",
    )
    b.add_argument(
        "--nlist", type=int, default=None, help="IVF lists (ivfpq; default ~4*sqrt(N))"
    )
    b.add_argument(
        "--pq-m", type=int, default=None, help="PQ sub-quantizers (ivfpq; divides D)"
    )
    b.add_argument(
        "--pq-bits", type=int, default=None, help="bits per PQ code (ivfpq; default 8)"
    )
    b.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="default lists scanned per query (ivfpq)",
    )

    p = subparsers.add_parser(
        "search", help="find gallery images like the query images"
    )
    p.add_argument(
        "--index", required=True, help="index folder (`anet-tf index build`)"
    )
    _query_args(p, required=True)
    p.add_argument(
        "--top-k", "-k", type=int, default=10, help="matches per query (default 10)"
    )
    _filter_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="faiss threads (default: 1 for fewer than 20 queries, else all cores)",
    )

    p = subparsers.add_parser(
        "visualize",
        help="pictures: ranked lists, activation maps, curves, CMC, confusion "
        "matrices, projector",
    )
    vsub = p.add_subparsers(dest="visualize_command", metavar="PICTURE")
    p.set_defaults(_usage=p.format_help)

    v = vsub.add_parser(
        "ranked", help="queries and their top-k matches, framed (Figure 4)"
    )
    v.add_argument("--index", required=True, help="index folder")
    _query_args(v, required=True)
    v.add_argument(
        "--num-queries",
        type=int,
        default=4,
        help="rows drawn from --query-embeddings (default 4)",
    )
    v.add_argument(
        "--seed", type=int, default=0, help="which queries --num-queries picks"
    )
    v.add_argument(
        "--top-k", "-k", type=int, default=8, help="matches per query (default 8)"
    )
    v.add_argument(
        "--keep-same-camera",
        action="store_true",
        help="show gallery images of the query's vehicle from the query's camera "
        "(the re-id protocol leaves them out)",
    )
    _filter_args(v)
    v.add_argument("--title", default="", help="picture title")
    v.add_argument("-o", "--out", required=True, help="output PNG")

    v = vsub.add_parser(
        "activation", help="G and G_reid maps over images (Figure 4, rows 2-3)"
    )
    v.add_argument(
        "--run", required=True, help="run directory (config.yaml and checkpoints)"
    )
    v.add_argument(
        "--image",
        nargs="+",
        required=True,
        metavar="IMG",
        help="images (files, folders or lists)",
    )
    v.add_argument(
        "--max-images", type=int, default=8, help="columns at most (default 8)"
    )
    add_config_arguments(v, config=False)
    v.add_argument("-o", "--out", required=True, help="output PNG")

    v = vsub.add_parser("curves", help="training curves of a run's log.csv")
    v.add_argument("run", metavar="RUN_DIR|LOG_CSV")
    v.add_argument("-o", "--out", required=True, help="output PNG")

    v = vsub.add_parser("cmc", help="CMC curves of `anet-tf evaluate --json-out` files")
    v.add_argument("files", nargs="+", metavar="EVAL_JSON")
    v.add_argument(
        "--label", action="append", default=[], help="legend label per file (in order)"
    )
    v.add_argument("--max-rank", type=int, default=20, help="ranks shown (default 20)")
    v.add_argument("-o", "--out", required=True, help="output PNG")

    v = vsub.add_parser(
        "confusion",
        help="confusion matrix of each attribute, from a run's metrics.json",
    )
    v.add_argument("--run", required=True, help="run directory (its metrics.json)")
    v.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="DIR",
        help="folder for confusion_<attribute>.png (default: the run directory)",
    )

    v = vsub.add_parser(
        "projector", help="TensorBoard projector export with sprites and attributes"
    )
    v.add_argument("embeddings", metavar="EMBEDDINGS", help="`anet-tf embed` .npz file")
    v.add_argument(
        "-o", "--out", required=True, metavar="LOG_DIR", help="TensorBoard log folder"
    )
    v.add_argument(
        "--max-images",
        type=int,
        default=10000,
        help="sample down to this many (default 10000)",
    )
    v.add_argument(
        "--thumb-size",
        type=int,
        default=None,
        help="thumbnail side in px (default <= 64)",
    )


# ----------------------------------------------------------------------- helpers


def _reports_errors(command: str):
    """Print a :class:`SearchError` (and the package's config and data errors) as
    ``anet-tf <command>: error: ...`` and return exit code 1."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(args) -> int:
            from anet_tf.config import ConfigError
            from anet_tf.data.records import DataError

            try:
                return fn(args)
            except (SearchError, ConfigError, DataError, FileNotFoundError) as exc:
                print(f"anet-tf {command}: error: {exc}", file=sys.stderr)
                return EXIT_FAILED

        return run

    return wrap


def _images(sources, split=None):
    """The :class:`ImageList` of several sources, concatenated."""
    import numpy as np

    from anet_tf.search.embed import ImageList
    from anet_tf.search.embed import list_images

    lists = [list_images(src, split) for src in sources]
    if len(lists) == 1:
        return lists[0]
    names = set().union(*(lst.known for lst in lists))
    known = {
        a: [v for lst in lists for v in lst.known.get(a, [""] * len(lst))]
        for a in names
    }
    return ImageList(
        paths=[p for lst in lists for p in lst.paths],
        pids=np.concatenate([lst.pids for lst in lists]),
        camids=np.concatenate([lst.camids for lst in lists]),
        known=known,
        source=" ".join(sources),
    )


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
    from anet_tf.search.embed import ServingModel

    return ServingModel(path)


def _query_embeddings(args, index, *, progress: bool):
    """The queries of ``--query`` (embedded by the index's model or ``--model``) or
    ``--query-embeddings``, checked against the index's model."""
    from anet_tf.search.embed import embed_images
    from anet_tf.search.embed import load_embeddings

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
    images = _images(args.query)
    emb = embed_images(model, images, progress=progress and len(images) > 64)
    _print_failures(args.command, emb.failed)
    if not len(emb):
        raise SearchError("no query image could be read")
    return emb


# ---------------------------------------------------------------------- commands


@_reports_errors("embed")
def cmd_embed(args) -> int:
    """``anet-tf embed SRC --model SAVED_MODEL -o FILE.npz``."""
    from anet_tf.search.embed import dataset_images
    from anet_tf.search.embed import embed_images
    from anet_tf.search.embed import save_embeddings

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
        print("anet-tf embed: error: no image could be read", file=sys.stderr)
        return EXIT_FAILED
    save_embeddings(emb, args.out)
    skipped = f", {len(emb.failed)} skipped (listed above)" if emb.failed else ""
    print(f"wrote {args.out}: {len(emb)} embeddings ({emb.dim}-d){skipped}")
    return 0


def _source_images(args):
    if args.config or args.overrides:
        raise SearchError(
            f"--config/--set choose the dataset of {DATASET_PREFIX}SPLIT; {args.src} "
            f"is a folder or file"
        )
    return _images([args.src], args.split)


@_reports_errors("index")
def cmd_index(args) -> int:
    """``anet-tf index build EMBEDDINGS... -o INDEX``."""
    if getattr(args, "index_command", None) != "build":
        print(args._usage(), file=sys.stderr)
        return EXIT_USAGE
    from anet_tf.search.embed import load_embeddings
    from anet_tf.search.index import build_index
    from anet_tf.search.index import check_index_target

    check_index_target(args.out)
    embeddings = [load_embeddings(p) for p in args.embeddings]
    index = build_index(
        embeddings,
        kind=args.kind,
        nlist=args.nlist,
        m=args.pq_m,
        bits=args.pq_bits,
        nprobe=args.nprobe,
    )
    for warning in index.meta["warnings"]:
        print(f"anet-tf index: warning: {warning}", file=sys.stderr)
    index.save(args.out)
    params = index.meta["params"].get("factory", "IndexFlatIP, exact")
    print(f"wrote {args.out}: {len(index)} items, {index.dim}-d, {params}")
    return 0


def search_payload(index, emb, matches, where, labels) -> dict:
    """The ``--json`` output of ``anet-tf search``."""
    results = []
    for i, row in enumerate(matches):
        results.append(
            {
                "query": emb.paths[i],
                "attributes": {
                    a: str(emb.predicted[a][i]) for a in emb.attribute_names
                },
                "matches": [m.to_dict() for m in row],
            }
        )
    return {
        "index": index.path,
        "kind": index.kind,
        "model": {k: index.model[k] for k in ("path", "fingerprint", "embedding_dim")},
        "where": where,
        "labels": labels,
        "results": results,
        "failed": [{"path": p, "reason": r} for p, r in emb.failed],
    }


def format_search_table(
    emb, matches, attribute_names, labels: str = "predicted"
) -> str:
    """The table ``anet-tf search`` prints: per query (with its predicted
    attributes), rank, score, the matches' ``labels`` (predicted or known)
    attributes, ids and path."""
    lines = []
    for i, row in enumerate(matches):
        attrs = " ".join(f"{a}={emb.predicted[a][i]}" for a in attribute_names)
        lines.append(
            f"query {emb.paths[i]}" + (f"  (predicted {attrs})" if attrs else "")
        )
        if not row:
            lines.append("  no gallery item matches")
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
        lines.append(f"{head}  {'id':>5}  {'cam':>3}  path")
        for m in row:
            cells = "  ".join(f"{value(m, a):<{widths[a]}}" for a in attribute_names)
            pid = str(m.pid) if m.pid >= 0 else "-"
            cam = str(m.camid) if m.camid >= 0 else "-"
            lines.append(
                f"  {m.rank:>4}  {m.score:>6.3f}  {cells}  {pid:>5}  {cam:>3}  {m.path}"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def search_threads(num_queries: int) -> int:
    """faiss threads for a search: 1 for a few queries (faiss then scans the
    gallery once per query, and a second OpenMP thread made a batch-1 query 2x
    slower on 2 cores, 8x on a busy machine: ``benchmarks/search.py``), all cores
    (0) for a batch of 20 or more, which faiss runs as one matrix product."""
    return 1 if num_queries < 20 else 0


@_reports_errors("search")
def cmd_search(args) -> int:
    """``anet-tf search --index INDEX --query IMG... --top-k K [--where ...]``."""
    from anet_tf.search.index import load_index
    from anet_tf.search.index import parse_where

    where = parse_where(args.where)
    index = load_index(args.index)
    index.filter_mask(where, args.labels)  # a bad filter fails before embedding
    emb = _query_embeddings(args, index, progress=not args.json)
    scores, ids = index.search(
        emb.embedding,
        args.top_k,
        where=where,
        labels=args.labels,
        nprobe=args.nprobe,
        threads=args.threads or search_threads(len(emb)),
    )
    matches = index.matches(scores, ids)
    if args.json:
        print(
            json.dumps(
                search_payload(index, emb, matches, where, args.labels), indent=2
            )
        )
    else:
        print(format_search_table(emb, matches, index.attribute_names, args.labels))
    return 0


@_reports_errors("visualize")
def cmd_visualize(args) -> int:
    """``anet-tf visualize ranked|activation|curves|cmc|confusion|projector ...``."""
    handler = {
        "ranked": _visualize_ranked,
        "activation": _visualize_activation,
        "curves": _visualize_curves,
        "cmc": _visualize_cmc,
        "confusion": _visualize_confusion,
        "projector": _visualize_projector,
    }.get(getattr(args, "visualize_command", None))
    if handler is None:
        print(args._usage(), file=sys.stderr)
        return EXIT_USAGE
    return handler(args)


def _pick_queries(emb, index, num: int, seed: int):
    """Up to ``num`` query positions, seeded; where ids are known, only queries
    whose vehicle is in the gallery."""
    import numpy as np

    candidates = np.arange(len(emb))
    if (emb.pids >= 0).any():
        in_gallery = np.isin(emb.pids, index.items["pid"][index.items["pid"] >= 0])
        if in_gallery.any():
            candidates = candidates[in_gallery]
    if num >= len(candidates):
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, num, replace=False))


def _visualize_ranked(args) -> int:
    import numpy as np

    from anet_tf.search.index import load_index
    from anet_tf.search.index import parse_where
    from anet_tf.visualize import RankedRow
    from anet_tf.visualize import plot_ranked_list

    where = parse_where(args.where)
    index = load_index(args.index)
    index.filter_mask(where, args.labels)
    emb = _query_embeddings(args, index, progress=True)
    rows = np.arange(len(emb))
    if args.query_embeddings:
        rows = _pick_queries(emb, index, args.num_queries, args.seed)
    path_ids = {p: i for i, p in enumerate(index.paths)}
    exclude = []
    for i in rows:
        drop = (
            []
            if args.keep_same_camera
            else index.same_pid_camera(int(emb.pids[i]), int(emb.camids[i])).tolist()
        )
        if emb.paths[i] in path_ids:
            drop.append(path_ids[emb.paths[i]])
        exclude.append(np.asarray(drop, np.int64))
    scores, ids = index.search(
        emb.embedding[rows],
        args.top_k,
        where=where,
        labels=args.labels,
        nprobe=args.nprobe,
        exclude=exclude,
        threads=search_threads(len(rows)),
    )
    matches = index.matches(scores, ids)
    ranked = []
    for i, row in zip(rows, matches, strict=True):
        shown = emb.predicted if args.labels == "predicted" else emb.known
        text = " ".join(str(shown[a][i]) for a in emb.attribute_names)
        if emb.pids[i] >= 0:
            text = (
                f"id {emb.pids[i]}"
                + (f" c{emb.camids[i]}" if emb.camids[i] >= 0 else "")
                + f"\n{text}"
            )
        ranked.append(RankedRow(emb.paths[i], int(emb.pids[i]), text, row))
    title = args.title
    if not title:
        title = f"top-{args.top_k} of {len(index)} gallery images"
        if where:
            title += f" where ({args.labels}) " + ", ".join(
                f"{a}={'|'.join(v)}" for a, v in where.items()
            )
    plot_ranked_list(ranked, args.out, args.top_k, title=title, attributes=args.labels)
    print(f"wrote {args.out}")
    return 0


def run_weights(run_dir: str) -> str:
    """The network weights of a run: its best checkpoint, else its latest."""
    from anet_tf.training.checkpoint import run_checkpoint

    try:
        return os.path.join(run_checkpoint(run_dir), "net.weights.h5")
    except FileNotFoundError as exc:
        raise SearchError(str(exc)) from None


def _visualize_activation(args) -> int:
    import dataclasses

    from anet_tf.config import apply_overrides
    from anet_tf.data.readers import load_dataset
    from anet_tf.model import build_model_from_config
    from anet_tf.training.fit import load_run_config
    from anet_tf.visualize import activation_maps
    from anet_tf.visualize import plot_activation_maps

    cfg = load_run_config(args.run)
    if args.overrides:
        cfg = apply_overrides(cfg, args.overrides)
    # The trained weights replace any pretrained backbone; its file need not exist.
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, pretrained=None)
    )
    dataset = load_dataset(cfg, check_images=False)
    net = build_model_from_config(
        cfg, len(dataset.train_pids()), dataset.num_classes, load_pretrained=False
    )
    net.load_weights(run_weights(args.run))
    paths = _images(args.image).paths[: args.max_images]
    maps = activation_maps(net, paths, cfg.data.image_size)
    titles = [os.path.basename(p) for p in paths]
    plot_activation_maps(
        maps,
        args.out,
        titles=titles,
        title=f"activation maps of {os.path.basename(os.path.abspath(args.run))}",
    )
    print(f"wrote {args.out}")
    return 0


def _visualize_curves(args) -> int:
    from anet_tf.visualize import plot_training_curves

    plot_training_curves(args.run, args.out)
    print(f"wrote {args.out}")
    return 0


def _visualize_cmc(args) -> int:
    from anet_tf.visualize import plot_cmc
    from anet_tf.visualize import read_cmc

    if args.label and len(args.label) != len(args.files):
        raise SearchError(
            f"--label given {len(args.label)} times for {len(args.files)} files"
        )
    curves = []
    for i, path in enumerate(args.files):
        cmc, payload = read_cmc(path)
        label = (
            args.label[i]
            if args.label
            else f"{payload.get('dataset', '?')} ({payload.get('feature', '?')})"
        )
        metrics = payload.get("metrics", {})
        if "mAP" in metrics and not args.label:
            label += f", mAP {100 * metrics['mAP']:.1f}%"
        curves.append((label, cmc))
    plot_cmc(curves, args.out, max_rank=args.max_rank)
    print(f"wrote {args.out}")
    return 0


def _visualize_confusion(args) -> int:
    from anet_tf.visualize import plot_confusion
    from anet_tf.visualize import read_attribute_accuracy

    attributes = read_attribute_accuracy(args.run)
    out_dir = args.out or args.run
    for name, accuracy in attributes.items():
        path = os.path.join(out_dir, f"confusion_{name}.png")
        plot_confusion(name, accuracy, path)
        print(f"wrote {path}")
    return 0


def _visualize_projector(args) -> int:
    from anet_tf.search.embed import load_embeddings
    from anet_tf.visualize import export_projector

    emb = load_embeddings(args.embeddings)
    out = export_projector(
        emb, args.out, max_images=args.max_images, thumb_size=args.thumb_size
    )
    print(
        f"wrote {out['count']} embeddings with {out['thumb_size']} px thumbnails to "
        f"{args.out}; view with: tensorboard --logdir {args.out} (PROJECTOR tab)"
    )
    return 0


dispatch = {
    "embed": cmd_embed,
    "index": cmd_index,
    "search": cmd_search,
    "visualize": cmd_visualize,
}
