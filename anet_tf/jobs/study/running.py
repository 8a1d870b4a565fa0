"""``anet-tf ablate``: the ablation study of section 4.3 (Tables 1 and 2) as ordinary
runs, repeated over seeds and summarised as mean ± std.

A variant is a set of ``--set`` overrides and a test feature (:data:`VARIANTS`).
Every variant x seed is a run folder made by :func:`anet_tf.jobs.fit_evaluate_export.fit_and_report`::

    DIR/study.yaml              base config, overrides, variants, seeds, invocations
    DIR/<variant>/seed<k>/      an ordinary run (config.yaml, checkpoints/, log.csv,
                                metrics.json); metrics.json present = finished
    DIR/van_fa/seed<k>/metrics.json
                                van_f's run of seed k evaluated on ``fa`` (no model
                                of its own; ``source_run`` names the run)
    DIR/ablation.md, .json, .png  the reports

A finished run is skipped, an interrupted one resumed from its last checkpoint, so
the study survives ``kill -9`` and is continued by running the same command again.
A study keeps one base config: continuing it with other settings is refused, while
variants and seeds may be added. Seed k sets ``train.seed`` and ``data.seed``: the
weight initialisation, the P x K sampling and the augmentation change; the dataset
and its split (``data.synth.seed`` for the synthetic one) and the VehicleID test
draws (``eval.seed``) do not.

The command (its arguments, what it prints) is
:func:`anet_tf.commands.fit.cmd_ablate`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
from dataclasses import dataclass

import numpy as np
import yaml

from anet_tf.config import Config
from anet_tf.config import ConfigError
from anet_tf.io import atomic_write_text
from anet_tf.io import read_yaml_file
from anet_tf.training.checkpoint import POINTER
from anet_tf.training.checkpoint import STATE
from anet_tf.training.checkpoint import WEIGHTS
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import METRICS_FILE
from anet_tf.training.run import copy_log_rows

STUDY_FILE = "study.yaml"
REPORT_MD = "ablation.md"
REPORT_JSON = "ablation.json"
REPORT_PNG = "ablation.png"
SCORES = ("mAP", "R1", "R5", "mINP")
PLOTTED = ("mAP", "R1")


@dataclass(frozen=True)
class Variant:
    """One row of the study.

    Args:
        overrides: ``--set`` items that make the model and losses of this row.
        feature: the test-time feature (``eval.feature``).
        paper: where the row is in the paper.
        evaluates: the variant whose trained runs this one evaluates on
            ``feature`` instead of training a model of its own.
        stage1_from: a variant whose stage 1 is the same training as this one's
            (same network, same L of eq. 10; only stage 2's L' differs): when that
            variant's run of the seed has finished stage 1, this run starts from its
            ``checkpoints/stage1`` and trains stage 2 only. Besides saving the
            compute, the two rows then differ by stage 2 alone, which is what the
            comparison is about.
    """

    overrides: tuple[str, ...]
    feature: str
    paper: str
    evaluates: str | None = None
    stage1_from: str | None = None

    @property
    def settings(self) -> list[str]:
        return [*self.overrides, f"eval.feature={self.feature}"]


_VAN = ("model.variant=van", "model.attribute_branch=se")
_ANET = ("model.variant=anet", "model.attribute_branch=se")

# In the order of the rows of Table 1, then Table 2 (and one row the paper has not).
VARIANTS: dict[str, Variant] = {
    "baseline": Variant(("model.variant=baseline",), "f", "Table 1: Baseline"),
    "van_f": Variant(_VAN, "f", "Table 1: VAN (f); Table 2: att"),
    "van_fa": Variant(_VAN, "fa", "Table 1: VAN (fa)", evaluates="van_f"),
    "anet_noac": Variant(
        (*_ANET, "loss.use_ac=false"),
        "j",
        "Table 1: ANet (j) w/o AC",
        stage1_from="anet",
    ),
    "anet": Variant((*_ANET, "loss.use_ac=true"), "j", "Table 1: ANet (j)"),
    "van_fc": Variant(
        ("model.variant=van", "model.attribute_branch=fc"), "f", "Table 2: fc"
    ),
    "anet_fc": Variant(
        ("model.variant=anet", "model.attribute_branch=fc", "loss.use_ac=true"),
        "j",
        "not in the paper: ANet (j) with fc branches",
    ),
}
TABLE1 = ("baseline", "van_f", "van_fa", "anet_noac", "anet")


def seed_overrides(seed: int) -> list[str]:
    return [f"train.seed={seed}", f"data.seed={seed}"]


# Keys the study sets per run; a --set of one of them would be silently replaced.
VARIANT_KEYS = sorted(
    {o.split("=", 1)[0] for v in VARIANTS.values() for o in v.settings}
)
SEED_KEYS = [o.split("=", 1)[0] for o in seed_overrides(0)]


def parse_variants(text: str) -> list[str]:
    """``"anet,baseline"`` -> the names in the paper's order, with the variants they
    need (``van_fa`` needs ``van_f``'s runs).

    Raises:
        ConfigError: an unknown or missing name, listing the valid ones.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        given = ", ".join(map(repr, unknown)) or "(none given)"
        raise ConfigError(
            f"--variants: unknown variant {given}; valid: {', '.join(VARIANTS)}"
        )
    wanted = set(names)
    for n in names:
        if VARIANTS[n].evaluates:
            wanted.add(VARIANTS[n].evaluates)
    return [n for n in VARIANTS if n in wanted]


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [0, 1, 2]; ``"0,3,5"`` -> [0, 3, 5] (one explicit seed: ``"5,"``).

    Raises:
        ConfigError: not a count or a comma-separated list of seeds >= 0.
    """
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise ConfigError(
            f"--seeds: expected a count N >= 1 (seeds 0..N-1) or a list such as "
            f"0,3,5 of seeds >= 0; received {text!r}"
        )
    return sorted(set(seeds))


def variant_config(base: Config, name: str, seed: int) -> Config:
    """The config of one run of the study."""
    from anet_tf.config import apply_overrides

    return apply_overrides(base, [*VARIANTS[name].settings, *seed_overrides(seed)])


def run_dir_of(out_dir: str, name: str, seed: int) -> str:
    return os.path.join(out_dir, name, f"seed{seed}")


# ------------------------------------------------------------------------- study


def _base_dict(cfg: Config) -> dict:
    raw = cfg.to_dict()
    raw["data"]["root"] = os.path.abspath(cfg.data.root)
    return raw


def _flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _differences(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [
        f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key, "(absent)") != b.get(key, "(absent)")
    ]


def read_study(out_dir: str) -> dict | None:
    path = os.path.join(out_dir, STUDY_FILE)
    if not os.path.exists(path):
        return None
    study = read_yaml_file(
        path, advice="it records the study's settings: restore it, or start a study in another --out"
    )
    if not isinstance(study, dict) or "base" not in study:
        raise ConfigError(
            f"{path}: not a study file of anet-tf ablate (no 'base' config)"
        )
    return study


def write_study(out_dir: str, study: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, STUDY_FILE)
    atomic_write_text(
        path,
        "# anet-tf ablate: the settings every run of this study shares\n"
        + yaml.safe_dump(study, sort_keys=False),
    )


def open_study(
    out_dir: str,
    config: str | None,
    overrides: list[str],
    variants: list[str] | None,
    seeds: list[int] | None,
) -> tuple[dict, Config]:
    """Create ``DIR/study.yaml`` or continue the study in it.

    A new study takes ``config`` (default: the shipped default) with ``overrides``.
    Continuing one, no ``--config``/``--set`` means the study's own settings; given,
    they must resolve to the same config. Variants and seeds are added to the
    study's (default for a new study: Table 1, seed 0).

    Returns:
        (the study as written, the base config of every run).

    Raises:
        ConfigError: a ``--set`` of a key the study sets per run, or settings that
            differ from the study's (listing the differences).
    """
    from anet_tf.config import config_from_dict
    from anet_tf.config import load_config

    controlled = [
        o for o in overrides if o.split("=", 1)[0].strip() in VARIANT_KEYS + SEED_KEYS
    ]
    if controlled:
        raise ConfigError(
            f"--set {controlled[0]}: the study sets this key per run (variants set "
            f"{', '.join(VARIANT_KEYS)}; seeds set {', '.join(SEED_KEYS)}); drop it"
        )
    study = read_study(out_dir)
    path = os.path.join(out_dir, STUDY_FILE)
    # Keys added to the config schema since the study began take their defaults.
    recorded = None
    if study is not None:
        recorded = config_from_dict(study["base"], source=path)
        recorded.source = study.get("config") or path
    if recorded is not None and config is None and not overrides:
        cfg = recorded
    else:
        cfg = load_config(config, overrides)
        if recorded is not None:
            diffs = _differences(_base_dict(recorded), _base_dict(cfg))
            if diffs:
                shown = "; ".join(diffs[:8]) + ("; ..." if len(diffs) > 8 else "")
                raise ConfigError(
                    f"{path}: this study was made with other settings and a study must "
                    f"not mix them (study -> this command): {shown}. Continue it with "
                    f"its own settings (the same --config/--set, or none) or choose "
                    f"another --out"
                )
    if study is None:
        study = {
            "config": cfg.source,
            "overrides": list(overrides),
            "variants": [],
            "seeds": [],
            "base": _base_dict(cfg),
            "invocations": [],
        }
    names = set(study["variants"]) | set(
        variants or ([] if study["variants"] else TABLE1)
    )
    study["variants"] = [n for n in VARIANTS if n in names]
    study["seeds"] = sorted(
        set(study["seeds"]) | set(seeds or ([] if study["seeds"] else [0]))
    )
    return study, cfg


# -------------------------------------------------------------------------- runs


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
    from anet_tf.training.fit import load_run_config
    from anet_tf.training.fit import save_run_config

    snapshot = os.path.join(source_run, CHECKPOINTS, STAGE1_SNAPSHOT)
    if not os.path.isfile(os.path.join(snapshot, STATE)):
        return False
    source_cfg = load_run_config(source_run)
    mine, theirs = _base_dict(cfg), _base_dict(source_cfg)
    for raw in (mine, theirs):  # what may differ: stage 2's loss and its lr
        raw["loss"].pop("use_ac", None)
        raw["train"].pop("stage2", None)
    if _differences(theirs, mine):
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
    latest = CheckpointManager(os.path.join(source, "checkpoints")).latest()
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


# ----------------------------------------------------------------------- reports


def _run_scores(metrics: dict) -> dict:
    """The reported numbers of one metrics.json's ``metrics`` (fractions 0..1)."""
    scores = {
        k: float(metrics[k]) for k in SCORES if isinstance(metrics.get(k), (int, float))
    }
    attributes = {}
    for attr, value in (metrics.get("attributes") or {}).items():
        if isinstance(value, dict) and isinstance(value.get("top1"), (int, float)):
            attributes[attr] = float(value["top1"])
    if attributes:
        scores["attributes"] = attributes
    return scores


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def summarize(out_dir: str, study: dict) -> dict:
    """The content of ``ablation.json``: per variant, each finished seed's numbers,
    their mean and sample standard deviation (ddof=1; null for one seed)."""
    attribute_names = list(study["base"]["data"].get("attributes", []))
    variants = {}
    for name in [n for n in VARIANTS if n in study["variants"]]:
        v = VARIANTS[name]
        runs, missing = [], []
        for seed in study["seeds"]:
            run_dir = run_dir_of(out_dir, name, seed)
            path = os.path.join(run_dir, METRICS_FILE)
            if not os.path.exists(path):
                missing.append(seed)
                continue
            with open(path, encoding="utf-8") as fh:
                payload = json.load(fh)
            run = {
                "seed": seed,
                "dir": os.path.relpath(run_dir, out_dir),
                "settings": [*v.settings, *seed_overrides(seed)],
            }
            run.update(_run_scores(payload.get("metrics", {})))
            for key in ("train_seconds", "source_run"):
                if key in payload:
                    run[key] = payload[key]
            runs.append(run)
            for attr in run.get("attributes", {}):
                if attr not in attribute_names:
                    attribute_names.append(attr)
        mean, std = {}, {}
        for key in SCORES:
            values = [r[key] for r in runs if key in r]
            if values:
                mean[key], std[key] = _mean_std(values)
        for attr in attribute_names:
            values = [
                r["attributes"][attr] for r in runs if attr in r.get("attributes", {})
            ]
            if values:
                m, s = _mean_std(values)
                mean.setdefault("attributes", {})[attr] = m
                std.setdefault("attributes", {})[attr] = s
        variants[name] = {
            "paper": v.paper,
            "feature": v.feature,
            "overrides": v.settings,
            "evaluates": v.evaluates,
            "n": len(runs),
            "missing_seeds": missing,
            "runs": runs,
            "mean": mean,
            "std": std,
        }
    return {
        "config": study["config"],
        "overrides": study["overrides"],
        "dataset": study["base"]["data"]["name"],
        "seeds": study["seeds"],
        "scores": list(SCORES),
        "attributes": attribute_names,
        "units": "fractions in [0, 1]; ablation.md shows percent",
        "variants": variants,
    }


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    text = f"{100 * mean:.2f}"
    return text if std is None else f"{text} ± {100 * std:.2f}"


def format_markdown(summary: dict, study: dict) -> str:
    """``ablation.md``: provenance, then one row per variant in the paper's order."""
    lines = ["# Ablation study (section 4.3 of the paper, Tables 1 and 2)", ""]
    for inv in study.get("invocations", []):
        lines.append(f"- `{inv['command']}` ({inv['date']}, {inv['machine']})")
    overrides = shlex.join(a for o in summary["overrides"] for a in ("--set", o))
    lines += [
        f"- config: `{summary['config']}`"
        + (f" with `{overrides}`" if overrides else "")
        + f"; dataset `{summary['dataset']}`",
        f"- seeds: {', '.join(map(str, summary['seeds']))} (seed k sets train.seed and "
        "data.seed: weight initialisation, P x K sampling and augmentation change; the "
        "dataset and its split do not)",
        f"- report written {datetime.datetime.now().isoformat(timespec='seconds')}",
        "",
        "Percent; mean ± sample standard deviation over the finished seeds (n). "
        "Attribute columns: top-1 accuracy of each attribute branch on the labelled "
        "test images (none for the baseline, which has no attribute branch).",
        "",
    ]
    rows = summary["variants"]
    scores = [k for k in SCORES if any(k in r["mean"] for r in rows.values())]
    attrs = [
        a
        for a in summary["attributes"]
        if any(a in r["mean"].get("attributes", {}) for r in rows.values())
    ]
    header = [
        "variant",
        "paper",
        "test feature",
        "n",
        *scores,
        *(f"{a} top-1" for a in attrs),
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for name, r in rows.items():
        cells = [name, r["paper"], r["feature"], str(r["n"])]
        cells += [_cell(r["mean"].get(k), r["std"].get(k)) for k in scores]
        cells += [
            _cell(
                r["mean"].get("attributes", {}).get(a),
                r["std"].get("attributes", {}).get(a),
            )
            for a in attrs
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    base = rows.get("baseline", {}).get("mean", {})
    best = []
    for key in scores:
        candidates = [
            (r["mean"][key], n)
            for n, r in rows.items()
            if n != "baseline" and key in r["mean"]
        ]
        if key in base and candidates:
            # The first in the paper's order among equals.
            value, name = max(candidates, key=lambda c: c[0])
            best.append(f"{key} {name} ({100 * (value - base[key]):+.2f})")
    if best:
        lines.append(
            "Best variant per column, in points over the baseline: "
            + "; ".join(best)
            + "."
        )
    if any(r["evaluates"] for r in rows.values()):
        lines.append(
            "van_fa has no model of its own: it is van_f's run of the same seed "
            "evaluated on fa (its metrics.json names the run)."
        )
    unfinished = [f"{n} seed {s}" for n, r in rows.items() for s in r["missing_seeds"]]
    if unfinished:
        lines.append(
            f"Not finished: {', '.join(unfinished)} (run the same command again to "
            "continue the study)."
        )
    lines.append("")
    return "\n".join(lines)


def write_reports(out_dir: str, study: dict) -> dict:
    """Write ``ablation.json``, ``ablation.md`` and ``ablation.png``; their paths."""
    from anet_tf.training.fit import write_json

    summary = summarize(out_dir, study)
    paths = {
        "json": os.path.join(out_dir, REPORT_JSON),
        "markdown": os.path.join(out_dir, REPORT_MD),
        "figure": os.path.join(out_dir, REPORT_PNG),
    }
    write_json(paths["json"], summary)
    with open(paths["markdown"], "w", encoding="utf-8") as fh:
        fh.write(format_markdown(summary, study))
    rows = summary["variants"]
    series = {}
    for key in PLOTTED:
        means = [100 * r["mean"].get(key, np.nan) for r in rows.values()]
        stds = [100 * (r["std"].get(key) or 0.0) for r in rows.values()]
        if any(np.isfinite(means)):
            series[key] = (means, stds)
    if series:
        from anet_tf.visualize import plot_ablation

        plot_ablation(
            list(rows),
            series,
            paths["figure"],
            title=f"{summary['dataset']}: mean ± std over seeds "
            f"{', '.join(map(str, summary['seeds']))}",
        )
    else:
        paths.pop("figure")
    return paths


# ----------------------------------------------------------------------- machine


def describe_machine() -> str:
    """Host, CPU cores, GPUs TensorFlow sees, and the TensorFlow / Keras versions."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        try:
            names.append(
                tf.config.experimental.get_device_details(gpu).get(
                    "device_name", gpu.name
                )
            )
        except Exception:  # noqa: BLE001 - informative only
            names.append(gpu.name)
    return (
        f"host {platform.node()}, {os.cpu_count()} CPU cores, "
        f"GPUs: {', '.join(names) or 'none'}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}"
    )
