"""``DIR/study.yaml``: the settings every run of a study shares (base config,
overrides, variants, seeds, invocations); reading, writing, and opening a study
(new, or continued with the same settings)."""

from __future__ import annotations

import os

import yaml

from anet_tf.config import Config
from anet_tf.config import ConfigError
from anet_tf.io import atomic_write_text
from anet_tf.io import read_yaml_file
from anet_tf.jobs.study.definition import SEED_KEYS
from anet_tf.jobs.study.definition import TABLE1
from anet_tf.jobs.study.definition import VARIANTS
from anet_tf.jobs.study.definition import variant_keys

STUDY_FILE = "study.yaml"


def base_dict(cfg: Config) -> dict:
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


def differences(old: dict, new: dict) -> list[str]:
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

    study = read_study(out_dir)
    names = set(study["variants"] if study else []) | set(
        variants or ([] if study and study["variants"] else TABLE1)
    )
    keys = variant_keys(names)
    controlled = [o for o in overrides if o.split("=", 1)[0].strip() in keys + SEED_KEYS]
    if controlled:
        raise ConfigError(
            f"--set {controlled[0]}: the study sets this key per run (its variants "
            f"set {', '.join(keys)}; seeds set {', '.join(SEED_KEYS)}); drop it"
        )
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
            diffs = differences(base_dict(recorded), base_dict(cfg))
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
            "base": base_dict(cfg),
            "invocations": [],
        }
    study["variants"] = [n for n in VARIANTS if n in names]
    study["seeds"] = sorted(
        set(study["seeds"]) | set(seeds or ([] if study["seeds"] else [0]))
    )
    return study, cfg
