"""``anet-tf link``: tracks of several cameras (a per-track embeddings file) joined
into vehicles, one global id per track; the work is done by
:mod:`anet_tf.search.link` and the files by :mod:`anet_tf.search.link_files`.
NumPy and SciPy: no TensorFlow."""

from __future__ import annotations

import sys

from anet_tf.commands.errors import UsageError

DEFAULT_FMR = 1e-3


def add_link_parser(subparsers) -> None:
    from anet_tf.search.link import METHODS

    p = subparsers.add_parser(
        "link",
        help="link tracks across cameras into vehicles (global ids)",
    )
    p.add_argument(
        "tracks",
        metavar="TRACKS.npz",
        help="embeddings with track ids: `anet-tf embed --per-track` (or one row "
        "per crop, grouped by track_id)",
    )
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--threshold",
        type=float,
        metavar="S",
        help="lowest average cosine similarity, in [-1, 1], at which two groups of "
        "tracks are one vehicle",
    )
    decision.add_argument(
        "--calibration",
        metavar="FILE",
        help="the model's `anet-tf calibrate` file: the threshold of --fmr",
    )
    p.add_argument(
        "--fmr",
        type=float,
        default=None,
        metavar="F",
        help="with --calibration: the false-match rate of image pairs whose "
        "threshold is used (default 1e-3)",
    )
    p.add_argument(
        "--travel-times",
        default=None,
        metavar="FILE.csv",
        help="camera_a,camera_b,min_s,max_s: the seconds a vehicle takes between "
        "two cameras; a pair outside its window is never linked",
    )
    p.add_argument(
        "--attribute-weight",
        type=float,
        default=None,
        metavar="W",
        help="lower the similarity by W x the attribute disagreement (1 - "
        "Bhattacharyya coefficient; default 0, off)",
    )
    p.add_argument(
        "--method",
        choices=list(METHODS),
        default="average",
        help="linkage (default average)",
    )
    p.add_argument(
        "--overlap-tolerance",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds two tracks of one camera may share and still be one vehicle "
        "(default 0)",
    )
    p.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="FILE.csv|FILE.json",
        help="track_id,camera_id,start,end,global_id per track (CSV, or JSON)",
    )
    p.set_defaults(handler=cmd_link)


def cmd_link(args) -> int:
    from anet_tf.evaluation.linking import linking_scores
    from anet_tf.search.link import ATTRIBUTE_WEIGHT
    from anet_tf.search.link import link_tracks
    from anet_tf.search.link_files import check_output
    from anet_tf.search.link_files import load_tracks
    from anet_tf.search.link_files import read_travel_times
    from anet_tf.search.link_files import write_links

    if args.fmr is not None and not args.calibration:
        raise UsageError("--fmr reads a threshold from --calibration FILE; give it")
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise UsageError(
            f"--threshold {args.threshold:g}: a cosine similarity is in [-1, 1]"
        )
    weight = (
        ATTRIBUTE_WEIGHT if args.attribute_weight is None else args.attribute_weight
    )
    if weight < 0:
        raise UsageError(f"--attribute-weight {weight:g}: must be 0 or more")
    if args.overlap_tolerance < 0:
        raise UsageError(
            f"--overlap-tolerance {args.overlap_tolerance:g}: must be 0 or more"
        )
    check_output(args.out)
    windows = read_travel_times(args.travel_times) if args.travel_times else None
    tracks = load_tracks(args.tracks)
    threshold = args.threshold
    if args.calibration:
        threshold = calibrated_threshold(args.calibration, args.fmr, tracks.fingerprint)
    untimed = int((tracks.start < 0).sum())
    if windows and untimed == len(tracks):
        raise UsageError(
            f"--travel-times: no track of {args.tracks} has a time; the windows "
            f"need the tracks' times (a time column in the manifest)"
        )
    if untimed:
        print(
            f"[anet-tf] {untimed} of {len(tracks)} tracks have no time: only their "
            f"appearance links them",
            file=sys.stderr,
        )
    ids = link_tracks(
        tracks.features,
        tracks.cameras,
        tracks.start,
        tracks.end,
        threshold=threshold,
        attributes=list(tracks.probs.values()),
        attribute_weight=weight,
        travel_windows=windows,
        method=args.method,
        overlap_tolerance=args.overlap_tolerance,
    )
    settings = {
        "tracks_file": args.tracks,
        "threshold": threshold,
        "calibration": args.calibration,
        "fmr": args.fmr if args.calibration else None,
        "method": args.method,
        "attribute_weight": weight,
        "travel_times": args.travel_times,
        "overlap_tolerance": args.overlap_tolerance,
    }
    write_links(args.out, tracks, ids, settings)
    vehicles = len(set(ids.tolist()))
    print(
        f"wrote {args.out}: {len(tracks)} tracks of "
        f"{len(set(tracks.cameras.tolist()))} cameras linked into {vehicles} vehicles"
    )
    if (tracks.pids >= 0).all():
        s = linking_scores(tracks.pids, ids, tracks.lengths)
        print(
            f"against the known vehicle ids: pairwise precision {s['precision']:.3f}, "
            f"recall {s['recall']:.3f}, F1 {s['f1']:.3f}; IDF1 (crops) {s['idf1']:.3f}"
        )
    return 0


def calibrated_threshold(path: str, fmr: float | None, fingerprint: str) -> float:
    """The threshold of ``path`` (a calibration of the tracks' model) at ``fmr``
    (default 1e-3): image pairs' operating point, used for track means."""
    from anet_tf.evaluation.calibration import CalibrationError
    from anet_tf.evaluation.calibration import load_calibration

    fmr = DEFAULT_FMR if fmr is None else fmr
    threshold = load_calibration(path, fingerprint).threshold(fmr=fmr)
    if not threshold <= 1.0:
        raise CalibrationError(
            f"{path}: no threshold reaches FMR {fmr:g} (too few different-vehicle "
            f"pairs were measured); ask for a higher --fmr or give --threshold"
        )
    return max(threshold, -1.0)
