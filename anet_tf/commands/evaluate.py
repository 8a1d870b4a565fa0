"""``anet-tf evaluate``: the metrics of a run, a checkpoint or a SavedModel on its
dataset's test protocol (the jobs are in :mod:`anet_tf.jobs.fit_evaluate_export`)."""

from __future__ import annotations

import json
import os

from anet_tf.commands.config import add_config_arguments


def add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a checkpoint or run on its dataset's protocol")
    add_config_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory (uses its config and best checkpoint)")
    src.add_argument("--checkpoint", help="checkpoint folder or .weights.h5 file")
    src.add_argument("--model", help="exported SavedModel directory")
    p.add_argument("--feature", choices=["f", "fa", "j"], default=None, help="test-time feature")
    p.add_argument("--json-out", default=None, help="write the metrics as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress, only the results")
    p.set_defaults(handler=cmd_evaluate)


def evaluated_config(args):
    """The config to evaluate with: ``--config`` (with ``--set``), else the
    SavedModel's or the run's own (with ``--set``), then ``--feature``."""
    from anet_tf.config import ConfigError
    from anet_tf.config import apply_overrides
    from anet_tf.config import load_config
    from anet_tf.training.run import load_run_config
    from anet_tf.training.run_checkpoints import resolve_weights

    if args.model and args.feature:
        raise ConfigError(
            "--feature cannot change a SavedModel's embedding: it serves the "
            "eval.feature it was exported with; evaluate a run or checkpoint instead"
        )
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif args.model:
        from anet_tf.export.saved_model import saved_model_config

        cfg = saved_model_config(args.model, args.overrides)
    else:  # a run, or a checkpoint inside one: the run's own config
        run_dir, _ = resolve_weights(args.run or args.checkpoint)
        cfg = load_run_config(run_dir)
        if args.overrides:
            cfg = apply_overrides(cfg, args.overrides)
    if args.feature:
        cfg = apply_overrides(cfg, [f"eval.feature={args.feature}"])
    return cfg


def run_of(args, cfg):
    """The :class:`Run` of ``--run`` / ``--checkpoint``; a weights file in no run
    folder, given with ``--config``, is described by that config and its
    dataset."""
    from anet_tf.training.run_checkpoints import Run
    from anet_tf.training.run_checkpoints import find_run_dir

    if args.checkpoint and args.config and os.path.exists(args.checkpoint):
        try:
            find_run_dir(args.checkpoint)
        except FileNotFoundError:
            from anet_tf.data.readers import load_dataset
            from anet_tf.jobs.fit_evaluate_export import ensure_synthetic

            ensure_synthetic(cfg)
            return Run.of_weights(args.checkpoint, cfg, load_dataset(cfg, check_images=False))
    return Run(args.run or args.checkpoint)


def cmd_evaluate(args) -> int:
    from anet_tf.evaluation.extract import format_results
    from anet_tf.jobs import fit_evaluate_export as job
    from anet_tf.progress import silenced
    from anet_tf.training.run import METRICS_FILE

    cfg = evaluated_config(args)
    with silenced(args.quiet):
        run = None if args.model else run_of(args, cfg)
        payload = job.evaluate(cfg, run=run, model_dir=args.model, verbose=not args.quiet)
    metrics = payload["metrics"]
    print(format_results(metrics, cfg.data.name, chance=payload["chance"], feature=cfg.eval.feature))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump({"dataset": cfg.data.name, "feature": cfg.eval.feature, "metrics": metrics}, fh, indent=2, default=float)
        print(f"metrics written to {args.json_out}")
    if args.run and not (args.config or args.overrides):
        path = job.record_evaluation(args.run, cfg.eval.feature, metrics)
        if path is None:
            print(
                f"not recorded in {os.path.join(args.run, METRICS_FILE)}: the run has "
                "not finished training (--json-out FILE keeps the metrics)"
            )
        else:
            print(f"metrics recorded in {path} (evaluations.{cfg.eval.feature})")
    elif args.run:
        print(
            f"not recorded in {os.path.join(args.run, METRICS_FILE)}: "
            f"--config/--set change what is evaluated"
        )
    return 0
