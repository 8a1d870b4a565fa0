"""The ``anet-tf`` command: parse the arguments, dispatch to a handler.

Subcommands: fit, evaluate, calibrate, ablate, distill, export, client, embed, index build, search, link,
visualize, synth, data check, summary, weights convert, config list|show. Their parsers and handlers
live in :mod:`anet_tf.commands` (one module per group); errors become one line and
an exit code through :mod:`anet_tf.commands.errors`. Heavy imports happen inside the
handlers, so ``anet-tf --help`` is instant and a command only pays for TensorFlow
when it needs it.
"""

from __future__ import annotations

import argparse
import os
import sys

from anet_tf import native_output
from anet_tf.commands import errors
from anet_tf.io import committed_folder


def build_parser() -> argparse.ArgumentParser:
    from anet_tf._version import __version__
    from anet_tf.commands import calibrate
    from anet_tf.commands import config
    from anet_tf.commands import data
    from anet_tf.commands import distill
    from anet_tf.commands import evaluate
    from anet_tf.commands import export
    from anet_tf.commands import fit
    from anet_tf.commands import link
    from anet_tf.commands import search
    from anet_tf.commands import visualize

    parser = argparse.ArgumentParser(
        prog="anet-tf",
        description="AttributeNet (ANet) vehicle re-identification: train, evaluate, "
        "export and search.",
    )
    parser.add_argument("--version", action="version", version=f"anet-tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fit.add_fit_parser(sub)
    evaluate.add_evaluate_parser(sub)
    calibrate.add_calibrate_parser(sub)
    fit.add_ablate_parser(sub)
    distill.add_distill_parser(sub)
    data.add_synth_parser(sub)
    data.add_data_parser(sub)
    export.add_export_parser(sub)
    export.add_client_parser(sub)
    search.add_parsers(sub)
    link.add_link_parser(sub)
    visualize.add_visualize_parser(sub)
    data.add_summary_parser(sub)
    data.add_weights_parser(sub)
    config.add_config_parser(sub)
    return parser


# Arguments that name an existing input (file or folder), by argparse dest.
INPUT_PATHS = {
    "run": "--run",
    "checkpoint": "--checkpoint",
    "model": "--model",
    "calibration": "--calibration",
    "resume": "--resume",
    "teacher": "--teacher",
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
            if (
                isinstance(path, str)
                and path
                and "://" not in path  # a server URI (a Milvus gallery)
                and not os.path.exists(path)
                # a gallery or model folder whose replacement was interrupted is
                # read from the version kept aside (anet_tf.io.committed_folder)
                and not os.path.exists(committed_folder(path))
            ):
                return f"{flag} {path}: no such file or folder"
    return None


# Commands whose --out is a folder they create or continue.
OUTPUT_FOLDERS = frozenset({"fit", "distill", "ablate", "export", "synth"})


def _file_as_output_folder(args) -> str | None:
    """A message when ``--out`` of a command that writes a folder names an
    existing file (nothing would be written but a traceback); None otherwise."""
    out = getattr(args, "out", None)
    if args.command in OUTPUT_FOLDERS and isinstance(out, str) and os.path.lexists(out):
        if not os.path.isdir(out):
            return f"--out {out}: a file is there, and --out names a folder to write; choose another --out"
    return None


# Commands that never import TensorFlow (they start in well under a second).
WITHOUT_TENSORFLOW = frozenset({"synth", "data", "client", "config", "index", "link"})


def main(argv=None) -> int:
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return errors.EXIT_USAGE
    handler = getattr(args, "handler", None)
    if handler is None:  # a group without its action, e.g. `anet-tf data`
        print(args.usage(), file=sys.stderr)
        return errors.EXIT_USAGE
    command = args.command  # the group, for `data check` and the like
    missing = _missing_input_path(args)
    if missing:
        # Before TensorFlow is imported (seconds): a typo in a path is answered at once.
        return errors.report(command, FileNotFoundError(missing))
    occupied = _file_as_output_folder(args)
    if occupied:
        return errors.report(command, errors.UsageError(occupied))
    if command not in WITHOUT_TENSORFLOW:
        native_output.import_tensorflow()  # without its C++ start-up lines
    return errors.run(command, handler, args)


if __name__ == "__main__":
    sys.exit(main())
