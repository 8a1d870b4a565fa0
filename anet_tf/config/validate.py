"""Validation: values that are well-typed but impossible raise :class:`ConfigError`
naming the dotted key and the file (or ``--set``) it came from.

:func:`validate` first settles the settings that follow another one unless the
user set them (:func:`follow_variant`), then runs one check per section, in the
order of the schema; each check takes the config and ``err(key, message)``, which
builds the error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from anet_tf.config.errors import ConfigError
from anet_tf.config.errors import blame
from anet_tf.config.errors import set_by_user
from anet_tf.config.schema import DEFAULT_FEATURE
from anet_tf.config.schema import TRACK_PROTOCOLS
from anet_tf.config.schema import Config
from anet_tf.config.schema import scheduled_epochs
from anet_tf.export.formats import FORMATS
from anet_tf.io import path_name_problem

# The largest side of the network's input that a config accepts: far above what
# vehicle ReID uses (128-512 px), far below what would exhaust memory at the first
# batch (a 100000 x 100000 input asks for 112 GiB).
MAX_IMAGE_SIDE = 2048

Err = Callable[[str, str], ConfigError]


def validate(cfg: Config, origins: dict | None = None, path: str = "") -> None:
    """Settle the settings that follow ``model.variant`` (:func:`follow_variant`),
    then check values that are well-typed but impossible; raise :class:`ConfigError`
    naming the ``--set`` or the file that gave the key (:func:`~anet_tf.config.
    errors.blame`).

    Args:
        origins: dotted key -> the file or ``--set`` that gave it; kept in
            ``cfg.origins``. None: the config's own ``cfg.origins``.
        path: the config the user named (default ``cfg.source``).
    """
    if origins is not None:
        cfg.origins = dict(origins)
    origins = cfg.origins
    path = path or cfg.source
    follow_variant(cfg, origins)

    def err(key: str, message: str) -> ConfigError:
        return ConfigError(f"{blame(key, origins, path)}: {key}: {message}")

    for check in CHECKS:
        check(cfg, err)


def follow_variant(cfg: Config, origins: dict[str, str]) -> None:
    """The defaults that depend on ``model.variant``, wherever the user did not set
    the key (``--set`` or a config of theirs; a shipped config's value is a default):
    ``eval.feature`` is the variant's test feature (:data:`DEFAULT_FEATURE`: j for
    ANet, f for VAN and the baseline), and the baseline, which has no attribute
    branches, reads no attributes (``data.attributes: []``), so crops without
    attribute labels train with ``--set model.variant=baseline`` alone."""
    variant = cfg.model.variant
    if not set_by_user("eval.feature", origins):
        cfg.eval.feature = DEFAULT_FEATURE[variant]
    if set_by_user("data.attributes", origins):
        return
    if variant == "baseline":
        if cfg.data.attributes:  # kept for a later change of variant (cfg.followed)
            cfg.followed["data.attributes"] = list(cfg.data.attributes)
        cfg.data.attributes = []
    elif not cfg.data.attributes and "data.attributes" in cfg.followed:
        cfg.data.attributes = list(cfg.followed.pop("data.attributes"))


def _check_numbers(cfg: Config, err: Err) -> None:
    """Every number finite, every seed >= 0."""
    # Every number must be finite (YAML reads .nan and .inf as floats) and every seed
    # a non-negative int (NumPy's generators refuse negative seeds deep in a run).
    for key, value in _leaves(cfg.to_dict()):
        if isinstance(value, float) and not math.isfinite(value):
            raise err(key, f"must be a finite number, got {value}")
        if key.rsplit(".", 1)[-1] == "seed" and isinstance(value, int) and value < 0:
            raise err(key, f"must be >= 0, got {value}")


def _check_data(cfg: Config, err: Err) -> None:
    """``data``: batch shape, input size, attributes."""
    d = cfg.data
    if d.num_instances < 2:
        raise err(
            "data.num_instances",
            f"K must be >= 2 so every anchor has a positive for triplet mining, got "
            f"{d.num_instances}",
        )
    if d.batch_size <= 0 or d.batch_size % d.num_instances:
        raise err(
            "data.batch_size",
            f"must be a positive multiple of data.num_instances (K={d.num_instances}),"
            f" got {d.batch_size}",
        )
    if d.batch_size // d.num_instances < 2:
        raise err(
            "data.batch_size",
            f"needs at least 2 identities per batch (P = batch_size / K), got "
            f"P={d.batch_size // d.num_instances}",
        )
    if d.max_image_pixels <= 0:
        raise err("data.max_image_pixels", f"must be positive, got {d.max_image_pixels}")
    if d.test_batch_size <= 0:
        raise err("data.test_batch_size", f"must be positive, got {d.test_batch_size}")
    if not d.root:
        raise err("data.root", "must name the dataset folder")
    if any(s < 16 for s in d.image_size):
        raise err("data.image_size", f"each side must be >= 16, got {d.image_size}")
    if any(s > MAX_IMAGE_SIDE for s in d.image_size):
        raise err(
            "data.image_size",
            f"each side must be <= {MAX_IMAGE_SIDE} (the network's input; vehicle ReID "
            f"uses 128 to 512), got {list(d.image_size)}",
        )
    if len(set(d.attributes)) != len(d.attributes):
        raise err("data.attributes", f"duplicate attribute in {d.attributes}")
    if cfg.model.variant != "baseline" and not d.attributes:
        raise err(
            "data.attributes",
            f"model.variant={cfg.model.variant!r} needs at least one attribute",
        )


def _check_augment(cfg: Config, err: Err) -> None:
    """``data.augment``: probabilities and areas."""
    a = cfg.data.augment
    for key in ("flip_prob", "zoom_prob", "erasing_prob"):
        v = getattr(a, key)
        if not 0.0 <= v <= 1.0:
            raise err(f"data.augment.{key}", f"must be a probability in [0, 1], got {v}")
    if not 0.0 < a.zoom_min_area <= 1.0:
        raise err("data.augment.zoom_min_area", f"must be in (0, 1], got {a.zoom_min_area}")
    if a.pad < 0:
        raise err("data.augment.pad", f"must be >= 0 pixels, got {a.pad}")
    if not 0.0 <= a.autoaugment_prob <= 1.0:
        raise err(
            "data.augment.autoaugment_prob",
            f"must be a probability in [0, 1], got {a.autoaugment_prob}",
        )
    lo, hi = a.erasing_area
    if not 0.0 < lo <= hi < 1.0:
        raise err("data.augment.erasing_area", f"must be 0 < min <= max < 1, got {a.erasing_area}")


def _check_synth(cfg: Config, err: Err) -> None:
    """``data.synth``: the generated dataset."""
    s = cfg.data.synth
    if s.ids < 4 or not 2 <= s.test_ids < s.ids:
        raise err("data.synth.test_ids", f"need 2 <= test_ids < ids, got {s.test_ids} of {s.ids}")
    if s.cameras < 2:
        raise err("data.synth.cameras", f"need at least 2 cameras, got {s.cameras}")
    if s.images_per_id < 2:
        raise err("data.synth.images_per_id", f"need at least 2, got {s.images_per_id}")
    if not 16 <= s.image_size <= MAX_IMAGE_SIDE:
        raise err("data.synth.image_size", f"must be in [16, {MAX_IMAGE_SIDE}], got {s.image_size}")
    if not 0.0 <= s.unlabelled_fraction < 1.0:
        raise err("data.synth.unlabelled_fraction", f"must be in [0, 1), got {s.unlabelled_fraction}")


def _check_model(cfg: Config, err: Err) -> None:
    """``model``, ``model.head``, ``model.joint_module``."""
    m = cfg.model
    for key in ("base_width", "se_reduction", "s_a"):
        if getattr(m, key) <= 0:
            raise err(f"model.{key}", f"must be positive, got {getattr(m, key)}")
    for key in ("s_f", "s_j"):
        if getattr(m, key) < 0:
            raise err(
                f"model.{key}",
                f"must be positive, or 0 for no FC (the pooled map), got {getattr(m, key)}",
            )
    if m.non_local_inter is not None and m.non_local_inter <= 0:
        raise err("model.non_local_inter", f"must be positive or null, got {m.non_local_inter}")
    h = m.head
    if not h.gem_p > 0:
        raise err("model.head.gem_p", f"must be positive, got {h.gem_p}")
    if not h.circle_scale > 0:
        raise err("model.head.circle_scale", f"must be positive, got {h.circle_scale}")
    if not 0.0 <= h.circle_margin < 1.0:
        raise err("model.head.circle_margin", f"must be in [0, 1), got {h.circle_margin}")
    if m.last_stride not in (1, 2):
        raise err("model.last_stride", f"must be 1 or 2, got {m.last_stride}")
    w = m.joint_module.width
    if w is not None and (w <= 0 or (isinstance(w, float) and w >= 1 and not w.is_integer())):
        raise err(
            "model.joint_module.width",
            f"must be null, a number of channels or a fraction in (0, 1), got {w}",
        )


def _check_loss(cfg: Config, err: Err) -> None:
    """``loss``: smoothing, margins and weights."""
    lo_ = cfg.loss
    if not 0.0 <= lo_.label_smoothing < 1.0:
        raise err("loss.label_smoothing", f"must be in [0, 1), got {lo_.label_smoothing}")
    for key in ("triplet_margin", "pattern_margin", "lambda_van", "lambda_a", "lambda_g"):
        if getattr(lo_, key) < 0:
            raise err(f"loss.{key}", f"must be >= 0, got {getattr(lo_, key)}")


def _check_train(cfg: Config, err: Err) -> None:
    """``train``: the lr schedule, weight decay, optimizer and stages."""
    t = cfg.train
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise err("train.lr", f"learning rate must be a positive number, got {t.lr}")
    if not (math.isfinite(t.weight_decay) and t.weight_decay >= 0):
        raise err("train.weight_decay", f"must be a number >= 0, got {t.weight_decay}")
    if t.stage1.lr is not None:
        raise err(
            "train.stage1.lr",
            f"must be null, got {t.stage1.lr}: stage 1 runs at train.lr with "
            "train.lr_milestones; a per-stage lr exists for stage 2 (train.stage2.lr)",
        )
    lr2 = t.stage2.lr
    if lr2 is not None and not (math.isfinite(lr2) and lr2 > 0):
        raise err(
            "train.stage2.lr",
            f"must be a positive number or null (the schedule), got {t.stage2.lr}",
        )
    total_epochs = scheduled_epochs(cfg)
    if t.lr_delay_epochs < 0 or (t.lr_schedule == "cosine" and t.lr_delay_epochs >= total_epochs):
        raise err(
            "train.lr_delay_epochs",
            f"must be >= 0 and below the run's {total_epochs} epochs, got {t.lr_delay_epochs}",
        )
    if not 0 <= t.lr_min < t.lr:
        raise err("train.lr_min", f"must be >= 0 and below train.lr ({t.lr}), got {t.lr_min}")
    if t.warmup_iters < 0:
        raise err("train.warmup_iters", f"must be >= 0, got {t.warmup_iters}")
    for key in ("weight_decay_norm", "weight_decay_bias"):
        value = getattr(t, key)
        if value is not None and value < 0:
            raise err(f"train.{key}", f"must be >= 0 or null, got {value}")
        if value is not None and value != t.weight_decay and t.weight_decay_mode != "coupled":
            raise err(
                f"train.{key}",
                "a per-group weight decay needs train.weight_decay_mode: coupled",
            )
    if not (math.isfinite(t.attribute_refit_c) and t.attribute_refit_c > 0):
        raise err("train.attribute_refit_c", f"must be a positive number, got {t.attribute_refit_c}")
    if not t.bias_lr_factor > 0:
        raise err("train.bias_lr_factor", f"must be positive, got {t.bias_lr_factor}")
    if t.bias_lr_factor != 1 and t.optimizer != "sgd":
        raise err(
            "train.bias_lr_factor",
            f"needs train.optimizer: sgd (got {t.optimizer!r}: Adam's step does not "
            "scale with the gradient, so a bias lr factor cannot be applied through it)",
        )
    if t.freeze_iters < 0:
        raise err("train.freeze_iters", f"must be >= 0, got {t.freeze_iters}")
    if t.freeze_iters and t.weight_decay and t.weight_decay_mode == "decoupled":
        raise err(
            "train.freeze_iters",
            "needs train.weight_decay_mode: coupled (or weight_decay 0): Keras' "
            "decoupled decay would shrink the frozen backbone",
        )
    if not 0 < t.warmup_factor <= 1:
        raise err("train.warmup_factor", f"must be in (0, 1], got {t.warmup_factor}")
    if not 0 < t.lr_gamma <= 1:
        raise err("train.lr_gamma", f"must be in (0, 1], got {t.lr_gamma}")
    if sorted(t.lr_milestones) != list(t.lr_milestones) or any(x <= 0 for x in t.lr_milestones):
        raise err("train.lr_milestones", f"must be increasing positive epochs, got {t.lr_milestones}")
    for name in ("stage1", "stage2"):
        st = getattr(t, name)
        if st.epochs < 0:
            raise err(f"train.{name}.epochs", f"must be >= 0, got {st.epochs}")
        if st.steps_per_epoch is not None and st.steps_per_epoch <= 0:
            raise err(f"train.{name}.steps_per_epoch", f"must be positive or null, got {st.steps_per_epoch}")
    if t.stage1.epochs == 0 and t.stage2.epochs == 0:
        raise err("train.stage1.epochs", "both stages have 0 epochs: nothing to train")


def _check_eval(cfg: Config, err: Err) -> None:
    """``eval``: the test feature the variant has, protocol sizes."""
    m = cfg.model
    e = cfg.eval
    if e.feature in ("fa",) and m.variant == "baseline":
        raise err("eval.feature", "feature 'fa' needs attribute branches (model.variant van or anet)")
    if e.feature == "j" and m.variant != "anet":
        raise err(
            "eval.feature",
            f"feature 'j' needs model.variant 'anet', got {m.variant!r} (whose test "
            f"feature is {DEFAULT_FEATURE[m.variant]}: leave eval.feature unset)",
        )
    if e.max_rank < 1:
        raise err("eval.max_rank", f"must be >= 1, got {e.max_rank}")
    if e.chunk_size < 1:
        raise err("eval.chunk_size", f"must be >= 1, got {e.chunk_size}")
    if e.vehicleid_trials < 1:
        raise err("eval.vehicleid_trials", f"must be >= 1, got {e.vehicleid_trials}")
    for name in e.tracks:
        if name not in TRACK_PROTOCOLS:
            raise err(
                "eval.tracks",
                f"unknown track protocol {name!r}; valid: {', '.join(TRACK_PROTOCOLS)}",
            )
    if len(set(e.tracks)) != len(e.tracks):
        raise err("eval.tracks", f"names a protocol twice: {e.tracks}")


def _check_export(cfg: Config, err: Err) -> None:
    """``export``: formats, version, model name."""
    x = cfg.export
    for fmt in x.formats:
        if fmt not in FORMATS:
            raise err("export.formats", f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if x.version < 1:
        raise err("export.version", f"must be >= 1, got {x.version}")
    problem = path_name_problem(x.model_name)
    if problem:
        raise err("export.model_name", problem)


def _check_distill(cfg: Config, err: Err) -> None:
    """``distill``: weights >= 0, a positive temperature."""
    d = cfg.distill
    for key in ("lambda_feature", "lambda_relation", "lambda_attribute"):
        if getattr(d, key) < 0:
            raise err(f"distill.{key}", f"must be >= 0, got {getattr(d, key)}")
    if not d.temperature > 0:
        raise err("distill.temperature", f"must be positive, got {d.temperature}")


CHECKS: tuple[Callable[[Config, Err], None], ...] = (
    _check_numbers,
    _check_data,
    _check_augment,
    _check_synth,
    _check_model,
    _check_loss,
    _check_train,
    _check_eval,
    _check_export,
    _check_distill,
)


def _leaves(node: Any, prefix: str = ""):
    """(dotted key, value) of every leaf of a config dict; list items as key[i]."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix[:-1]}[{i}].")
    else:
        yield prefix[:-1], node
