"""``anet-tf visualize``: ranked lists, activation maps, training curves, CMC
curves, confusion matrices and the TensorBoard projector export.

The pictures are drawn by :mod:`anet_tf.visualize` from plain data; these
commands read that data (an index and query embeddings through
:mod:`anet_tf.search`, a run's network, log or metrics) and hand it over.
"""

from __future__ import annotations

import os

from anet_tf.commands.config import add_config_arguments
from anet_tf.commands.errors import UsageError
from anet_tf.commands.search import add_decision_arguments
from anet_tf.commands.search import add_filter_arguments
from anet_tf.commands.search import add_query_arguments
from anet_tf.commands.search import camera_time_arguments
from anet_tf.commands.search import check_decision_arguments
from anet_tf.commands.search import decision_point
from anet_tf.commands.search import query_embeddings


# long: argparse declarations of the six pictures and their options, read top to bottom like --help.
def add_visualize_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="pictures: ranked lists, activation maps, curves, CMC, confusion "
        "matrices, projector",
    )
    p.set_defaults(usage=p.format_help)
    vsub = p.add_subparsers(dest="visualize_command", metavar="PICTURE")

    v = vsub.add_parser(
        "ranked", help="queries and their top-k matches, framed (Figure 4)"
    )
    v.add_argument("--index", required=True, help="index folder")
    add_query_arguments(v, required=True)
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
    add_filter_arguments(v)
    add_decision_arguments(v)
    v.add_argument("--title", default="", help="picture title")
    v.add_argument("-o", "--out", required=True, help="output PNG")
    v.set_defaults(handler=_visualize_ranked)

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
    v.set_defaults(handler=_visualize_activation)

    v = vsub.add_parser("curves", help="training curves of a run's log.csv")
    v.add_argument("run", metavar="RUN_DIR|LOG_CSV", help="a run folder or its log.csv")
    v.add_argument("-o", "--out", required=True, help="output PNG")
    v.set_defaults(handler=_visualize_curves)

    v = vsub.add_parser("cmc", help="CMC curves of `anet-tf evaluate --json-out` files")
    v.add_argument(
        "files", nargs="+", metavar="EVAL_JSON", help="files of `anet-tf evaluate --json-out`"
    )
    v.add_argument(
        "--label", action="append", default=[], help="legend label per file (in order)"
    )
    v.add_argument("--max-rank", type=int, default=20, help="ranks shown (default 20)")
    v.add_argument("-o", "--out", required=True, help="output PNG")
    v.set_defaults(handler=_visualize_cmc)

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
    v.set_defaults(handler=_visualize_confusion)

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
    v.set_defaults(handler=_visualize_projector)

    v = vsub.add_parser(
        "roc", help="score histograms, thresholds and ROC of an `anet-tf calibrate` file"
    )
    v.add_argument("--calibration", required=True, help="file of `anet-tf calibrate`")
    v.add_argument("-o", "--out", required=True, help="output PNG")
    v.set_defaults(handler=_visualize_roc)


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
    from anet_tf.search.index import search_threads
    from anet_tf.visualize import RankedRow
    from anet_tf.visualize import plot_ranked_list

    where = parse_where(args.where)
    camera_time = camera_time_arguments(args)
    check_decision_arguments(args)
    index = load_index(args.index)
    index.filter_mask(where, args.labels, **camera_time)
    point = decision_point(args, index)
    emb = query_embeddings(args, index, progress=True)
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
        **camera_time,
        nprobe=args.nprobe,
        exclude=exclude,
        threads=search_threads(len(rows)),
    )
    matches = index.matches(scores, ids)
    if point is not None:
        matches = point.decide(matches)
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
    decisions = (
        ""
        if point is None
        else f"score >= {point.threshold:.4f} ({point.describe()})"
    )
    plot_ranked_list(
        ranked,
        args.out,
        args.top_k,
        title=title,
        attributes=args.labels,
        decisions=decisions,
    )
    print(f"wrote {args.out}")
    return 0


def _visualize_activation(args) -> int:
    from anet_tf.config import apply_overrides
    from anet_tf.evaluation.activation import activation_maps
    from anet_tf.search.sources import list_sources
    from anet_tf.training.run_checkpoints import Run
    from anet_tf.visualize import plot_activation_maps

    run = Run(args.run)
    net = run.network()  # its best, else newest, checkpoint; no dataset read
    cfg = run.config
    if args.overrides:
        cfg = apply_overrides(cfg, args.overrides)
    paths = list_sources(args.image).paths[: args.max_images]
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
        raise UsageError(
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
    from anet_tf.search.embeddings import load_embeddings
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


def _visualize_roc(args) -> int:
    from anet_tf.evaluation.calibration import load_calibration
    from anet_tf.visualize import plot_roc

    calibration = load_calibration(args.calibration, None)
    model = calibration.payload["model"]
    plot_roc(
        calibration.same,
        calibration.different,
        calibration.operating_points,
        args.out,
        title=f"{model.get('path', '?')} (fingerprint {calibration.fingerprint}) on "
        f"{calibration.payload['pairs']['protocol']}",
    )
    print(f"wrote {args.out}")
    return 0
