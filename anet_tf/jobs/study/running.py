"""Running a study: every variant x seed that has not finished, seed by seed; a
finished run is skipped, an interrupted one resumed, and a run that cannot train
is returned with its reason (the study goes on with the others)."""

from __future__ import annotations

import os

from anet_tf.config import Config
from anet_tf.jobs.study.definition import VARIANTS
from anet_tf.jobs.study.definition import run_dir_of
from anet_tf.jobs.study.definition import variant_config
from anet_tf.jobs.study.study_file import base_dict
from anet_tf.jobs.study.study_file import differences
from anet_tf.training.checkpoint import POINTER
from anet_tf.training.checkpoint import STATE
from anet_tf.training.checkpoint import WEIGHTS
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import METRICS_FILE
from anet_tf.training.run import copy_log_rows


def run_state(run_dir: str) -> str:
    """``finished`` (metrics.json), ``interrupted`` (has a complete checkpoint) or
    ``new``."""
    if os.path.exists(os.path.join(run_dir, METRICS_FILE)):
        return "finished"
    if os.path.exists(os.path.join(run_dir, CHECKPOINTS, POINTER)):
        return "interrupted"
    return "new"


def start_from_stage1(cfg: Config, run_dir: str, source_run: str) -> bool:
    """Make ``run_dir`` a run of ``cfg`` that has finished stage 1 with the weights
    and optimizer state of ``source_run``'s ``checkpoints/stage1`` (and its stage-1
    rows of log.csv). False (nothing written) when the source has no such snapshot
    or the stage-1 settings differ."""
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import STAGE1_SNAPSHOT
    from anet_tf.training.fit import save_run_config
    from anet_tf.training.run import load_run_config

    snapshot = os.path.join(source_run, CHECKPOINTS, STAGE1_SNAPSHOT)
    if not os.path.isfile(os.path.join(snapshot, STATE)):
        return False
    source_cfg = load_run_config(source_run)
    mine, theirs = base_dict(cfg), base_dict(source_cfg)
    for raw in (mine, theirs):  # what may differ: stage 2's loss and its lr
        raw["loss"].pop("use_ac", None)
        raw["train"].pop("stage2", None)
    if differences(theirs, mine):
        return False
    save_run_config(cfg, run_dir)
    CheckpointManager(os.path.join(run_dir, CHECKPOINTS)).start_from(snapshot)
    copy_log_rows(source_run, run_dir, stage=1)
    with open(os.path.join(run_dir, "stage1_from.txt"), "w", encoding="utf-8") as fh:
        fh.write(f"stage 1 copied from {os.path.abspath(snapshot)}\n")
    return True


def train_run(
    cfg: Config, run_dir: str, verbose: bool, stage1_source: str | None = None
) -> str:
    """Train (or resume) one run of the study to its metrics.json; what happened.

    ``stage1_source``: a run whose stage 1 this new run may start from
    (:func:`start_from_stage1`)."""
    import keras

    from anet_tf.jobs.fit_evaluate_export import fit_and_report
    from anet_tf.training.callbacks import NonFiniteLossError
    from anet_tf.training.run import RunFolderError

    state = run_state(run_dir)
    if state == "finished":
        return "skipped (finished)"
    shared = ""
    if state == "new" and stage1_source and start_from_stage1(cfg, run_dir, stage1_source):
        state = "interrupted"
        shared = f", stage 1 from {stage1_source}"
    keras.backend.clear_session()
    # A run stopped before its first checkpoint has nothing to resume: start it again.
    resume = state == "interrupted"
    try:
        fit_and_report(
            None if resume else cfg, run_dir, resume=resume, export=False, verbose=verbose
        )
    except (NonFiniteLossError, RunFolderError) as exc:
        # The study goes on with its other runs; this one is listed at the end
        # with what stopped it.
        what = "stopped" if isinstance(exc, NonFiniteLossError) else "error"
        return f"failed ({what}: {' '.join(str(exc).split())})"
    if shared:
        return f"trained stage 2{shared}"
    return "resumed, finished" if resume else "trained"


def evaluate_variant_run(out_dir: str, name: str, seed: int, verbose: bool) -> str:
    """Evaluate the source run of an ``evaluates`` variant on its feature."""
    import keras

    from anet_tf.jobs.fit_evaluate_export import evaluate_run
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import write_json

    variant = VARIANTS[name]
    source = run_dir_of(out_dir, variant.evaluates, seed)
    run_dir = run_dir_of(out_dir, name, seed)
    target = os.path.join(run_dir, METRICS_FILE)
    source_metrics = os.path.join(source, METRICS_FILE)
    if not os.path.exists(source_metrics):
        return f"failed ({os.path.relpath(source, out_dir)} has not finished)"
    if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(
        source_metrics
    ):
        return "skipped (finished)"
    latest = CheckpointManager(os.path.join(source, CHECKPOINTS)).latest()
    if latest is None:
        return f"failed ({os.path.relpath(source, out_dir)} has no checkpoint)"
    # The final weights: those the source run's own metrics.json was measured on.
    weights = os.path.join(latest[0], WEIGHTS)
    keras.backend.clear_session()
    payload = evaluate_run(source, [f"eval.feature={variant.feature}"], weights=weights)
    payload["source_run"] = os.path.relpath(source, out_dir)
    payload["weights"] = os.path.relpath(weights, out_dir)
    os.makedirs(run_dir, exist_ok=True)
    write_json(target, payload)
    if verbose:
        from anet_tf.evaluation.extract import format_results

        print(
            format_results(
                payload["metrics"], payload["dataset"], chance=payload["chance"],
                feature=payload.get("feature"),
            )
        )
    return f"evaluated {payload['source_run']} on {variant.feature}"


def run_study(
    out_dir: str, study: dict, base: Config, verbose: bool = True
) -> list[str]:
    """Run every variant x seed of the study that has not finished, seed by seed (so
    a complete table for one seed comes first).

    Returns:
        one line per run that failed (empty: all finished).
    """
    # A variant that takes stage 1 from another runs after it.
    order = sorted(
        study["variants"],
        key=lambda n: (
            (list(VARIANTS).index(VARIANTS[n].stage1_from), 1)
            if VARIANTS[n].stage1_from in study["variants"]
            else (list(VARIANTS).index(n), 0)
        ),
    )
    jobs = [(seed, name) for seed in study["seeds"] for name in order]
    failed = []
    for i, (seed, name) in enumerate(jobs, 1):
        run_dir = run_dir_of(out_dir, name, seed)
        label = f"[anet-tf ablate] ({i}/{len(jobs)}) {name} seed {seed}"
        print(f"{label}: {run_dir}", flush=True)
        if VARIANTS[name].evaluates:
            outcome = evaluate_variant_run(out_dir, name, seed, verbose)
        else:
            source = VARIANTS[name].stage1_from
            outcome = train_run(
                variant_config(base, name, seed),
                run_dir,
                verbose,
                stage1_source=run_dir_of(out_dir, source, seed) if source else None,
            )
        print(f"{label}: {outcome}", flush=True)
        if outcome.startswith("failed"):
            failed.append(f"{name} seed {seed}: {outcome}")
    return failed
