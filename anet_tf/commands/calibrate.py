"""``anet-tf calibrate``: a model's same-vehicle calibration file (score
histograms, thresholds at FMR 1e-2/1e-3/1e-4, score -> probability) measured on
a dataset's test split; the job is :mod:`anet_tf.jobs.calibrate`. The model and
the dataset are chosen as ``anet-tf evaluate`` chooses them."""

from __future__ import annotations

import os

from anet_tf.commands.config import add_config_arguments
from anet_tf.commands.errors import UsageError


def add_calibrate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="same-vehicle thresholds and probabilities of a model, measured on a "
        "dataset's test split",
    )
    add_config_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory (its config and best checkpoint)")
    src.add_argument("--checkpoint", help="checkpoint folder or .weights.h5 file")
    src.add_argument(
        "--model", help="exported SavedModel version folder (what search serves)"
    )
    p.add_argument(
        "--feature", choices=["f", "fa", "j"], default=None, help="test-time feature"
    )
    p.add_argument("--out", required=True, help="calibration JSON file to write")
    p.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="pairs the probability is fitted and measured on at most; beyond, a "
        "seeded sample of the different-vehicle pairs (default 2000000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="vehicle split and pair sample (default eval.seed)",
    )
    p.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from anet_tf.commands.evaluate import evaluated_config
    from anet_tf.commands.evaluate import run_of
    from anet_tf.evaluation.calibration import format_calibration
    from anet_tf.jobs.calibrate import calibrate

    if os.path.isdir(args.out):
        raise UsageError(
            f"--out {args.out}: a folder is there; --out names the JSON file to write"
        )
    if args.max_pairs is not None and args.max_pairs < 1:
        raise UsageError(f"--max-pairs must be >= 1. Received: {args.max_pairs}")
    cfg = evaluated_config(args)
    run = None if args.model else run_of(args, cfg)
    payload = calibrate(
        cfg,
        args.out,
        run=run,
        model_dir=args.model,
        max_pairs=args.max_pairs,
        seed=args.seed,
    )
    print(format_calibration(payload))
    print(
        f"calibration written to {args.out} (model fingerprint {payload['model']['fingerprint']})"
    )
    return 0
