"""Same-vehicle decisions in search answers: a gallery's matches, each with its
P(same vehicle) and a decision at an operating point of the model's calibration
(``anet-tf calibrate``, :mod:`anet_tf.evaluation.calibration`), and per query
the answer "match" or "no match".

An operating point is a false-match rate (``fmr``: the score threshold the
calibration measured for it) or a probability (``probability``: the score at
which the calibration's mapping reaches it). A match is ``"same"`` where its
score is at or above that threshold, else ``"different"``; a query whose matches
are all ``"different"`` (or that has none) is answered ``"no match"``. The
calibration must be of the gallery's model (:func:`~anet_tf.evaluation.
calibration.calibrates`: its SavedModel, or the run's weights it was exported
from); :func:`operating_point` refuses another model's file in one line.

A gallery's scores are those of its index: exact where it keeps whole vectors
(``flat``, ``ivf``, ``hnsw``), approximate where it compresses them (``ivfpq``
and the other product-quantized kinds), so a decision near the threshold may
differ there from the one of the exact score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

from anet_tf.evaluation.calibration import Calibration
from anet_tf.evaluation.calibration import CalibrationError
from anet_tf.evaluation.calibration import load_calibration
from anet_tf.search.gallery import Match

# The ``--json`` output of ``anet-tf search`` (docs/search.md, "The JSON
# output"); outputs without a "format" field are version 1.
SEARCH_FORMAT = "anet-tf-search/2"
SAME, DIFFERENT = "same", "different"
MATCH, NO_MATCH = "match", "no match"


def check_operating_point(fmr: float | None, probability: float | None) -> None:
    """Exactly one of ``fmr`` and ``probability``, in (0, 1); checked before
    anything is opened.

    Raises:
        CalibrationError: one line naming the option.
    """
    if (fmr is None) == (probability is None):
        raise CalibrationError(
            "give one operating point with the calibration: --fmr (e.g. 1e-3) or "
            "--probability (e.g. 0.9)"
        )
    name, value = ("fmr", fmr) if fmr is not None else ("probability", probability)
    if not 0.0 < value < 1.0:
        raise CalibrationError(
            f"--{name} must be in (0, 1), e.g. --fmr 1e-3 or --probability 0.9. "
            f"Received: {value:g}"
        )


@dataclass(frozen=True)
class OperatingPoint:
    """Where a calibration decides "same vehicle": at score >= ``threshold``.

    Attributes:
        calibration: the model's calibration.
        threshold: the score threshold of the operating point.
        fmr, probability: the operating point asked for (one is None).
    """

    calibration: Calibration
    threshold: float
    fmr: float | None = None
    probability: float | None = None

    def describe(self) -> str:
        """The operating point in words, e.g. ``FMR 0.001``."""
        if self.fmr is not None:
            return f"FMR {self.fmr:g}"
        return f"P(same) {self.probability:g}"

    def to_dict(self) -> dict:
        """The ``"operating_point"`` field of the JSON output."""
        return {
            "calibration": self.calibration.path,
            "calibration_model": self.calibration.fingerprint,
            "fmr": self.fmr,
            "probability": self.probability,
            "threshold": round(float(self.threshold), 6),
        }

    def decide(self, matches: Sequence[Sequence[Match]]) -> list[list[Match]]:
        """``matches`` (per query, as :meth:`Gallery.matches
        <anet_tf.search.gallery.Gallery.matches>` gives them) with each match's
        ``probability`` and ``decision`` set."""
        decided = []
        for row in matches:
            p = self.calibration.probability([m.score for m in row])
            decided.append(
                [
                    replace(
                        m,
                        probability=float(p[i]),
                        decision=SAME if m.score >= self.threshold else DIFFERENT,
                    )
                    for i, m in enumerate(row)
                ]
            )
        return decided


def answer(row: Sequence[Match]) -> str:
    """``"match"`` when a match of the query is decided ``"same"``, else ``"no
    match"``.

    Raises:
        ValueError: the matches carry no decision (:meth:`OperatingPoint.decide`).
    """
    if any(m.decision is None for m in row):
        raise ValueError("matches without a decision: OperatingPoint.decide them")
    return MATCH if any(m.decision == SAME for m in row) else NO_MATCH


def operating_point(
    path: str,
    model: dict,
    *,
    fmr: float | None = None,
    probability: float | None = None,
) -> OperatingPoint:
    """The operating point ``fmr`` or ``probability`` of the calibration file
    ``path``, for a gallery of ``model`` (its model record, ``Gallery.model``).

    Raises:
        CalibrationError: not one operating point in (0, 1), a calibration of
            another model, or an operating point no score reaches.
        DamagedFileError: the file is damaged (named with what is wrong).
    """
    check_operating_point(fmr, probability)
    calibration = load_calibration(path, model)
    threshold = calibration.threshold(fmr=fmr, probability=probability)
    if not threshold <= 1.0:
        raise CalibrationError(
            f"{path}: no threshold reaches FMR {fmr:g} (too few different-vehicle "
            "pairs were measured to tell); ask for a higher --fmr"
        )
    return OperatingPoint(calibration, threshold, fmr, probability)
