"""The ``anet-tf`` command: the one place that imports every part of the package.

Subcommands: fit, evaluate, ablate, export, client, embed, index build, search,
visualize, synth, data check, summary, weights convert.
Imports are done inside each command so ``anet-tf --help`` is instant and a command
only pays for TensorFlow when it needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    from anet_tf.config import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="anet-tf",
        description="AttributeNet (ANet) vehicle re-identification: train, evaluate, "
        "export and search.",
    )
    from anet_tf import __version__

    parser.add_argument("--version", action="version", version=f"anet-tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="train both stages, evaluate, export a SavedModel")
    add_config_arguments(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<config>-<time>)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run; --set may change the schedule ahead and "
        "evaluation settings (train.lr, train.stageN.epochs/lr/steps_per_epoch, eval.*)",
    )
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="with --resume on a finished run: evaluate (and export) it again",
    )
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--quiet", action="store_true", help="no per-step progress bar")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint or run on its dataset's protocol")
    add_config_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory (uses its config and best checkpoint)")
    src.add_argument("--checkpoint", help="checkpoint folder or .weights.h5 file")
    src.add_argument("--model", help="exported SavedModel directory")
    p.add_argument("--feature", choices=["f", "fa", "j"], default=None, help="test-time feature")
    p.add_argument("--json-out", default=None, help="write the metrics as JSON here")

    p = sub.add_parser(
        "ablate",
        help="the paper's ablation study (Tables 1, 2): variants x seeds, mean ± std",
    )
    add_config_arguments(p)
    p.add_argument(
        "--out", required=True, help="study directory (continued when it exists)"
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated, of baseline,van_f,van_fa,anet_noac,anet,van_fc,anet_fc "
        "(default: the study's, or Table 1's five for a new study)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="N (seeds 0..N-1) or a list such as 0,3,5 (default: the study's, or 0)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the reports from the runs finished so far",
    )
    p.add_argument("--quiet", action="store_true", help="no per-step progress bar")

    p = sub.add_parser("synth", help="generate the synthetic vehicle dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ids", type=int, default=None, help="identities in total")
    p.add_argument(
        "--test-ids", type=int, default=None, help="test identities (default: a third of --ids)"
    )
    p.add_argument("--cameras", type=int, default=None)
    p.add_argument("--images-per-id", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--unlabelled-fraction", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--balanced-train",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every colour and type gets the same number of training vehicles (default: on)",
    )

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    c = dsub.add_parser("check", help="validate a dataset and print its statistics")
    add_config_arguments(c)
    c.add_argument("dir", nargs="?", default=None, help="a dataset folder in the generic format")
    c.add_argument("--json", action="store_true", help="print JSON")

    from anet_tf.export.commands import add_client_parser
    from anet_tf.export.commands import add_export_parser

    add_export_parser(sub)
    add_client_parser(sub)

    from anet_tf.search import commands as search_commands

    search_commands.add_parsers(sub)

    p = sub.add_parser("summary", help="parameters and FLOPs per part of the model")
    add_config_arguments(p)

    p = sub.add_parser("weights", help="pretrained weight tools")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    c = wsub.add_parser("convert", help="convert an IBN-Net PyTorch checkpoint")
    c.add_argument("file", help="resnet50_ibn_a .pth file")
    c.add_argument("-o", "--out", required=True, help="output FILE.weights.h5")
    c.add_argument("--arch", default="resnet50_ibn_a")
    return parser


# --------------------------------------------------------------------- commands


def _load_config(args):
    from anet_tf.config import load_config

    return load_config(args.config, args.overrides)


def cmd_synth(args) -> int:
    from anet_tf.config import SynthConfig
    from anet_tf.data.synthetic import generate

    defaults = SynthConfig()
    kwargs = {}
    for key in ("ids", "test_ids", "cameras", "images_per_id", "image_size", "unlabelled_fraction", "seed", "balanced_train"):
        value = getattr(args, key)
        kwargs[key] = getattr(defaults, key) if value is None else value
    if args.test_ids is None and args.ids is not None:
        # The default's share of test identities (40 of 120), whatever --ids is.
        kwargs["test_ids"] = max(2, round(args.ids * defaults.test_ids / defaults.ids))
    if not 2 <= kwargs["test_ids"] < kwargs["ids"]:
        print(
            f"anet-tf synth: error: --test-ids must be at least 2 and below --ids "
            f"({kwargs['ids']}), got {kwargs['test_ids']}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = generate(args.out, **kwargs)
    print(f"synthetic dataset written to {out}")
    return 0


def cmd_data_check(args) -> int:
    from anet_tf.data.check import check
    from anet_tf.data.check import format_report

    if args.dir is not None:
        if args.config or args.overrides:
            print("anet-tf data check: give either DIR or --config/--set, not both", file=sys.stderr)
            return EXIT_USAGE
        report = check(args.dir)
    else:
        from anet_tf.data.readers import load_dataset

        cfg = _load_config(args)
        from anet_tf.workflow import ensure_synthetic

        ensure_synthetic(cfg, verbose=not args.json)
        report = check(load_dataset(cfg, strict=False), max_pixels=cfg.data.max_image_pixels)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0 if report.get("ok", False) else EXIT_FAILED


def cmd_summary(args) -> int:
    from anet_tf.data.records import DataError
    from anet_tf.model.summary import summarize_config

    cfg = _load_config(args)
    counts = {}
    note = "ID and attribute classifier sizes assume VeRi-776 (576 ids, 10 classes each): the dataset was not found at data.root"
    if os.path.isdir(cfg.data.root):
        from anet_tf.data.readers import load_dataset

        try:
            dataset = load_dataset(cfg, check_images=False)
            counts = dict(num_ids=len(dataset.train_pids()), num_classes=dataset.num_classes)
            note = f"classifier sizes from the dataset at {cfg.data.root}: {counts['num_ids']} ids, classes {counts['num_classes']}"
        except (DataError, ValueError) as exc:
            note += f" ({exc})"
    print(summarize_config(cfg, **counts))
    print(note)
    return 0


def cmd_weights_convert(args) -> int:
    from anet_tf.model.weights import convert_ibn_checkpoint

    convert_ibn_checkpoint(args.file, args.out, arch=args.arch)
    print(f"converted {args.file} -> {args.out}")
    return 0


def cmd_fit(args) -> int:
    from anet_tf import workflow

    if args.resume:
        if args.config:
            print(
                "anet-tf fit: --resume uses the run's own config.yaml; drop --config "
                "(--set may change the schedule ahead)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return workflow.fit_and_report(
            None,
            args.resume,
            resume=True,
            export=not args.no_export,
            verbose=not args.quiet,
            overrides=args.overrides or [],
            reevaluate=args.reevaluate,
            command=shlex.join(
                ["anet-tf", "fit", "--resume", args.resume]
                + [a for o in args.overrides or [] for a in ("--set", o)]
            ),
        )
    if args.reevaluate:
        print("anet-tf fit: --reevaluate goes with --resume RUN_DIR", file=sys.stderr)
        return EXIT_USAGE
    cfg = _load_config(args)
    run_dir = args.out or workflow.default_run_dir(cfg)
    if os.path.exists(os.path.join(run_dir, "config.yaml")):
        print(
            f"anet-tf fit: {run_dir} already holds a run; continue it with --resume "
            f"{run_dir} or choose another --out",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return workflow.fit_and_report(cfg, run_dir, resume=False, export=not args.no_export, verbose=not args.quiet)


def cmd_evaluate(args) -> int:
    from anet_tf import workflow

    return workflow.evaluate_command(args)


def cmd_ablate(args) -> int:
    from anet_tf.ablation import ablate_command

    return ablate_command(args)


def cmd_export(args) -> int:
    from anet_tf.export.commands import export_command

    return export_command(args)


def cmd_client(args) -> int:
    from anet_tf.export.commands import client_command

    return client_command(args)


COMMANDS = {
    "fit": cmd_fit,
    "evaluate": cmd_evaluate,
    "ablate": cmd_ablate,
    "export": cmd_export,
    "client": cmd_client,
    "synth": cmd_synth,
    "summary": cmd_summary,
}


def _commands() -> dict:
    from anet_tf.search import commands as search_commands

    return {**COMMANDS, **search_commands.dispatch}


# Arguments that name an existing input (file or folder), by argparse dest.
INPUT_PATHS = {
    "run": "--run",
    "checkpoint": "--checkpoint",
    "model": "--model",
    "resume": "--resume",
    "index": "--index",
    "query_embeddings": "--query-embeddings",
    "embeddings": "EMBEDDINGS",
}


def _missing_input_path(args) -> str | None:
    """The first input path argument that does not exist, as a message; None if all
    do. (Query images are not here: search reports an unreadable one and answers
    the rest.)"""
    for dest, flag in INPUT_PATHS.items():
        value = getattr(args, dest, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and path and not os.path.exists(path):
                return f"{flag} {path}: no such file or folder"
    return None


def main(argv=None) -> int:
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "data":
        if args.data_command != "check":
            parser.parse_args(["data", "--help"])
        handler = cmd_data_check
    elif args.command == "weights":
        if args.weights_command != "convert":
            parser.parse_args(["weights", "--help"])
        handler = cmd_weights_convert
    else:
        handler = _commands()[args.command]
    missing = _missing_input_path(args)
    if missing:
        # Before TensorFlow is imported (seconds): a typo in a path is answered at once.
        print(f"anet-tf {args.command}: error: {missing}", file=sys.stderr)
        return EXIT_FAILED
    from anet_tf.config import ConfigError
    from anet_tf.data.records import DataError

    try:
        return handler(args)
    except (ConfigError, DataError, FileNotFoundError, ImportError, ValueError) as exc:
        # Bad input reaches the user as one line; ANET_TF_DEBUG=1 shows the traceback.
        if os.environ.get("ANET_TF_DEBUG"):
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"anet-tf {args.command}: error: {text}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # TensorFlow's input errors (e.g. an undecodable image)
        import tensorflow as tf

        if not isinstance(exc, tf.errors.InvalidArgumentError):
            raise
        lines = exc.message.strip().splitlines()
        wanted = [line for line in lines if "cannot decode image" in line] or lines[:1]
        print(f"anet-tf {args.command}: error: {wanted[0].strip()}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
