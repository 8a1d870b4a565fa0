"""``anet-tf config list`` and ``config show``: the shipped configs, and any config
fully resolved, to start one's own from; and the ``--config`` and ``--set`` options
every command shares (:func:`add_config_arguments`)."""

from __future__ import annotations

import os


def add_config_arguments(parser, config_help: str | None = None, config: bool = True) -> None:
    """Add the ``--config`` and ``--set KEY=VALUE`` options every command shares
    (parsed values: ``args.config``, ``args.overrides``)."""
    if config:
        parser.add_argument(
            "--config",
            "-c",
            default=None,
            help=config_help
            or "YAML config file or the name of a shipped one (default: synthetic)",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.stage1.epochs=3 (repeatable)",
    )


def add_config_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "config", help="list the shipped configs or print one resolved"
    )
    p.set_defaults(usage=p.format_help)
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    ls = csub.add_parser("list", help="the names of the shipped configs")
    ls.set_defaults(handler=cmd_config_list)
    show = csub.add_parser(
        "show",
        help="print a config with _base_ and --set applied and every key given "
        "(YAML that --config reads back unchanged)",
    )
    show.add_argument(
        "name",
        nargs="?",
        default=None,
        help="YAML config file or the name of a shipped one (default: synthetic)",
    )
    add_config_arguments(show, config=False)
    show.set_defaults(handler=cmd_config_show)


def shipped_configs() -> list[str]:
    """The names ``--config NAME`` accepts without a path, sorted."""
    from anet_tf.config import CONFIG_DIR

    return sorted(
        name[: -len(".yaml")]
        for name in os.listdir(CONFIG_DIR)
        if name.endswith(".yaml")
    )


def cmd_config_list(args) -> int:
    for name in shipped_configs():
        print(name)
    return 0


def cmd_config_show(args) -> int:
    from anet_tf.config import load_config

    cfg = load_config(args.name, args.overrides)
    header = f"# anet-tf config show {args.name or 'synthetic'}"
    header += "".join(f" --set {item}" for item in args.overrides)
    print(header)
    print(f"# resolved from {cfg.source}: every key, _base_ and --set applied")
    print(cfg.to_yaml(), end="")
    return 0
