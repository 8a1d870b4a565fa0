"""The files the pictures are drawn from: a run's ``log.csv``, the CMC curve of an
``anet-tf evaluate --json-out`` file and the attribute accuracy in a run's
``metrics.json``."""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from anet_tf.training.run import LOG_FILE
from anet_tf.visualize.common import VisualizeError

# log.csv columns that are not loss terms.
LOG_INFO_COLUMNS = (
    "stage",
    "epoch",
    "global_epoch",
    "lr",
    "epoch_time_s",
    "images_per_s",
)


def read_log(path: str) -> dict[str, np.ndarray]:
    """The columns of a run's ``log.csv`` as float arrays (NaN where empty).

    Args:
        path: the ``log.csv`` file or the run directory holding it.
    """
    if os.path.isdir(path):
        path = os.path.join(path, LOG_FILE)
    if not os.path.isfile(path):
        raise VisualizeError(f"{path}: no such training log (a run directory has log.csv)")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise VisualizeError(f"{path}: the log has no epochs yet")
    header = rows[0]
    if "global_epoch" not in header:
        raise VisualizeError(
            f"{path}:1: not an anet-tf log (no global_epoch column); header {header}"
        )
    columns: dict[str, list[float]] = {h: [] for h in header}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise VisualizeError(
                f"{path}:{line}: {len(row)} cells, the header has {len(header)}"
            )
        for h, cell in zip(header, row, strict=True):
            try:
                columns[h].append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                raise VisualizeError(
                    f"{path}:{line}: column {h}: not a number: {cell!r}"
                ) from None
    return {h: np.asarray(v, np.float64) for h, v in columns.items()}


def read_cmc(path: str) -> tuple[np.ndarray, dict]:
    """The CMC curve and metrics of an ``anet-tf evaluate --json-out`` file (or a
    run's ``metrics.json``).

    Returns:
        (cmc float [R] in [0, 1], the file's dict).
    """
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            payload = json.load(fh)
    except OSError as exc:
        raise VisualizeError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise VisualizeError(f"{path}: not JSON ({exc})") from None
    metrics = payload.get("metrics", payload) if isinstance(payload, dict) else {}
    cmc = metrics.get("cmc") if isinstance(metrics, dict) else None
    if not cmc:
        raise VisualizeError(
            f'{path}: no CMC curve (expected {{"metrics": {{"cmc": [...]}}}} as '
            f"`anet-tf evaluate --json-out` writes)"
        )
    return np.asarray(cmc, np.float64), payload


def read_attribute_accuracy(run_dir: str) -> dict[str, dict]:
    """The attribute accuracy (``{attribute: dict}`` of
    :func:`anet_tf.evaluation.attributes.attribute_accuracy`) of a run's
    ``metrics.json``: what ``fit`` measured (``metrics``), else what
    ``anet-tf evaluate --run`` recorded (``evaluations``, the run's own feature
    first; the attribute branches do not depend on the feature).

    Raises:
        VisualizeError: no metrics.json, or none of its results has attribute
            accuracy (a baseline, or a run evaluated before it was measured).
    """
    import json

    from anet_tf.training.run import METRICS_FILE

    path = os.path.join(run_dir, METRICS_FILE)
    hint = f"run `anet-tf evaluate --run {run_dir}` to measure it"
    try:
        with open(path, encoding="utf-8") as fh:
            payload = json.load(fh)
    except FileNotFoundError:
        raise VisualizeError(f"{path}: no such file; {hint}") from None
    except OSError as exc:
        raise VisualizeError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise VisualizeError(f"{path}: not JSON ({exc})") from None
    payload = payload if isinstance(payload, dict) else {}
    evaluations = payload.get("evaluations")
    evaluations = evaluations if isinstance(evaluations, dict) else {}
    feature = payload.get("feature")
    order = [payload.get("metrics")]
    order += [evaluations.get(feature)] + [evaluations[k] for k in sorted(evaluations)]
    for metrics in order:
        if isinstance(metrics, dict) and metrics.get("attributes"):
            attributes = metrics["attributes"]
            break
    else:
        raise VisualizeError(
            f"{path}: no attribute accuracy (a baseline has no attribute branch); "
            f"for a van or anet run, {hint}"
        )
    for name, acc in attributes.items():
        m = len(acc.get("classes", []))
        confusion = np.asarray(acc.get("confusion", []))
        if m < 1 or confusion.shape != (m, m):
            raise VisualizeError(
                f"{path}: attributes.{name}: expected 'classes' and an m x m "
                f"'confusion'; got {m} classes and a matrix of shape {confusion.shape}"
            )
    return attributes
