"""Vehicle-attribute accuracy: how well each attribute branch (eq. 3) classifies.

ANet's attribute branches are trained as classifiers (the attribute cross-entropy
of eq. 9); this module scores their predictions on labelled test images, so the
attribute accuracy is reported beside the re-id metrics rather than inferred from
them. Pure NumPy on integer class indices; :data:`~anet_tf.data.records.UNKNOWN`
(-1) true labels are left out, as in training.

Per attribute (:func:`attribute_accuracy`)::

    {
        "top1": float | None,          # share of labelled images predicted right
        "balanced": float | None,      # mean per-class recall (classes seen in true)
        "count": int,                  # labelled images
        "majority_rate": float | None, # share of the most common true class: the
                                       # top-1 of always answering it (chance level)
        "classes": [str],              # class names, index = class id
        "confusion": [[int]],          # [m, m], rows = true class, cols = predicted
    }

With no labelled image the rates are ``None`` (JSON ``null``; NaN is not valid JSON)
and the confusion matrix is all zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

from anet_tf.data.records import UNKNOWN


def attribute_accuracy(pred, true, classes: Sequence[str]) -> dict:
    """Top-1, balanced accuracy, count, majority-class rate and confusion matrix of
    one attribute.

    Balanced accuracy is the mean, over the classes that have at least one labelled
    image, of the share of that class's images predicted as it (per-class recall);
    a class absent from ``true`` has no recall and is left out of the mean rather
    than counted as 0.

    Args:
        pred: predicted class index per image, int [N], each in [0, m).
        true: true class index per image, int [N], in [0, m) or -1 (unknown, left
            out together with its prediction).
        classes: the m class names, index = class id.

    Returns:
        The dict of the module docstring; plain Python types (JSON-ready).

    Raises:
        ValueError: shapes differ, or an index is out of range (saying which).
    """
    pred = np.asarray(pred)
    true = np.asarray(true)
    m = len(classes)
    if pred.ndim != 1 or pred.shape != true.shape:
        raise ValueError(
            f"pred and true must be 1-D arrays of the same length. Received: "
            f"pred shape {pred.shape}, true shape {true.shape}"
        )
    if m < 1:
        raise ValueError("classes must name at least one class. Received: []")
    labelled = true != UNKNOWN
    pred = pred[labelled].astype(np.int64)
    true = true[labelled].astype(np.int64)
    for name, values in (("pred", pred), ("true", true)):
        bad = values[(values < 0) | (values >= m)]
        if bad.size:
            allowed = "[0, m)" if name == "pred" else f"[0, m) or {UNKNOWN} (unknown)"
            raise ValueError(
                f"{name} holds class index {int(bad[0])}, outside {allowed} for "
                f"m={m} classes {list(classes)}"
            )
    confusion = np.zeros((m, m), np.int64)
    np.add.at(confusion, (true, pred), 1)
    count = int(true.size)
    result = {
        "top1": None,
        "balanced": None,
        "count": count,
        "majority_rate": None,
        "classes": [str(c) for c in classes],
        "confusion": confusion.tolist(),
    }
    if count:
        per_class = confusion.sum(axis=1)
        seen = per_class > 0
        recall = np.diag(confusion)[seen] / per_class[seen]
        result["top1"] = float(np.trace(confusion) / count)
        result["balanced"] = float(recall.mean())
        result["majority_rate"] = float(per_class.max() / count)
    return result


def per_attribute_accuracy(
    pred: Mapping[str, np.ndarray],
    true: Mapping[str, np.ndarray],
    classes: Mapping[str, Sequence[str]],
) -> dict[str, dict]:
    """:func:`attribute_accuracy` of several attributes, ``{name: dict}`` in the
    order of ``classes``.

    Args:
        pred, true: class indices per attribute name (see :func:`attribute_accuracy`).
        classes: class names per attribute name; names which attributes are scored.

    Raises:
        KeyError: an attribute of ``classes`` missing from ``pred`` or ``true``.
    """
    out = {}
    for name, names in classes.items():
        for what, table in (("pred", pred), ("true", true)):
            if name not in table:
                raise KeyError(
                    f"attribute {name!r} has no {what} labels; {what} has "
                    f"{sorted(table)}"
                )
        try:
            out[name] = attribute_accuracy(pred[name], true[name], names)
        except ValueError as exc:
            raise ValueError(f"attribute {name!r}: {exc}") from None
    return out


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_attribute_table(attributes: Mapping[str, dict]) -> str:
    """A Markdown table of :func:`per_attribute_accuracy`: attribute, labelled
    images, top-1 and balanced accuracy, and the majority-class rate (the top-1 of
    always answering the most common class), in percent."""
    header = ["attribute", "n", "top-1", "balanced", "majority class (chance)"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for name, a in attributes.items():
        row = [
            name,
            str(a["count"]),
            _percent(a["top1"]),
            _percent(a["balanced"]),
            _percent(a["majority_rate"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
