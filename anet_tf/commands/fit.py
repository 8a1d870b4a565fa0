"""``anet-tf fit`` (train, evaluate, export one run) and ``anet-tf ablate`` (the
study of Tables 1-2 as runs); the jobs are :func:`anet_tf.jobs.fit_evaluate_export.fit_and_report`
and :mod:`anet_tf.jobs.study`."""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import sys

from anet_tf.commands.config import add_config_arguments
from anet_tf.commands.errors import EXIT_FAILED
from anet_tf.commands.errors import Interrupted
from anet_tf.commands.errors import UsageError
from anet_tf.progress import silenced
from anet_tf.training.run import RESUMABLE_KEYS
from anet_tf.training.run import is_run


def add_fit_parser(subparsers) -> None:
    p = subparsers.add_parser("fit", help="train both stages, evaluate, export a SavedModel")
    add_config_arguments(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<config>-<time>)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run; --set may change the schedule ahead and "
        "evaluation settings: " + ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE_KEYS),
    )
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="with --resume on a finished run: evaluate (and export) it again",
    )
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--quiet", action="store_true", help="no per-step progress bar")
    p.set_defaults(handler=cmd_fit)


def add_ablate_parser(subparsers) -> None:
    p = subparsers.add_parser(
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
    p.set_defaults(handler=cmd_ablate)


def cmd_fit(args) -> int:
    from anet_tf.jobs import fit_evaluate_export as job

    if args.resume:
        if args.config:
            raise UsageError(
                "--resume uses the run's own config.yaml; drop --config (--set may "
                "change the schedule ahead)"
            )
        from anet_tf.training.run import RunFolderError

        overrides = list(args.overrides or [])
        command = shlex.join(
            ["anet-tf", "fit", "--resume", args.resume]
            + [a for o in overrides for a in ("--set", o)]
        )
        try:
            cfg = job.resume_config(args.resume, overrides)
        except RunFolderError as exc:  # a --set the run cannot take
            raise UsageError(str(exc)) from None
        with interruption_kept(args.resume), silenced(args.quiet):
            job.fit_and_report(
                cfg,
                args.resume,
                resume=True,
                export=not args.no_export,
                verbose=not args.quiet,
                reevaluate=args.reevaluate,
                command=command,
            )
        return 0
    if args.reevaluate:
        raise UsageError("--reevaluate goes with --resume RUN_DIR")
    from anet_tf.config import load_config

    cfg = load_config(args.config, args.overrides)
    run_dir = args.out or job.default_run_dir(cfg)
    if is_run(run_dir):
        raise UsageError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or "
            f"choose another --out"
        )
    with interruption_kept(run_dir), silenced(args.quiet):
        job.fit_and_report(cfg, run_dir, resume=False, export=not args.no_export, verbose=not args.quiet)
    return 0


@contextlib.contextmanager
def interruption_kept(run_dir: str):
    """Ctrl-C during a run: one line saying what the run folder keeps and how to
    go on (every checkpoint and log row is written atomically or repaired on
    resume, so the folder is consistent wherever the interruption fell)."""
    from anet_tf.training.interrupt import kept_interrupts

    try:
        with kept_interrupts():
            yield
    except KeyboardInterrupt:
        from anet_tf.training.run import is_run
        from anet_tf.training.run_checkpoints import newest_epoch

        epoch = newest_epoch(run_dir)
        if epoch is None:
            kept = "no epoch had completed"
            then = f"start it with anet-tf fit --resume {run_dir}" if is_run(run_dir) else "run the same command again"
        else:
            kept = f"epoch {epoch} is its newest checkpoint"
            then = f"continue with anet-tf fit --resume {run_dir}"
        raise Interrupted(f"{run_dir}: {kept}; {then}") from None


def _study_interrupted(out_dir: str):
    return Interrupted(
        f"{out_dir}: every finished run and the newest checkpoint of the one in "
        "progress are kept; continue with the same anet-tf ablate command"
    )


def _ablate_command_line(args) -> str:
    parts = ["anet-tf", "ablate"]
    if args.config:
        parts += ["--config", args.config]
    for item in args.overrides:
        parts += ["--set", item]
    if args.variants:
        parts += ["--variants", args.variants]
    if args.seeds:
        parts += ["--seeds", args.seeds]
    parts += ["--out", args.out]
    return shlex.join(parts)


def cmd_ablate(args) -> int:
    """Run (or continue) the study in ``--out``, then write its reports;
    ``--report-only`` only rewrites the reports from the finished runs."""
    from anet_tf.jobs import study as ablation

    out_dir = args.out
    if args.report_only:
        if args.config or args.overrides or args.variants or args.seeds:
            raise UsageError(
                "--report-only reads the study's own settings from "
                f"{os.path.join(out_dir, ablation.STUDY_FILE)}; drop "
                "--config/--set/--variants/--seeds"
            )
        study = ablation.read_study(out_dir)
        if study is None:
            raise FileNotFoundError(
                f"{out_dir}: no {ablation.STUDY_FILE}; start a study with "
                f"anet-tf ablate --out {out_dir}"
            )
        failed = []
    else:
        variants = ablation.parse_variants(args.variants) if args.variants else None
        seeds = ablation.parse_seeds(args.seeds) if args.seeds else None
        study, base = ablation.open_study(
            out_dir, args.config, list(args.overrides), variants, seeds
        )
        study["invocations"].append(
            {
                "command": _ablate_command_line(args),
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "machine": ablation.describe_machine(),
            }
        )
        ablation.write_study(out_dir, study)
        try:
            with silenced(args.quiet):
                failed = ablation.run_study(out_dir, study, base, verbose=not args.quiet)
        except KeyboardInterrupt:
            raise _study_interrupted(out_dir) from None
    paths = ablation.write_reports(out_dir, study)
    print()
    with open(paths["markdown"], encoding="utf-8") as fh:
        print(fh.read())
    for key, path in paths.items():
        print(f"{key:9s}: {path}")
    if failed:
        print("anet-tf ablate: some runs did not finish:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    return 0
