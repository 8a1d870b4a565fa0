"""``anet-tf distill``: train a student run without the Joint Module on a teacher
run's outputs (:mod:`anet_tf.jobs.distill`); the student is an ordinary run
(``evaluate``, ``export``, ``embed``, ``anet_tf.load``, ``fit --resume``)."""

from __future__ import annotations

from anet_tf.commands.config import add_config_arguments
from anet_tf.commands.errors import UsageError
from anet_tf.progress import silenced
from anet_tf.training.run import is_run


def add_distill_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="train a student without the Joint Module (VAN) to reproduce a teacher run",
    )
    p.add_argument(
        "--teacher",
        required=True,
        metavar="RUN",
        help="the teacher: a trained run folder, or a checkpoint folder or weights file in one",
    )
    add_config_arguments(
        p,
        config_help="the student's config (default: the teacher's own, with "
        "model.variant=van)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="the student's run directory (default: runs/<teacher>-student-<time>)",
    )
    p.add_argument(
        "--no-export", action="store_true", help="skip the SavedModel export"
    )
    p.add_argument("--quiet", action="store_true", help="no per-step progress bar")
    p.set_defaults(handler=cmd_distill)


def cmd_distill(args) -> int:
    from anet_tf.jobs import distill as job
    from anet_tf.training.run_checkpoints import Run

    teacher = Run(args.teacher)
    teacher.weights()  # a run without a checkpoint is refused here, in one line
    cfg = job.student_config(teacher, args.config, list(args.overrides or []))
    run_dir = args.out or job.default_student_dir(teacher)
    if is_run(run_dir):
        raise UsageError(
            f"{run_dir} already holds a run; continue it with anet-tf fit --resume "
            f"{run_dir} or choose another --out"
        )
    from anet_tf.commands.fit import interruption_kept

    with interruption_kept(run_dir), silenced(args.quiet):
        job.distill_and_report(
            teacher, cfg, run_dir, export=not args.no_export, verbose=not args.quiet
        )
    return 0
