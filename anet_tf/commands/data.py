"""``anet-tf synth``, ``data check``, ``summary`` and ``weights convert``: the
dataset and model tools."""

from __future__ import annotations

import argparse
import json
import os

from anet_tf.commands.config import add_config_arguments
from anet_tf.commands.errors import EXIT_FAILED
from anet_tf.commands.errors import UsageError


def add_synth_parser(subparsers) -> None:
    p = subparsers.add_parser("synth", help="generate the synthetic vehicle dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ids", type=int, default=None, help="identities in total")
    p.add_argument(
        "--test-ids", type=int, default=None, help="test identities (default: a third of --ids)"
    )
    p.add_argument(
        "--cameras", type=int, default=None, help="cameras, each with its own view (default 6)"
    )
    p.add_argument(
        "--images-per-id", type=int, default=None, help="images of each vehicle (default 12)"
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="side of the square images in pixels (default 128)"
    )
    p.add_argument(
        "--unlabelled-fraction",
        type=float,
        default=None,
        help="fraction of vehicles whose attributes are left unknown (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=None, help="the dataset's seed (default 0)")
    p.add_argument(
        "--balanced-train",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every colour and type gets the same number of training vehicles (default: on)",
    )
    p.add_argument(
        "--track-length",
        type=int,
        default=None,
        help="crops per track: each image becomes a track of N consecutive crops by its camera (default 1: no tracks)",
    )
    p.set_defaults(handler=cmd_synth)


def add_data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="dataset tools")
    p.set_defaults(usage=p.format_help)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    c = dsub.add_parser(
        "check",
        help="validate a dataset as fit reads it (same --config/--set) and print its "
        "statistics",
    )
    add_config_arguments(c)
    c.add_argument(
        "dir",
        nargs="?",
        default=None,
        help="a dataset folder in the generic format: checked as fit reads it with "
        "--set data.name=folder --set data.root=DIR (and the same --config/--set)",
    )
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(handler=cmd_data_check)


def add_summary_parser(subparsers) -> None:
    p = subparsers.add_parser("summary", help="parameters and FLOPs per part of the model")
    add_config_arguments(p)
    p.set_defaults(handler=cmd_summary)


def add_weights_parser(subparsers) -> None:
    p = subparsers.add_parser("weights", help="pretrained weight tools")
    p.set_defaults(usage=p.format_help)
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    c = wsub.add_parser(
        "convert",
        help="convert an IBN-Net ImageNet or a FastReID PyTorch checkpoint to our backbone",
    )
    c.add_argument(
        "file",
        help="the .pth file: IBN-Net's ImageNet weights (e.g. resnet50_ibn_a-d9d0bb7b.pth) "
        "or a FastReID model (model_final.pth: backbone, non-local blocks and heads)",
    )
    c.add_argument(
        "-o",
        "--out",
        required=True,
        help="output FILE.weights.h5 (a FastReID model's heads go to FILE.heads.npz)",
    )
    c.add_argument(
        "--arch",
        default="resnet50_ibn_a",
        help="the checkpoint's architecture: resnet50_ibn_a (default) | resnet18_ibn_a | resnet18",
    )
    c.set_defaults(handler=cmd_weights_convert)


def load_config_of(args):
    """The config of ``--config`` and ``--set``."""
    from anet_tf.config import load_config

    return load_config(args.config, args.overrides)


def cmd_synth(args) -> int:
    from anet_tf.config import SynthConfig
    from anet_tf.data.synthetic import generate

    defaults = SynthConfig()
    kwargs = {}
    for key in ("ids", "test_ids", "cameras", "images_per_id", "image_size", "unlabelled_fraction", "seed", "balanced_train", "track_length"):
        value = getattr(args, key)
        kwargs[key] = getattr(defaults, key) if value is None else value
    if args.test_ids is None and args.ids is not None:
        # The default's share of test identities (40 of 120), whatever --ids is.
        kwargs["test_ids"] = max(2, round(args.ids * defaults.test_ids / defaults.ids))
    if not 2 <= kwargs["test_ids"] < kwargs["ids"]:
        raise UsageError(
            f"--test-ids must be at least 2 and below --ids ({kwargs['ids']}), got "
            f"{kwargs['test_ids']}"
        )
    out = generate(args.out, **kwargs)
    print(f"synthetic dataset written to {out}")
    return 0


def cmd_data_check(args) -> int:
    """Check the dataset of ``--config``/``--set`` (or the folder DIR) as ``fit``
    reads it: the same reader, attributes and split checks, every problem listed."""
    from anet_tf.data.check import check
    from anet_tf.data.check import format_report
    from anet_tf.data.readers import load_dataset
    from anet_tf.jobs.fit_evaluate_export import ensure_synthetic

    cfg = data_check_config(args)
    ensure_synthetic(cfg, verbose=not args.json)
    dataset = load_dataset(cfg, strict=False)
    report = check(dataset, max_pixels=cfg.data.max_image_pixels)
    report["checked_for"] = {
        "data.name": cfg.data.name,
        "model.variant": cfg.model.variant,
        "data.attributes": list(cfg.data.attributes),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0 if report.get("ok", False) else EXIT_FAILED


def data_check_config(args):
    """The config ``data check`` judges a dataset by: ``--config``/``--set``, and for
    DIR the folder as ``fit --set data.name=folder --set data.root=DIR`` reads it.

    Raises:
        UsageError: DIR with ``--set data.root`` or ``data.name``.
        DataError: DIR is not a folder.
    """
    from anet_tf.config import load_config
    from anet_tf.data.records import DataError

    if args.dir is None:
        return load_config_of(args)
    given = {item.split("=", 1)[0].strip() for item in args.overrides}
    clash = sorted(given & {"data.root", "data.name"})
    if clash:
        raise UsageError(
            f"DIR is the folder (data.name=folder, data.root=DIR): give DIR or --set "
            f"{', '.join(clash)}, not both"
        )
    root = args.dir
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise DataError(f"{root}: is a file, not a dataset folder")
        raise DataError(f"{root}: no such folder")
    folder = ["data.name=folder", f"data.root={json.dumps(root, ensure_ascii=False)}"]
    return load_config(args.config, [*args.overrides, *folder])


def cmd_summary(args) -> int:
    from anet_tf.data.records import DataError
    from anet_tf.model.summary import summarize_config

    cfg = load_config_of(args)
    # VeRi-776's training identities and class counts (list_color.txt: 10 colours,
    # list_type.txt: 9 types), for a summary without the dataset
    veri = {"color": 10, "type": 9}
    assumed = [veri.get(a, 10) for a in cfg.data.attributes]
    counts = {"num_classes": assumed}
    named = ", ".join(f"{a} {n}" for a, n in zip(cfg.data.attributes, assumed, strict=True))
    note = (
        f"ID and attribute classifier sizes assume VeRi-776 (576 ids; classes: "
        f"{named or 'no attributes'}): the dataset was not found at data.root"
    )
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
    from anet_tf.model.weights import convert_fastreid_checkpoint
    from anet_tf.model.weights import convert_ibn_checkpoint
    from anet_tf.model.weights import detect_checkpoint_format
    from anet_tf.model.weights import read_state_dict

    state = read_state_dict(args.file)
    if detect_checkpoint_format(state) != "fastreid":
        convert_ibn_checkpoint(state, args.out, arch=args.arch)
        print(f"converted {args.file} -> {args.out}")
        return 0
    done = convert_fastreid_checkpoint(state, args.out, arch=args.arch)
    print(f"converted FastReID checkpoint {args.file} -> {args.out}")
    if done.heads_path:
        print(f"its heads ({', '.join(sorted(done.heads))}) -> {done.heads_path}")
    settings = [f"model.stem={done.stem}", f"model.non_local={str(done.non_local).lower()}"]
    if done.non_local:
        settings.append(f"model.non_local_inter={done.non_local_inter}")
    print("build the backbone to match it: --set " + " --set ".join(settings))
    return 0
