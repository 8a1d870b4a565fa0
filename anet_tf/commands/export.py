"""``anet-tf export`` (a run to SavedModel, TFLite, ONNX, TensorRT) and
``anet-tf client`` (images to a running TF Serving model)."""

from __future__ import annotations

import argparse
import json
import sys

from anet_tf.commands.errors import EXIT_FAILED
from anet_tf.commands.errors import CommandError


def _formats(text: str) -> list[str]:
    from anet_tf.export.formats import FORMATS

    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{','.join(FORMATS)}"
        )
    return formats


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a run to TF Serving SavedModel, TFLite, ONNX or TensorRT",
        description="Export a trained run. SavedModel: <out>/<model_name>/<version>/ "
        "for TF Serving (SERVING.md, models.config and batching_parameters.txt are written beside it); TFLite: <out>/tflite/; ONNX: "
        "<out>/onnx/model.onnx; TensorRT (NVIDIA GPU + tensorrt only): "
        "<out>/tensorrt/.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory (its best, else last, checkpoint)")
    src.add_argument(
        "--checkpoint", help="checkpoint folder or net.weights.h5 inside a run"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--formats",
        type=_formats,
        default=None,
        help="comma-separated: saved_model,tflite,onnx,tensorrt (default: the run's "
        "export.formats)",
    )
    p.add_argument(
        "--quantize",
        choices=["fp16", "int8"],
        default=None,
        help="extra TFLite variants: fp16, or int8 (dynamic-range and full-integer "
        "calibrated on training images)",
    )
    p.add_argument(
        "--model-name",
        default=None,
        help="TF Serving model name, the SavedModel's folder (default: export.model_name)",
    )
    p.add_argument(
        "--model-version",
        type=int,
        default=None,
        help="SavedModel version folder; bump it for TF Serving to load a new "
        "model (default: export.version)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="compare every format with the SavedModel on test images (cosine, "
        "rank-1) and print the table",
    )
    p.add_argument("--quiet", action="store_true", help="print only the result")
    p.set_defaults(handler=cmd_export)
    return p


def cmd_export(args) -> int:
    from anet_tf.config import ConfigError
    from anet_tf.io import path_name_problem
    from anet_tf.jobs.fit_evaluate_export import export_run

    # The name becomes a folder under --out: checked before any work is spent.
    problem = args.model_name is not None and path_name_problem(args.model_name)
    if problem:
        raise ConfigError(f"--model-name: {problem}")
    formats = args.formats
    if args.check and formats and "saved_model" not in formats:
        formats = ["saved_model", *formats]
    paths, refused, cfg, dataset = export_run(
        args.run or args.checkpoint,
        args.out,
        formats=formats,
        quantize=args.quantize,
        model_name=args.model_name,
        model_version=args.model_version,
        verbose=not args.quiet,
    )
    status = 0
    for fmt, reason in refused.items():
        print(f"anet-tf export: {fmt} refused: {reason}", file=sys.stderr)
        status = EXIT_FAILED
    print(json.dumps(paths, indent=2))
    if args.check and paths.get("saved_model") and dataset is None:
        print(
            f"anet-tf export: --check compares the formats on the run's test images, "
            f"and its dataset ({cfg.data.root}) is not here; the formats were written",
            file=sys.stderr,
        )
        status = EXIT_FAILED
    elif args.check and paths.get("saved_model"):
        from anet_tf.export.parity import format_parity
        from anet_tf.export.parity import parity_report

        print(format_parity(parity_report(paths, cfg, dataset)))
    return status


def add_client_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "client",
        help="send images to a running TF Serving model (REST or gRPC)",
        description="Send image files to TF Serving and print the attributes; "
        "REST by default, gRPC with --grpc (needs grpcio).",
    )
    p.add_argument(
        "images", nargs="+", help="image files sent as they are: JPEG, PNG, GIF, BMP or WebP"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--server", default=None, help="REST address (default http://localhost:8501)"
    )
    where.add_argument(
        "--grpc",
        default=None,
        metavar="HOST:PORT",
        help="gRPC address, e.g. localhost:8500",
    )
    p.add_argument("--model-name", default="anet", help="model name (default anet)")
    p.add_argument(
        "--version", type=int, default=None, help="model version (default: latest)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")
    p.add_argument("--out", default=None, help="save the embeddings as .npy")
    p.add_argument("--json", action="store_true", help="print the outputs as JSON")
    p.set_defaults(handler=cmd_client)
    return p


def cmd_client(args) -> int:
    import numpy as np

    from anet_tf.export import client

    images = client.read_images(args.images)
    try:
        if args.grpc:
            outputs = client.grpc_predict(
                args.grpc, images, args.model_name, args.version, timeout=args.timeout
            )
        else:
            outputs = client.rest_predict(
                args.server or client.DEFAULT_REST,
                images,
                args.model_name,
                args.version,
                timeout=args.timeout,
            )
    except client.ServingError as exc:
        bad = client.bad_image(str(exc))
        if bad is not None and bad[0] < len(args.images):
            index, reason = bad
            raise CommandError(
                f"{args.images[index]} (image {index + 1} of {len(args.images)}): the "
                f"server cannot decode it: {reason}"
            ) from None
        raise CommandError(str(exc)) from None
    if args.out and "embedding" in outputs:
        np.save(args.out, outputs["embedding"])
    if args.json:
        print(json.dumps({k: v.tolist() for k, v in outputs.items()}, indent=2))
    else:
        print(client.format_predictions(args.images, outputs))
    return 0
