"""The study's rows: each variant as ``--set`` overrides and a test feature
(:data:`VARIANTS`, in the paper's order), what a seed sets, and parsing
``--variants`` / ``--seeds``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from anet_tf.config import Config
from anet_tf.config import ConfigError


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
    # The Joint Module's width (issue: ANet at the Baseline's serving cost): its
    # two 3x3 convolutions c -> w -> c at w = c/4 and c/16.
    "anet_w4": Variant(
        (*_ANET, "loss.use_ac=true", "model.joint_module.width=0.25"),
        "j",
        "not in the paper: ANet (j), Joint Module 1/4 wide",
    ),
    "anet_w16": Variant(
        (*_ANET, "loss.use_ac=true", "model.joint_module.width=0.0625"),
        "j",
        "not in the paper: ANet (j), Joint Module 1/16 wide",
    ),
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




def variant_keys(names) -> list[str]:
    """The keys the variants ``names`` set per run: a ``--set`` of one of them
    would be silently replaced, so a study of them refuses it."""
    return sorted(
        {o.split("=", 1)[0] for n in names for o in VARIANTS[n].settings}
    )


# The keys every study may set per run (the Joint Module's width only where its
# variants are in the study).
VARIANT_KEYS = variant_keys(VARIANTS)
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
