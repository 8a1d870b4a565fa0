"""The study's reports from its finished runs: ``ablation.json`` (every run's
numbers, mean and std), ``ablation.md`` (provenance and one row per variant) and
``ablation.png`` (mAP and R1 bars)."""

from __future__ import annotations

import datetime
import json
import os
import shlex

import numpy as np

from anet_tf.jobs.study.definition import VARIANTS
from anet_tf.jobs.study.definition import run_dir_of
from anet_tf.jobs.study.definition import seed_overrides
from anet_tf.training.run import METRICS_FILE

REPORT_MD = "ablation.md"
REPORT_JSON = "ablation.json"
REPORT_PNG = "ablation.png"
SCORES = ("mAP", "R1", "R5", "mINP")
PLOTTED = ("mAP", "R1")


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
