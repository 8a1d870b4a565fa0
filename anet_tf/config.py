"""Typed configuration: nested dataclasses loaded from YAML.

A config file is YAML read with ``yaml.safe_load``. It may extend another file with
``_base_: other.yaml`` (a path relative to the extending file; a list of bases is
merged left to right), and command-line overrides (``--set train.stage1.epochs=3``)
are applied last. Every key is checked against the dataclasses below: an unknown key,
a value of the wrong type or an impossible value raises :class:`ConfigError` naming
the dotted key and the file (or ``--set``) it came from.

The dataclasses hold plain values only; ``build_*`` functions elsewhere turn them into
the keyword arguments of model and data classes, which never see a config object.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

import yaml

from anet_tf.io import load_yaml
from anet_tf.io import quote
from anet_tf.io import yaml_problem

DATASET_NAMES = ("synthetic", "folder", "veri776", "veriwild", "vehicleid")
BACKBONES = ("resnet50_ibn_a", "resnet50", "resnet18_ibn_a", "resnet18")
VARIANTS = ("baseline", "van", "anet")
FEATURES = ("f", "fa", "j")
# The largest side of the network's input that a config accepts: far above what
# vehicle ReID uses (128-512 px), far below what would exhaust memory at the first
# batch (a 100000 x 100000 input asks for 112 GiB).
MAX_IMAGE_SIDE = 2048


class ConfigError(ValueError):
    """A configuration problem, with the dotted key and the file it came from."""


# --------------------------------------------------------------------------- data


@dataclass
class SynthConfig:
    """The generated synthetic vehicle dataset (`anet-tf synth`).

    Args:
        ids: number of vehicle identities in total (train + test).
        test_ids: how many of them form the test split (query + gallery).
        cameras: number of cameras; each has its own viewpoint, light and background.
        images_per_id: images rendered per identity, spread over the cameras.
        image_size: side of the square rendered images, in pixels.
        unlabelled_fraction: fraction of identities whose attributes are left
            unknown (as in VehicleID), to exercise the masking of attribute losses.
        seed: everything is deterministic from this seed.
        balanced_train: every colour and type gets the same number of training
            identities (the test split does not depend on it).
    """

    ids: int = 120
    test_ids: int = 40
    cameras: int = 6
    images_per_id: int = 12
    image_size: int = 128
    unlabelled_fraction: float = 0.1
    seed: int = 0
    balanced_train: bool = True


@dataclass
class AugmentConfig:
    """Training-time augmentation (section 4.2: flip, zoom, random erasing).

    The defaults are the paper's; ``erasing_fill``, ``pad`` and
    ``autoaugment_prob`` are what FastReID's strong baseline adds.

    Args:
        flip_prob: probability of a horizontal flip.
        zoom_prob: probability of a random zoom (a crop resized back to the image
            size).
        zoom_min_area: the smallest crop of a zoom, as a fraction of the image area.
        erasing_prob: probability of random erasing (Zhong et al.).
        erasing_area: (min, max) fraction of the image area an erased rectangle covers.
        erasing_aspect: the smallest aspect ratio of an erased rectangle (the range
            is [erasing_aspect, 1 / erasing_aspect]).
        erasing_fill: random (per-pixel uniform values, the paper) | mean (the
            ImageNet mean pixel, FastReID's ``REA.VALUE``).
        pad: pixels of zero padding on every side before a random crop back to the
            image size (FastReID's ``PADDING``); 0 = off.
        autoaugment_prob: probability of applying an AutoAugment policy to an image
            (FastReID's ``AUTOAUG.PROB``); 0 = off.
    """

    flip_prob: float = 0.5
    zoom_prob: float = 0.5
    zoom_min_area: float = 0.64
    erasing_prob: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.4)
    erasing_aspect: float = 0.3
    erasing_fill: Literal["random", "mean"] = "random"
    pad: int = 0
    autoaugment_prob: float = 0.0


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how batches are formed.

    Args:
        name: dataset reader: synthetic | folder | veri776 | veriwild | vehicleid.
        root: dataset folder. Relative paths are relative to the working directory.
        attributes: the attributes that form the n attribute branches, in order.
        image_size: network input (height, width).
        batch_size: training batch; P identities x K images, so a multiple of K.
        num_instances: K, images per identity in a batch (>= 2 for triplet mining).
        test_batch_size: batch size of the evaluation pipeline.
        veriwild_test_size: VeRi-Wild test list (small=3000, medium=5000, large=10000).
        vehicleid_test_list: VehicleID test list: small | medium | large or a size.
        num_parallel_calls: tf.data parallelism; -1 = AUTOTUNE.
        seed: sampler and augmentation seed.
        max_image_pixels: the largest image (width x height) accepted by ``fit``'s
            pre-flight check and ``data check``; larger ones are refused by name
            (decompression bombs; decoding 14000 x 14000 pixels costs 2 GB).
    """

    name: Literal["synthetic", "folder", "veri776", "veriwild", "vehicleid"] = (
        "synthetic"
    )
    root: str = "datasets/synthetic"
    attributes: list[str] = field(default_factory=lambda: ["color", "type"])
    image_size: tuple[int, int] = (256, 256)
    batch_size: int = 64
    num_instances: int = 4
    test_batch_size: int = 128
    veriwild_test_size: Literal["small", "medium", "large"] = "small"
    vehicleid_test_list: str | int = "small"
    num_parallel_calls: int = -1
    seed: int = 0
    max_image_pixels: int = 40_000_000
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)

    @property
    def num_ids_per_batch(self) -> int:
        """P, the identities in one batch."""
        return self.batch_size // self.num_instances


# -------------------------------------------------------------------------- model


@dataclass
class JointModuleConfig:
    """Joint Module (section 3.2).

    Args:
        width: inner width of the two 3x3 convolutions of G_reid; null keeps the
            paper's c (the backbone channels).
    """

    width: int | None = None


@dataclass
class HeadConfig:
    """Pooling, neck and classifier of the f and j heads.

    The defaults are the paper's heads (eq. 1 and 8: GAP, FC, linear classifier);
    the other values are the parts of FastReID's strong baseline (its SBS configs),
    the backbone of the paper's "ANet + FastReid" rows. Both ReID heads (f, and j
    for ANet) use the same settings; the attribute branches keep the paper's heads.

    Args:
        pooling: avg (GAP, the paper) | gem (generalized-mean pooling with a learnable
            exponent p per head, FastReID's ``GeneralizedMeanPoolingP``).
        gem_p: initial p of GeM (3 in FastReID).
        neck: none (the paper) | bnneck: a BatchNormalization with no learned shift
            between the feature and the classifier (Luo et al.'s BNNeck); the
            feature after it is the test feature and the triplet feature (FastReID
            ``NECK_FEAT: after``).
        classifier: linear (the paper) | circle: cosine logits with the CircleSoftmax
            margins (Sun et al., CVPR 2020) applied by the identity loss.
        circle_scale, circle_margin: s and m of CircleSoftmax (64 and 0.35 in SBS).
    """

    pooling: Literal["avg", "gem"] = "avg"
    gem_p: float = 3.0
    neck: Literal["none", "bnneck"] = "none"
    classifier: Literal["linear", "circle"] = "linear"
    circle_scale: float = 64.0
    circle_margin: float = 0.35


@dataclass
class ModelConfig:
    """The ANet network (section 3) and its ablation variants (Table 1, Table 2).

    Args:
        variant: baseline (f only) | van (f + attribute branches) | anet (full).
        backbone: resnet50_ibn_a | resnet50 | resnet18_ibn_a | resnet18.
        base_width: channels of the first residual stage (64 for the real ResNets;
            smaller values give a width-reduced network for CPUs and tests).
        last_stride: stride of the last residual stage (1 as in the paper).
        pretrained: local weights file for the backbone; "none" = random
            initialisation on purpose; null = not chosen (``fit`` on VeRi-776,
            VeRi-Wild and VehicleID refuses it: the paper starts from ImageNet).
        attribute_branch: se (SE channel attention, the paper) | fc (Table 2).
        attribute_neck: none (the paper: the classifier reads a_i) | bnneck (a
            BatchNorm without learned shift between a_i and the attribute
            classifier, as the ReID heads' BNNeck; a_i is served before it).
        se_reduction: SE reduction ratio (16).
        s_f: dimension of f; s_a: dimension of each a_i; s_j: dimension of j.
            ``s_f: 0`` / ``s_j: 0``: no FC, the feature is the pooled map itself
            (c channels; FastReID's ``EMBEDDING_DIM: 0``).
        stem: ibn (the IBN-Net release: max-pool with padding 1) | fastreid
            (FastReID's ResNet: max-pool without padding, ceil mode), so converted
            FastReID checkpoints see the map they were trained on.
        non_local: non-local blocks in stages 2 and 3 where FastReID's
            ``WITH_NL`` places them (after the last 2 and 3 blocks).
        non_local_inter: channels of the non-local blocks' g, theta and phi; null =
            half the input channels (Wang et al.). FastReID's code computes
            ``reduc_ratio // reduc_ratio`` = 1 since its v0.3, so its released
            ``WITH_NL`` checkpoints need 1.
        head: pooling, neck and classifier of the ReID heads (:class:`HeadConfig`).
    """

    variant: Literal["baseline", "van", "anet"] = "anet"
    backbone: Literal["resnet50_ibn_a", "resnet50", "resnet18_ibn_a", "resnet18"] = (
        "resnet50_ibn_a"
    )
    base_width: int = 64
    last_stride: int = 1
    pretrained: str | None = None
    attribute_branch: Literal["se", "fc"] = "se"
    attribute_neck: Literal["none", "bnneck"] = "none"
    se_reduction: int = 16
    s_f: int = 512
    s_a: int = 128
    s_j: int = 512
    stem: Literal["ibn", "fastreid"] = "ibn"
    non_local: bool = False
    non_local_inter: int | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    joint_module: JointModuleConfig = field(default_factory=JointModuleConfig)


# ------------------------------------------------------------------------- losses


@dataclass
class LossConfig:
    """Loss terms and weights (eq. 4, 9, 10, 13; section 4.2).

    Args:
        label_smoothing: epsilon of the label-smoothed identity cross entropy.
        triplet_margin: margin of the batch-hard triplet losses (ignored when
            soft_margin is true).
        soft_margin: use softplus(d_ap - d_an) instead of a hinge with margin.
        pattern_margin: margin of the attribute-pattern triplet on g.
        lambda_van: lambda of eq. (10); lambda_a: lambda_A of eq. (4);
            lambda_g: lambda_G of eq. (9).
        use_ac: enable the Amelioration Constraint in stage 2 (false = the
            "ANet w/o AC" ablation).
    """

    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    soft_margin: bool = False
    pattern_margin: float = 0.3
    lambda_van: float = 1.0
    lambda_a: float = 1.0
    lambda_g: float = 1.0
    use_ac: bool = True


# ----------------------------------------------------------------------- training


@dataclass
class StageConfig:
    """One training stage.

    Args:
        epochs: epochs of the stage.
        steps_per_epoch: null = one pass over the training images.
        lr: stage 2 only. null (the paper) = the stage follows ``train.lr`` and
            ``train.lr_milestones`` counted over both stages (6e-7 in the paper's
            stage 2); a value = every stage-2 epoch runs at this constant lr,
            milestones ignored, so a study can vary how far the Amelioration
            Constraint moves the heads. ``train.stage1.lr`` must stay null: stage 1
            is ``train.lr`` with its milestones.
    """

    epochs: int = 1
    steps_per_epoch: int | None = None
    lr: float | None = None


@dataclass
class TrainConfig:
    """Two-stage training (section 3.2, 4.2).

    The learning-rate schedule counts epochs over both stages (``stage2.lr``
    replaces it in stage 2):

    - ``lr_schedule: multistep`` (the paper): lr is multiplied by ``lr_gamma`` at
      each epoch of ``lr_milestones``.
    - ``cosine`` (FastReID's strong baseline): ``lr`` for the first
      ``lr_delay_epochs`` epochs, then cosine annealing towards ``lr_min`` over the
      remaining epochs, stepped once per epoch as PyTorch's ``CosineAnnealingLR``
      with ``T_max`` = remaining epochs (``DELAY_EPOCHS``, ``ETA_MIN_LR``). The
      epochs it spans are stage 1's, plus stage 2's when ANet's stage 2 follows the
      schedule (``stage2.lr`` null).
    - ``freeze_iters`` (FastReID's ``FREEZE_ITERS``): the backbone is frozen for
      the run's first ``freeze_iters`` steps (inference-mode BatchNorm, no update)
      while the heads train (see :class:`anet_tf.training.trainer.ANetTrainer`);
      needs coupled weight decay, since Keras' decoupled decay would still shrink the
      frozen weights.
    - ``warmup_iters`` (either schedule): the lr of the first ``warmup_iters``
      iterations of the run is multiplied by a factor rising linearly from
      ``warmup_factor`` to 1, set before every step (``WARMUP_ITERS``,
      ``WARMUP_FACTOR``).

    Weight decay (the paper does not give it; its baseline's lineage, Bag of Tricks,
    torchreid and FastReID, uses 5e-4):

    - ``weight_decay_mode: coupled``: L2 regularisation as PyTorch's ``Adam`` /
      ``SGD`` ``weight_decay``: ``weight_decay * w`` is added to the gradient of the
      loss before the optimizer, so Adam/Amsgrad normalise it like the loss gradient.
      This is what Bag of Tricks does, and what ``anet_tf/configs/paper_base.yaml`` sets
      (5e-4).
    - ``decoupled`` (the default, for configs that predate the option): Keras'
      ``weight_decay``, ``w -= lr * weight_decay * w`` after the optimizer step
      (AdamW style); at lr 6e-4 and 5e-4 this shrinks a weight by 3e-7 a step, so it
      regularises almost nothing.

    Both decay every trainable variable, BatchNorm gammas/betas and biases included,
    as Bag of Tricks does (its ``WEIGHT_DECAY_BIAS`` is also 5e-4). In stage 2 only
    the variables stage 2 trains are decayed.

    Parameter groups as FastReID builds them (coupled mode only):
    ``weight_decay_norm`` replaces ``weight_decay`` for the scales and shifts of
    normalisation layers (BatchNorm, InstanceNorm, the BNNeck), ``weight_decay_bias``
    for the biases of convolutions and dense layers (null = ``weight_decay``), and
    ``bias_lr_factor`` multiplies the lr of those biases (SGD only: there it equals
    scaling the bias' gradient and decay, which is how it is done; Adam's update
    does not depend on the gradient's scale).

    Args:
        stage1, stage2: the two stages (:class:`StageConfig`).
        optimizer: amsgrad (the paper) | adam | sgd (momentum 0.9).
        lr: the base learning rate.
        lr_milestones: epochs (counted over both stages) at which the multistep
            schedule multiplies the lr by ``lr_gamma``.
        lr_gamma: the multistep schedule's factor.
        lr_schedule: multistep (the paper) | cosine (FastReID's strong baseline).
        lr_delay_epochs: cosine: epochs at ``lr`` before the annealing starts.
        lr_min: cosine: the lr the annealing ends at.
        warmup_iters: steps of linear lr warm-up at the start of the run (0 = none).
        warmup_factor: the warm-up's starting factor of the lr.
        freeze_iters: steps at the start of the run with the backbone frozen.
        bias_lr_factor: lr factor of convolution and dense biases (SGD only).
        weight_decay_norm: decay of normalisation scales and shifts (coupled mode;
            null = ``weight_decay``).
        weight_decay_bias: decay of biases (coupled mode; null = ``weight_decay``).
        weight_decay: L2 weight decay strength.
        weight_decay_mode: coupled (added to the gradient, as PyTorch) | decoupled
            (Keras' AdamW-style shrink after the step).
        strategy: auto (mirrored over all visible GPUs, else one device) |
            one_device | mirrored | multi_worker (``TF_CONFIG``; TensorFlow only).
            ``data.batch_size`` is the global batch; batch-hard mining sees each
            replica's share.
        mixed_precision: float16 with loss scaling on TensorFlow, bfloat16 on JAX.
        jit_compile: compile the train step with XLA.
        eval_every: evaluate every this many epochs during training (and at the
            end), keeping the best mAP in ``checkpoints/best``; 0 = only at the end.
        nesterov: Nesterov momentum for sgd (FastReID's SGD has none: false).
        deterministic: make a run repeatable bit for bit on the same machine and
            software: TensorFlow op determinism and no Grappler graph
            optimisation while training (see ``anet_tf.training.fit.set_determinism``
            for why both), on top of the seeding every run does (``seed``; the
            input pipeline is always a function of ``data.seed``). Without it,
            same-seed runs of the synthetic config drift apart from the first
            epoch on CPU. Some GPU ops raise ``UnimplementedError`` under op
            determinism, and the unoptimised graph may be slower on GPU.
        seed: seed of Python, NumPy, TensorFlow and Keras (weight initialisation).
        attribute_refit: after the last stage, refit each attribute branch's
            classifier to convergence on the frozen network's clean training
            images (L2-regularised logistic regression, no bias; see
            ``anet_tf.training.refit``). Not in the paper; changes the attribute
            predictions only, never the embedding. Ignored by the baseline.
        attribute_refit_c: inverse L2 strength of that fit (scikit-learn's ``C``).
    """

    stage1: StageConfig = field(default_factory=lambda: StageConfig(epochs=150))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(epochs=60))
    optimizer: Literal["amsgrad", "adam", "sgd"] = "amsgrad"
    nesterov: bool = True
    lr: float = 6e-4
    lr_milestones: list[int] = field(default_factory=lambda: [60, 120, 150])
    lr_gamma: float = 0.1
    lr_schedule: Literal["multistep", "cosine"] = "multistep"
    lr_delay_epochs: int = 0
    lr_min: float = 0.0
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    freeze_iters: int = 0
    bias_lr_factor: float = 1.0
    weight_decay_norm: float | None = None
    weight_decay_bias: float | None = None
    weight_decay: float = 5e-4
    weight_decay_mode: Literal["coupled", "decoupled"] = "decoupled"
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    mixed_precision: bool = False
    jit_compile: bool = False
    seed: int = 0
    deterministic: bool = False
    eval_every: int = 0
    attribute_refit: bool = False
    attribute_refit_c: float = 1.0


# --------------------------------------------------------------------- evaluation


@dataclass
class EvalConfig:
    """Evaluation (section 4.1 protocols; metrics as FastReID).

    Args:
        feature: test-time feature: f | fa (f concatenated with the a_i) | j.
        metric: cosine | euclidean, on L2-normalised features.
        flip: average the features of the image and its mirror.
        rerank: k-reciprocal re-ranking (galleries that fit in memory).
        max_rank: length of the CMC curve.
        chunk_size: queries per chunk in the scalable evaluator.
        vehicleid_trials: random gallery draws of the VehicleID protocol.
        trapezoid_ap: also report the MATLAB-style trapezoid mAP.
        seed: seed of the VehicleID protocol's random gallery draws.
    """

    feature: Literal["f", "fa", "j"] = "j"
    metric: Literal["cosine", "euclidean"] = "cosine"
    flip: bool = False
    rerank: bool = False
    max_rank: int = 50
    chunk_size: int = 256
    vehicleid_trials: int = 10
    trapezoid_ap: bool = False
    seed: int = 0


# ------------------------------------------------------------------------- export


@dataclass
class ExportConfig:
    """Export to serving formats (TF Serving SavedModel, TFLite, ONNX, TensorRT).

    Args:
        formats: what ``fit`` exports: saved_model | tflite | onnx | tensorrt.
        model_name: the model's folder and name for TF Serving
            (``export/<model_name>/<version>``); no path separators.
        version: the SavedModel's version folder.
        quantize: the TFLite files besides fp32: null (none) | fp16 | int8 (the
            int8 dynamic-range and full-integer models).
    """

    formats: list[str] = field(default_factory=lambda: ["saved_model"])
    model_name: str = "anet"
    version: int = 1
    quantize: Literal["fp16", "int8"] | None = None


@dataclass
class Config:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    # Where the config came from (file path), for error messages; not a YAML key.
    source: str = field(default="<defaults>", metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe) of every setting, without ``source``."""
        out = _to_plain(self)
        out.pop("source", None)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------ loading

# The shipped configs are package data, so a name works from any install.
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
DEFAULT_CONFIG = "synthetic.yaml"


def resolve_config_path(path: str | None) -> str:
    """Find a config file: an existing path, or the name of a shipped config.

    ``None`` gives the default (``synthetic``). Shipped configs live in
    ``anet_tf/configs/``; a name may be given with or without ``.yaml``, or as
    ``configs/NAME.yaml``.
    """
    if path is None:
        path = DEFAULT_CONFIG
    if os.path.exists(path):
        return path
    candidates = [os.path.join(CONFIG_DIR, path), os.path.join(CONFIG_DIR, path + ".yaml")]
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) == 2 and parts[0] == "configs":
        # `configs/NAME.yaml`, the shipped configs' path relative to a clone's root
        candidates.append(os.path.join(CONFIG_DIR, parts[1]))
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise ConfigError(
        f"config file not found: {quote(path)} (looked in the working directory and in "
        f"{CONFIG_DIR})"
    )


def load_config(
    path: str | None = None, overrides: list[str] | None = None
) -> Config:
    """Load a YAML config (with ``_base_`` inheritance) and apply ``--set`` overrides.

    Args:
        path: YAML file, or a name of a shipped config; None = the default config.
        overrides: ``["train.stage1.epochs=3", ...]``; values are parsed as YAML.

    Raises:
        ConfigError: unknown key, wrong type or impossible value, naming key and file.
    """
    path = resolve_config_path(path)
    raw, origins = _load_yaml_tree(path, chain=())
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, origins, "--set")
    cfg = _build(Config, raw, "", origins, path)
    cfg.source = path
    validate(cfg, origins, path)
    return cfg


def config_from_dict(
    raw: dict[str, Any], source: str = "<dict>"
) -> Config:
    """Build and validate a :class:`Config` from a nested dict (e.g. a run's YAML)."""
    origins: dict[str, str] = {}
    _record_origins(raw, "", source, origins)
    cfg = _build(Config, copy.deepcopy(raw), "", origins, source)
    cfg.source = source
    validate(cfg, origins, source)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new validated config: ``cfg`` with ``--set key=value`` overrides applied."""
    raw = cfg.to_dict()
    origins: dict[str, str] = {}
    _record_origins(raw, "", cfg.source, origins)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, origins, "--set")
    new = _build(Config, raw, "", origins, cfg.source)
    new.source = cfg.source
    validate(new, origins, cfg.source)
    return new


def add_config_arguments(parser, config_help: str | None = None, config: bool = True) -> None:
    """Add the ``--config`` and ``--set KEY=VALUE`` options every command shares
    (parsed values: ``args.config``, ``args.overrides``)."""
    if config:
        parser.add_argument(
            "--config",
            "-c",
            default=None,
            help=config_help
            or "YAML config file or the name of a shipped one (default: synthetic)",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.stage1.epochs=3 (repeatable)",
    )


def _load_yaml_tree(path: str, chain: tuple[str, ...]) -> tuple[dict, dict[str, str]]:
    apath = os.path.abspath(path)
    if apath in chain:
        raise ConfigError(
            f"{path}: _base_ cycle: {' -> '.join(chain + (apath,))}"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = load_yaml(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got "
            f"{type(data).__name__}"
        )
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of them")
    merged: dict = {}
    origins: dict[str, str] = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        base_raw, base_origins = _load_yaml_tree(base_path, chain + (apath,))
        _deep_merge(merged, base_raw)
        origins.update(base_origins)
    _record_origins(data, "", path, origins)
    _deep_merge(merged, data)
    return merged, origins


def _record_origins(node: Any, prefix: str, source: str, origins: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            origins[dotted] = source
            _record_origins(value, dotted + ".", source, origins)


def _deep_merge(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {quote(item)}: expected key=value, e.g. train.lr=0.001")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {quote(item)}: empty key")
    try:
        value = load_yaml(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {quote(item)}: value is not valid YAML: {yaml_problem(exc)}"
        ) from None
    return key, value


def _set_dotted(raw: dict, key: str, value: Any, origins: dict, source: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:  # a section the override creates (or a typo) is its own
            child = node[part] = {}
            origins.setdefault(".".join(parts[: i + 1]), source)
        if not isinstance(child, dict):
            raise ConfigError(
                f"{source}: {'.'.join(parts[: i + 1])} is not a section, cannot set "
                f"{key}"
            )
        node = child
    node[parts[-1]] = value
    origins[key] = source
    _record_origins(value, key + ".", source, origins)


def _where(key: str, origins: dict[str, str], default: str) -> str:
    probe = key.split("[", 1)[0]  # a list item comes from where its list came from
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return default


def _build(cls: type, raw: Any, prefix: str, origins: dict, path: str) -> Any:
    where = _where(prefix.rstrip("."), origins, path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got "
            f"{quote(raw)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)
        if not f.metadata.get("internal")
    }
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"{_where(dotted, origins, path)}: unknown key '{dotted}'; valid keys "
                f"in '{prefix.rstrip('.') or 'top level'}': {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(hints[key], value, dotted, origins, path)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"{origin.__name__} of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str, origins: dict, path: str) -> Any:
    where = _where(key, origins, path)

    def fail() -> ConfigError:
        return ConfigError(
            f"{where}: {key} must be {_type_name(tp)}, got {quote(value)} "
            f"({type(value).__name__})"
        )

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", origins, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, origins, path)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise ConfigError(
            f"{where}: {key} must be one of {', '.join(map(repr, typing.get_args(tp)))}"
            f", got {quote(value)}"
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = typing.get_args(tp)
        if origin is tuple and len(args) >= 1 and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{where}: {key} must have {len(args)} items, got {quote(value)}"
                )
            return tuple(
                _coerce(a, v, f"{key}[{i}]", origins, path)
                for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0]
        return origin(
            _coerce(item, v, f"{key}[{i}]", origins, path) for i, v in enumerate(value)
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads 6e-4 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    raise ConfigError(f"{where}: {key}: unsupported config type {tp!r}")


# --------------------------------------------------------------------- validation


def scheduled_epochs(cfg: Config) -> int:
    """Epochs the lr schedule spans: stage 1, plus ANet's stage 2 unless
    ``train.stage2.lr`` gives that stage its own constant lr."""
    t = cfg.train
    follows = cfg.model.variant == "anet" and t.stage2.lr is None
    return t.stage1.epochs + (t.stage2.epochs if follows else 0)


def validate(cfg: Config, origins: dict | None = None, path: str = "") -> None:
    """Check values that are well-typed but impossible; raise :class:`ConfigError`."""
    origins = origins or {}
    path = path or cfg.source

    def err(key: str, message: str) -> ConfigError:
        return ConfigError(f"{_where(key, origins, path)}: {key}: {message}")

    # Every number must be finite (YAML reads .nan and .inf as floats) and every seed
    # a non-negative int (NumPy's generators refuse negative seeds deep in a run).
    for key, value in _leaves(cfg.to_dict()):
        if isinstance(value, float) and not math.isfinite(value):
            raise err(key, f"must be a finite number, got {value}")
        if key.rsplit(".", 1)[-1] == "seed" and isinstance(value, int) and value < 0:
            raise err(key, f"must be >= 0, got {value}")

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
    a = d.augment
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
    s = d.synth
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
    if m.joint_module.width is not None and m.joint_module.width <= 0:
        raise err("model.joint_module.width", f"must be positive or null, got {m.joint_module.width}")

    lo_ = cfg.loss
    if not 0.0 <= lo_.label_smoothing < 1.0:
        raise err("loss.label_smoothing", f"must be in [0, 1), got {lo_.label_smoothing}")
    for key in ("triplet_margin", "pattern_margin", "lambda_van", "lambda_a", "lambda_g"):
        if getattr(lo_, key) < 0:
            raise err(f"loss.{key}", f"must be >= 0, got {getattr(lo_, key)}")

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

    e = cfg.eval
    if e.feature in ("fa",) and m.variant == "baseline":
        raise err("eval.feature", "feature 'fa' needs attribute branches (model.variant van or anet)")
    if e.feature == "j" and m.variant != "anet":
        raise err("eval.feature", f"feature 'j' needs model.variant 'anet', got {m.variant!r}")
    if e.max_rank < 1:
        raise err("eval.max_rank", f"must be >= 1, got {e.max_rank}")
    if e.chunk_size < 1:
        raise err("eval.chunk_size", f"must be >= 1, got {e.chunk_size}")
    if e.vehicleid_trials < 1:
        raise err("eval.vehicleid_trials", f"must be >= 1, got {e.vehicleid_trials}")

    x = cfg.export
    valid_formats = ("saved_model", "tflite", "onnx", "tensorrt")
    for fmt in x.formats:
        if fmt not in valid_formats:
            raise err("export.formats", f"unknown format {fmt!r}; valid: {', '.join(valid_formats)}")
    if x.version < 1:
        raise err("export.version", f"must be >= 1, got {x.version}")
    problem = path_name_problem(x.model_name)
    if problem:
        raise err("export.model_name", problem)


def path_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one folder name inside another folder (a model name, a
    run name), or None. A name with a separator or ``..`` would write elsewhere."""
    if not name or not name.strip():
        return "must not be empty"
    if "/" in name or "\\" in name or (os.sep in name) or (os.altsep and os.altsep in name):
        return f"must be a single folder name without path separators, got {quote(name)}"
    if name == "." or ".." in name:
        return f"must not be '.' or '..' or contain '..', got {quote(name)}"
    if "\0" in name:
        return f"must not contain NUL, got {quote(name)}"
    return None


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


REAL_DATASETS = ("veri776", "veriwild", "vehicleid")


def check_pretrained_choice(cfg: Config) -> None:
    """Refuse to train on a real dataset with ``model.pretrained`` unset: the paper's
    results start from an ImageNet-pretrained backbone, and a silent random
    initialisation costs days of training for a model far below them."""
    if cfg.data.name in REAL_DATASETS and cfg.model.pretrained is None:
        raise ConfigError(
            f"{cfg.source}: model.pretrained is not set for {cfg.data.name}: the paper "
            "starts from an ImageNet-pretrained backbone. Convert IBN-Net weights with "
            "anet-tf weights convert resnet50_ibn_a.pth -o weights/r50_ibn_a.weights.h5 "
            "and --set model.pretrained=weights/r50_ibn_a.weights.h5, or train from "
            "random initialisation on purpose with --set model.pretrained=none"
        )


def check_data_root(cfg: Config) -> str:
    """Return ``data.root`` if it is an existing folder, else a ConfigError naming it."""
    root = cfg.data.root
    if not os.path.isdir(root):
        raise ConfigError(
            f"{cfg.source}: data.root: dataset folder {quote(root)} does not exist "
            f"(data.name={cfg.data.name!r}); set it with --set data.root=PATH"
        )
    return root


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
