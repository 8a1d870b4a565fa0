"""The end-to-end jobs behind the commands: fit -> evaluate -> export, and evaluate.

This module sits at the right end of the data flow (it may import training,
evaluation and export) so that each of those stays independent of the others.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time

from anet_tf.config import Config
from anet_tf.io import NotWritableError
from anet_tf.io import read_json_file
from anet_tf.io import remove_path
from anet_tf.model.digest import weights_digest
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import CONFIG_FILE
from anet_tf.training.run import EXPORT
from anet_tf.training.run import LOCK_FILE
from anet_tf.training.run import LOG_FILE
from anet_tf.training.run import METRICS_FILE
from anet_tf.training.run import TENSORBOARD


def default_run_dir(cfg: Config) -> str:
    name = os.path.splitext(os.path.basename(cfg.source))[0] or "run"
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def ensure_synthetic(cfg, verbose: bool = True) -> None:
    """Generate the synthetic dataset at ``data.root`` when it is absent."""
    from anet_tf.data.generic import MANIFEST
    from anet_tf.data.synthetic import generate_from_config

    if cfg.data.name != "synthetic":
        return
    if os.path.exists(os.path.join(cfg.data.root, MANIFEST)):
        _warn_if_settings_differ(cfg, verbose)
        return
    if verbose:
        print(f"[anet-tf] generating the synthetic dataset in {cfg.data.root} ...")
    generate_from_config(cfg.data.synth, cfg.data.root)


def _warn_if_settings_differ(cfg, verbose: bool) -> None:
    """Say so when the dataset at ``data.root`` was generated with other settings
    than ``data.synth`` (e.g. by an older version): it is used as it is, never
    overwritten."""
    import dataclasses

    import yaml

    from anet_tf.data.synthetic import SETTINGS
    from anet_tf.io import load_yaml

    path = os.path.join(cfg.data.root, SETTINGS)
    try:
        with open(path, encoding="utf-8") as fh:
            recorded = load_yaml(fh) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    if not isinstance(recorded, dict):
        return
    wanted = dataclasses.asdict(cfg.data.synth)
    default = dataclasses.asdict(type(cfg.data.synth)())  # keys older files lack
    differ = sorted(k for k, v in wanted.items() if recorded.get(k, default[k]) != v)
    if differ and verbose:
        print(
            f"[anet-tf] note: {cfg.data.root} was generated with other settings than "
            f"data.synth ({', '.join(differ)}); using it as it is. Regenerate with "
            f"`anet-tf synth --out DIR` (or delete the folder) to match the config."
        )


class RememberedEvaluation:
    """``fn(net) -> metrics`` on the dataset's test protocol (the evaluation during
    training), which remembers its last result with a digest of the weights it
    was measured on: the job after training reuses it when the weights have not
    changed since (the last epoch is evaluated once, not twice; an attribute
    refit after it changes the weights and is evaluated again)."""

    def __init__(self, cfg: Config, dataset):
        self.cfg, self.dataset = cfg, dataset
        self._last: tuple[str, dict] | None = None

    def __call__(self, net) -> dict:
        from anet_tf.evaluation.extract import evaluate_net

        metrics = evaluate_net(net, self.dataset, self.cfg)
        self._last = (weights_digest(net), metrics)
        return metrics

    def remembered(self, net) -> dict | None:
        """The last metrics, if ``net``'s weights are those they were measured on."""
        if self._last is not None and self._last[0] == weights_digest(net):
            return self._last[1]
        return None


def chance_level(dataset, cfg: Config) -> dict:
    """What a random ranking scores, for context beside the measured numbers."""
    from anet_tf.evaluation.extract import chance_metrics

    return chance_metrics(dataset, cfg)


def evaluate_trained(run, cfg: Config, dataset, checkpoint: str | None = None) -> dict:
    """Metrics of a trained run's network (:meth:`Run.network
    <anet_tf.training.run_checkpoints.Run.network>`, weights of ``checkpoint`` or
    the run's own) on ``dataset``'s test protocol with ``cfg``'s eval settings.
    The dataset may be another than the run's: the embedding does not depend on
    its identities; attributes are scored where it labels them with the
    network's classes (:func:`comparable_attributes`)."""
    from anet_tf.evaluation.extract import evaluate_net

    net, description = run.network(checkpoint), run.description()
    names = list(description.attribute_names) if cfg.model.variant != "baseline" else []
    classes = dict(zip(description.attribute_names, description.attribute_classes))
    scored = comparable_attributes({n: list(classes[n]) for n in names}, dataset)
    return evaluate_net(net, dataset, cfg, scored)


def evaluate_saved_model(cfg: Config, dataset, model_dir: str) -> dict:
    """Metrics of an exported SavedModel on ``dataset``'s test protocol, as it
    serves (its own preprocessing, its embedding); attributes whose classes the
    dataset labels differently are left out (:func:`comparable_attributes`)."""
    from anet_tf.evaluation.extract import evaluate_predictor
    from anet_tf.export.saved_model import load_predictor

    predict = load_predictor(model_dir)
    scored = comparable_attributes(predict.attribute_classes, dataset)
    return evaluate_predictor(predict, dataset, cfg, scored)


def evaluate(cfg: Config, *, run=None, model_dir: str | None = None, verbose: bool = True) -> dict:
    """The job of ``anet-tf evaluate``: the metrics of a trained run (a
    :class:`~anet_tf.training.run_checkpoints.Run`) or of an exported SavedModel
    (``model_dir``) on the dataset and protocol of ``cfg``, with the chance level.

    Returns:
        ``{"dataset", "feature", "metrics", "chance"}``, the schema of a run's
        ``metrics.json``.
    """
    from anet_tf.data.readers import load_dataset

    ensure_synthetic(cfg, verbose=verbose)
    dataset = load_dataset(cfg)
    if model_dir is not None:
        metrics = evaluate_saved_model(cfg, dataset, model_dir)
    else:
        metrics = evaluate_trained(run, cfg, dataset)
    return {
        "dataset": cfg.data.name,
        "feature": cfg.eval.feature,
        "metrics": metrics,
        "chance": chance_level(dataset, cfg),
    }


def evaluate_run(run_dir: str, overrides=(), weights: str | None = None) -> dict:
    """Evaluate a trained run again, e.g. on another test feature, without training.

    Args:
        run_dir: a run directory (its ``config.yaml`` gives the network and data).
        overrides: ``--set`` items applied to the run's config, e.g.
            ``["eval.feature=fa"]`` or ``["data.root=OTHER"]`` (another dataset).
        weights: a checkpoint folder or ``net.weights.h5`` file of the run;
            default: its ``checkpoints/best``, else its newest checkpoint (as
            ``evaluate --run``).

    Returns:
        :func:`evaluate`'s dict and ``"weights"``.
    """
    from anet_tf.config import apply_overrides
    from anet_tf.training.run_checkpoints import Run

    run = Run(weights) if weights else Run(run_dir)
    cfg = run.config
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
    return {**evaluate(cfg, run=run, verbose=False), "weights": run.weights()}


def export_network(
    net, cfg: Config, description, out_dir: str, *, formats, quantize=None,
    calibration=None, verbose: bool = True,
) -> tuple[dict, dict]:
    """Export a trained network to ``formats`` under ``out_dir`` (the job of
    ``anet-tf export`` and of ``fit``'s export). Returns (what was written, as
    :func:`~anet_tf.export.export_formats` returns it; {format: why it was
    refused} for the formats that cannot be written here)."""
    from anet_tf.export import ExportRefused
    from anet_tf.export import export_formats

    try:
        paths = export_formats(
            net, cfg, description, out_dir, formats=list(formats), quantize=quantize,
            verbose=verbose, calibration=calibration,
        )
    except ExportRefused as exc:
        return exc.paths, dict(exc.reasons)
    return paths, {}


def export_run(
    source: str, out_dir: str, *, formats=None, quantize: str | None = None,
    model_name: str | None = None, model_version: int | None = None,
    verbose: bool = True,
):
    """Export a run (its best, else newest, checkpoint), a checkpoint folder or a
    weights file in a run: :func:`export_network` of :meth:`Run.network
    <anet_tf.training.run_checkpoints.Run.network>`, ``formats`` and ``quantize``
    defaulting to the run's ``export.formats`` / ``export.quantize``. No dataset
    is read but for full-integer int8 calibration, where the run's is there.

    Returns:
        (paths, refused, the config exported with, the run's dataset or None).
    """
    from anet_tf.config import apply_overrides
    from anet_tf.training.run_checkpoints import Run

    run = Run(source)
    cfg = run.config
    overrides = []
    if model_name is not None:
        overrides.append(f"export.model_name={model_name}")
    if model_version is not None:
        overrides.append(f"export.version={model_version}")
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    dataset = run.dataset()
    paths, refused = export_network(
        run.network(), cfg, run.description(), out_dir,
        formats=formats or list(cfg.export.formats),
        quantize=quantize or cfg.export.quantize,
        calibration=dataset, verbose=verbose,
    )
    return paths, refused, cfg, dataset


def resume_config(run_dir: str, overrides=()) -> Config:
    """The config a resumed run continues with: the run's own, with ``overrides``
    applied to the keys that may change mid-run (recorded in its changes.yaml,
    with the command, by :func:`anet_tf.training.fit.train` when training
    resumes).

    Raises:
        RunFolderError: an override of a key that cannot change on resume.
    """
    from anet_tf.training.run import apply_resume_overrides
    from anet_tf.training.run import load_run_config

    if overrides:
        return apply_resume_overrides(run_dir, list(overrides))
    return load_run_config(run_dir)


def fit_and_report(
    cfg: Config | None,
    run_dir: str,
    *,
    resume: bool = False,
    export: bool = True,
    verbose: bool = True,
    overrides: list[str] | tuple = (),
    reevaluate: bool = False,
    command: str = "anet-tf fit",
) -> dict | None:
    """Train both stages, evaluate, export, print where things are (the job of
    ``anet-tf fit``).

    ``resume``: continue the run in ``run_dir`` from its newest checkpoint, with
    ``cfg`` (default: :func:`resume_config` of ``overrides`` and ``command``). A
    finished run (training complete and metrics.json written) is left as it is
    unless ``reevaluate``.

    Returns:
        What was written to the run's metrics.json; None when the run had finished
        and was left as it is.

    Raises:
        NonFiniteLossError: training stopped on a non-finite loss or weights.
        RunFolderError: the run folder is in use, the disk is full, or (resume) an
            override the run cannot take.
        DataError, ConfigError: bad data or settings (an undecodable image named).
    """
    from anet_tf.training.fit import holding_run_lock

    if resume and cfg is None:
        cfg = resume_config(run_dir, overrides)
    assert cfg is not None
    # The run's lock, from here to the end (training, refit, evaluation, export,
    # metrics.json): a second fit of the folder is refused until this one is done.
    created = not os.path.exists(run_dir)
    with holding_run_lock(cfg, run_dir, verbose) as lock:
        try:
            return _fit_and_report_locked(
                cfg,
                run_dir,
                lock,
                resume=resume,
                export=export,
                verbose=verbose,
                reevaluate=reevaluate,
                command=command,
            )
        except BaseException:
            # A new run refused before anything was written (a config or data
            # check): no folder holding only the lock is left behind.
            if created and os.path.isdir(run_dir) and set(os.listdir(run_dir)) <= {LOCK_FILE}:
                remove_path(run_dir)
            raise


def _fit_and_report_locked(
    cfg, run_dir, lock, *, resume, export, verbose, reevaluate, command
):
    """:func:`fit_and_report` once ``lock`` (the run's, or None) is held."""
    from anet_tf.training.fit import write_json
    from anet_tf.training.run_checkpoints import finished_state

    if resume:
        done = finished_state(cfg, run_dir)
        if done is not None and not reevaluate:
            print(
                f"anet-tf fit: {run_dir} is finished (epoch {done.global_epoch} of "
                f"{done.global_epoch}, {os.path.join(run_dir, METRICS_FILE)} written); "
                "nothing was changed. Evaluate it again with --reevaluate or anet-tf "
                f"evaluate --run {run_dir}; train longer with --set "
                "train.stageN.epochs=..."
            )
            return None
    dataset = _checked_dataset(cfg, verbose)
    t0 = time.perf_counter()
    evaluation = RememberedEvaluation(cfg, dataset) if cfg.train.eval_every else None
    result = _train_run(
        cfg,
        run_dir,
        dataset,
        resume=resume,
        command=command,
        verbose=verbose,
        lock=lock,
        evaluation=evaluation,
    )
    # Training wall time over every session of the run (kept in the checkpoints);
    # a run whose training had finished before this call keeps its own.
    train_s = result.train_seconds or (time.perf_counter() - t0)
    payload = _evaluate_trained(cfg, result, dataset, run_dir, train_s, evaluation)
    exported = None
    if export:
        exported = _export_trained(cfg, result, dataset, run_dir)
        payload["saved_model"] = exported
    write_json(os.path.join(run_dir, METRICS_FILE), payload)
    _print_where_things_are(cfg, payload, run_dir, exported, train_s)
    return payload


def _checked_dataset(cfg: Config, verbose: bool):
    """The dataset of ``cfg`` (the synthetic one generated when absent), every
    image's header checked before any training: a bad one is named in seconds."""
    from anet_tf.model.pretrained import check_pretrained_choice

    check_pretrained_choice(cfg)
    ensure_synthetic(cfg, verbose=verbose)
    from anet_tf.data.readers import load_dataset

    dataset = load_dataset(cfg)
    from anet_tf.data.check import preflight

    preflight(dataset, cfg.data.max_image_pixels, verbose=verbose)
    return dataset


def _train_run(cfg: Config, run_dir: str, dataset, *, resume: bool, command: str, verbose: bool,
               lock=None, evaluation=None):
    """:func:`anet_tf.training.fit.train` with the evaluation injected; an image
    the input pipeline cannot decode is named."""
    from anet_tf.training.fit import train

    try:
        return train(
            cfg,
            run_dir,
            resume=resume,
            command=command,
            dataset=dataset,
            evaluate_fn=evaluation,
            # Keras' bar only on a terminal: in a file it is ANSI codes and one line
            # of thousands of characters per epoch.
            verbose=1 if verbose and sys.stdout.isatty() else 2,
            run_lock=lock,
        )
    except Exception as exc:  # a decoder error inside the input pipeline
        _name_undecodable_images(exc, dataset, run_dir)
        raise


def _evaluate_trained(
    cfg: Config, result, dataset, run_dir: str, train_s: float, evaluation=None
) -> dict:
    """The trained network's metrics.json content (without the export); the
    evaluation of the last epoch during training where the weights are still
    those (:class:`RememberedEvaluation`)."""
    from anet_tf.evaluation.extract import evaluate_net

    metrics = evaluation.remembered(result.net) if evaluation is not None else None
    if metrics is not None:
        print(f"[anet-tf] the last epoch's evaluation on the {cfg.data.name} test split "
              f"(feature {cfg.eval.feature}) is the final one", flush=True)
    try:
        if metrics is None:
            print(f"[anet-tf] evaluating on the {cfg.data.name} test split (feature "
                  f"{cfg.eval.feature}) ...", flush=True)
            metrics = evaluate_net(result.net, dataset, cfg)
    except Exception as exc:
        _name_undecodable_images(exc, dataset, run_dir)
        raise
    return {
        "dataset": cfg.data.name,
        "feature": cfg.eval.feature,
        "metrics": metrics,
        "chance": chance_level(dataset, cfg),
        "train_seconds": round(train_s, 1),
        "global_epochs": result.global_epoch,
    }


def _export_trained(cfg: Config, result, dataset, run_dir: str) -> str | None:
    """Export the trained network to ``run_dir/export`` in ``export.formats`` (with
    ``export.quantize``), as ``anet-tf export`` does; the SavedModel's folder, or
    None where it was not written. A format that cannot be written here (its extra
    missing, TensorRT without a GPU) is one line on stderr, with the command that
    exports it later; the run is intact either way."""
    from anet_tf.training.fit import on_jax

    formats = list(cfg.export.formats)
    print(f"[anet-tf] exporting ({', '.join(formats)}) ...", flush=True)
    export_dir = os.path.join(run_dir, EXPORT)
    if on_jax():
        return export_in_tensorflow(run_dir, export_dir, formats, cfg.export.quantize)
    from anet_tf.training.run import describe_network

    later = f"anet-tf export --run {run_dir} --out {export_dir}"
    try:
        paths, refused = export_network(
            result.net,
            cfg,
            describe_network(cfg, dataset),
            export_dir,
            formats=formats,
            quantize=cfg.export.quantize,
            verbose=False,
            calibration=dataset,
        )
    except ImportError as exc:  # a format's extra is not installed
        print(
            f"anet-tf fit: export stopped: {exc}; the run is intact: install it, then "
            f"{later}",
            file=sys.stderr,
        )
        return None
    for fmt, reason in refused.items():
        print(f"anet-tf fit: {fmt} not exported: {reason}", file=sys.stderr)
    for fmt in formats:
        if fmt != "saved_model" and fmt in paths:
            print(f"[anet-tf] {fmt} -> {paths[fmt]}")
    return paths.get("saved_model")


def _print_where_things_are(cfg: Config, payload: dict, run_dir: str, exported, train_s: float) -> None:
    """The results, then where the run keeps what it wrote."""
    from anet_tf.evaluation.extract import format_results

    print()
    print(format_results(payload["metrics"], cfg.data.name, chance=payload["chance"],
                         feature=cfg.eval.feature))
    print()
    print(f"run directory : {run_dir}")
    print(f"  config      : {os.path.join(run_dir, CONFIG_FILE)}")
    print(f"  checkpoints : {os.path.join(run_dir, CHECKPOINTS)} (last.json, best/)")
    print(f"  log         : {os.path.join(run_dir, LOG_FILE)}")
    print(f"  tensorboard : tensorboard --logdir {os.path.join(run_dir, TENSORBOARD)}")
    print(f"  metrics     : {os.path.join(run_dir, METRICS_FILE)}")
    if exported:
        print(f"  saved model : {exported}")
    print(f"training took {train_s:.0f} s")


def export_in_tensorflow(
    run_dir: str, out: str, formats=("saved_model",), quantize: str | None = None
) -> str | None:
    """Export the last checkpoint of ``run_dir`` (the weights training ended with)
    to ``formats`` under ``out`` from a process on the TensorFlow backend: a
    SavedModel is TensorFlow's format, and the Keras backend is fixed per process,
    so a run trained on JAX is exported by ``anet-tf export`` as any run is.
    Returns the SavedModel's version folder (None when it was not asked for).

    Raises:
        RuntimeError: the export process failed (its error output attached).
    """
    import subprocess

    from anet_tf.training.checkpoint import CheckpointManager

    latest = CheckpointManager(os.path.join(run_dir, CHECKPOINTS)).latest()
    if latest is None:
        raise RuntimeError(f"{run_dir}: no checkpoint to export")
    # The same job as `anet-tf export`, in a process on the TensorFlow backend; it
    # prints what it wrote as its last line.
    script = (
        "import json, sys\n"
        "from anet_tf import native_output\n"
        "native_output.import_tensorflow()\n"
        "from anet_tf.jobs.fit_evaluate_export import export_run\n"
        "paths, refused, _, _ = export_run(sys.argv[1], sys.argv[2], "
        "formats=json.loads(sys.argv[3]), quantize=sys.argv[4] or None, verbose=False)\n"
        "for fmt, why in refused.items():\n"
        "    print(f'anet-tf fit: {fmt} not exported: {why}', file=sys.stderr)\n"
        "print(json.dumps(paths))\n"
    )
    command = [sys.executable, "-c", script, latest[0], out, json.dumps(list(formats)),
               quantize or ""]
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(
            f"exporting {latest[0]} with the TensorFlow backend failed:\n"
            f"{proc.stderr[-3000:]}"
        )
    sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1]).get("saved_model")


def _name_undecodable_images(exc: Exception, dataset, run_dir: str) -> None:
    """After a TensorFlow decode error (whose message names no file), decode every
    image of the dataset with the same decoder to find which ones fail, and raise a
    DataError naming them; return when ``exc`` is not such an error or none fails."""
    import tensorflow as tf

    if not isinstance(exc, tf.errors.InvalidArgumentError):
        return
    from concurrent.futures import ThreadPoolExecutor

    from anet_tf.data.decode import decode_image
    from anet_tf.data.decode_errors import decoder_reason
    from anet_tf.data.records import DataError

    print("[anet-tf] an image could not be decoded; decoding every image to find which ...",
          file=sys.stderr, flush=True)
    paths = sorted({r.path for split in ("train", "query", "gallery") for r in dataset.split(split)})

    def reason(path: str) -> str | None:
        try:
            decode_image(tf.io.read_file(path), path)
        except tf.errors.OpError as err:
            return decoder_reason(err.message) or type(err).__name__
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(reason, paths))
    bad = [f"{p}: {r}" for p, r in zip(paths, found) if r]
    if not bad:
        return
    raise DataError(
        f"{len(bad)} image(s) cannot be decoded: {'; '.join(bad[:3])}"
        + ("; ..." if len(bad) > 3 else "")
        + f". Replace or remove them, then continue with anet-tf fit --resume {run_dir}"
    ) from None


def comparable_attributes(classes: dict, dataset) -> dict:
    """The attributes of ``classes`` ({name: class names}, a SavedModel's) that the
    dataset labels with the same classes; each other one is named on stderr and
    left out of the attribute accuracy (e.g. a model evaluated on another dataset)."""
    offered = dict(zip(dataset.attribute_names, dataset.attribute_classes))
    kept = {}
    for name, names in classes.items():
        if name not in offered:
            reason = f"the dataset {dataset.name!r} does not label it"
        elif list(offered[name]) != list(names):
            reason = (
                f"the model's classes {list(names)} differ from the dataset's "
                f"{list(offered[name])}"
            )
        else:
            kept[name] = list(names)
            continue
        print(
            f"anet-tf evaluate: attribute {name!r} not scored: {reason}",
            file=sys.stderr,
        )
    return kept


# How long recording an evaluation waits for another process to let go of the run.
RECORD_WAIT_S = 60.0


def record_evaluation(run_dir: str, feature: str, metrics: dict) -> str | None:
    """Store ``metrics`` in ``run_dir/metrics.json`` under ``"evaluations"`` →
    ``feature``, keeping every other key; the file is replaced atomically, holding
    the run's lock (waiting up to :data:`RECORD_WAIT_S` for another evaluation or
    an export to let go), so that two evaluations recorded at once both stay.

    A run without ``metrics.json`` has not finished training: nothing is recorded
    (returns None), since the file's presence is what marks a run finished (a study
    would skip the rest of its training).

    Raises:
        ValueError: the existing file is not a JSON object (it is left as it is).
        RunFolderError: a process (a fit) kept the run longer than the wait.
    """
    from anet_tf.training.fit import write_json
    from anet_tf.training.run import RunLock

    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        return None
    try:
        with RunLock(run_dir, wait_s=RECORD_WAIT_S):
            payload = read_json_file(path, advice="left as it is")
            if not isinstance(payload, dict):
                raise ValueError(f"{path}: not a JSON object; left as it is")
            evaluations = payload.get("evaluations")
            evaluations = evaluations if isinstance(evaluations, dict) else {}
            payload["evaluations"] = {**evaluations, feature: metrics}
            write_json(path, payload)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise NotWritableError(
            f"{path}: the evaluation cannot be recorded in the run "
            f"({os.strerror(exc.errno)}); the metrics printed above are all there "
            "is (--json-out FILE writes them elsewhere)",
        ) from None
    return path
