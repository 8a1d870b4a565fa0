"""The job of ``anet-tf distill``: a student run without the Joint Module trained
to reproduce a teacher run (:mod:`anet_tf.training.distill`), then evaluated and
exported as ``fit`` does (:func:`~anet_tf.jobs.fit_evaluate_export.fit_and_report`).
"""

from __future__ import annotations

import os
import time

from anet_tf.config import Config
from anet_tf.io import remove_path
from anet_tf.training.run import LOCK_FILE
from anet_tf.training.run import TEACHER_FILE
from anet_tf.training.run_checkpoints import Run

# What the student changes in the teacher's config: no Joint Module, its own f as
# the test feature (--set and --config may say otherwise).
STUDENT_OVERRIDES = ("model.variant=van",)


def student_config(teacher: Run, config: str | None, overrides=()) -> Config:
    """The student's config: ``config`` (a file or shipped name) with ``--set``
    ``overrides``, or else the teacher's own config (its data, network size and
    schedule) with them; in both ``model.variant`` is van unless an override says
    baseline, and the test feature is the variant's (``f``) unless set."""
    from anet_tf.config import apply_overrides
    from anet_tf.config import load_config

    if config is not None:
        return load_config(config, [*STUDENT_OVERRIDES, *overrides])
    # The teacher's config.yaml gives eval.feature (j) as a value of its own;
    # the student's default is its variant's.
    followed = (
        []
        if any(o.split("=", 1)[0].strip() == "eval.feature" for o in overrides)
        else ["eval.feature=f"]
    )
    return apply_overrides(teacher.config, [*STUDENT_OVERRIDES, *followed, *overrides])


def default_student_dir(teacher: Run) -> str:
    name = os.path.basename(os.path.normpath(teacher.dir)) or "teacher"
    return os.path.join("runs", f"{name}-student-{time.strftime('%Y%m%d-%H%M%S')}")


def check_student(cfg: Config, teacher: Run, verbose: bool = True) -> None:
    """Everything that can refuse the distillation before a file of the run is
    written: the student's variant, input size, attributes and feature dimension
    against the teacher's (:func:`~anet_tf.training.distill.check_teacher`).

    Raises:
        ConfigError: one line naming the key.
    """
    from anet_tf.data.readers import load_dataset
    from anet_tf.jobs.fit_evaluate_export import ensure_synthetic
    from anet_tf.model import build_model_from_config
    from anet_tf.training.distill import check_feature_dimensions
    from anet_tf.training.distill import check_teacher

    check_teacher(cfg, teacher, None)  # variant and input size, before any data is read
    ensure_synthetic(cfg, verbose=verbose)
    dataset = load_dataset(cfg, check_images=False)
    check_teacher(
        cfg, teacher, dict(zip(dataset.attribute_names, dataset.attribute_classes))
    )
    student = build_model_from_config(
        cfg, len(dataset.train_pids()), dataset.num_classes, load_pretrained=False
    )
    check_feature_dimensions(cfg, student, teacher)


def distill_and_report(
    teacher: Run,
    cfg: Config,
    run_dir: str,
    *,
    export: bool = True,
    verbose: bool = True,
) -> dict | None:
    """Check the student against the teacher, record the teacher in
    ``run_dir/teacher.json``, then train, evaluate and export the student run as
    ``anet-tf fit`` does. A refusal before training leaves no run folder behind.

    Returns:
        What was written to the run's metrics.json.
    """
    from anet_tf.jobs.fit_evaluate_export import fit_and_report
    from anet_tf.training.distill import record_teacher

    check_student(cfg, teacher, verbose)
    created = not os.path.exists(run_dir)
    record_teacher(run_dir, teacher)
    if verbose:
        print(
            f"[anet-tf] distilling {teacher.weights()} ({teacher.config.model.variant}, "
            f"feature {teacher.config.eval.feature}) into model.variant="
            f"{cfg.model.variant} (feature {cfg.eval.feature})"
        )
    try:
        return fit_and_report(
            cfg,
            run_dir,
            resume=False,
            export=export,
            verbose=verbose,
            command="anet-tf distill",
        )
    except BaseException:
        if (
            created
            and os.path.isdir(run_dir)
            and set(os.listdir(run_dir)) <= {LOCK_FILE, TEACHER_FILE}
        ):
            remove_path(run_dir)
        raise
