"""The config schema: nested dataclasses, one per section, holding plain values.

Each dataclass's ``Args:`` gives the meaning of its keys; ``tools/config_reference.py``
writes docs/configuration.md from them (with the notes in docs/config_notes/).
``build_*`` functions elsewhere turn a section into the keyword arguments of model
and data classes, which never see a config object.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

import yaml

from anet_tf.config.errors import DEFAULTS
from anet_tf.config.errors import blame
from anet_tf.data.image_rules import MAX_IMAGE_PIXELS
from anet_tf.export.formats import QUANTIZE
from anet_tf.model.names import ATTRIBUTE_BRANCHES
from anet_tf.model.names import BACKBONE_NAMES
from anet_tf.model.names import TEST_FEATURES
from anet_tf.model.names import VARIANTS

DATASET_NAMES = ("synthetic", "folder", "veri776", "veriwild", "vehicleid")
# The track protocols of eval.tracks (anet_tf.evaluation.tracks).
TRACK_PROTOCOLS = ("image_to_track", "track_to_track", "track_average")

# ``Literal[VARIANTS]`` is ``Literal["baseline", "van", "anet"]``: the choice lists
# are owned by the modules that implement them (anet_tf.model.names,
# anet_tf.export.formats) and the loader checks a value against them.


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
        track_length: crops per track; above 1 each image becomes a track of
            that many consecutive crops by one camera, a second apart
            (``track_id`` and ``time`` columns), at the times a road gives
            (cameras 0.5-1.5 km apart; each vehicle enters within 10 minutes and
            passes its cameras in order at 30-70 km/h, its r-th track of a camera
            on its r-th pass, an hour apart); 1: no tracks.
    """

    ids: int = 120
    test_ids: int = 40
    cameras: int = 6
    images_per_id: int = 12
    image_size: int = 128
    unlabelled_fraction: float = 0.1
    seed: int = 0
    balanced_train: bool = True
    track_length: int = 1


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
        attributes: the attributes that form the n attribute branches, in order;
            each is a manifest column (folder data). The baseline has no branches:
            for it the default is [] (no attribute labels read or needed) unless
            set with ``--set`` or in a config of yours.
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

    name: Literal[DATASET_NAMES] = "synthetic"
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
    max_image_pixels: int = MAX_IMAGE_PIXELS
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
        width: inner width of the two 3x3 convolutions of G_reid: null keeps the
            paper's c (the backbone channels), an integer is a number of channels,
            a fraction below 1 (0.25) is that part of c, rounded (at least 1).
    """

    width: int | float | None = None


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

    variant: Literal[VARIANTS] = "anet"
    backbone: Literal[BACKBONE_NAMES] = "resnet50_ibn_a"
    base_width: int = 64
    last_stride: int = 1
    pretrained: str | None = None
    attribute_branch: Literal[ATTRIBUTE_BRANCHES] = "se"
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


@dataclass
class DistillConfig:
    """Distillation of a teacher run into this run's network (``anet-tf distill
    --teacher RUN``; ``fit`` ignores the section). The student minimises its own
    loss (``loss``) plus these terms (``anet_tf.losses.compute_distill_losses``).

    Args:
        lambda_feature: weight of the feature hint, 1 - cosine between the
            student's and the teacher's test features (FitNets, Romero et al. 2015);
            10 with lambda_attribute 0.25 recovered about 2 mAP points more than
            1 and 1 on the synthetic default (docs/reproduction.md).
        lambda_relation: weight of the distance-wise relational loss RKD-D on
            the test features within the batch (Park et al., CVPR 2019).
        lambda_attribute: weight of the teacher's attribute probabilities as
            soft labels, T^2 KL per attribute (Hinton et al. 2015).
        temperature: T of those soft labels.
    """

    lambda_feature: float = 10.0
    lambda_relation: float = 1.0
    lambda_attribute: float = 0.25
    temperature: float = 4.0


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


# How the lr schedule, warm-up, backbone freezing and weight decay work:
# docs/config_notes/train.md, which the configuration reference includes.
@dataclass
class TrainConfig:
    """Two-stage training (section 3.2, 4.2).

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

# The test feature of each variant when the user chose none: ANet's j (eq. 8); f
# for VAN (Table 1's VAN (f) row, Table 2) and for the baseline, which has only f.
DEFAULT_FEATURE = {"baseline": "f", "van": "f", "anet": "j"}


@dataclass
class EvalConfig:
    """Evaluation (section 4.1 protocols; metrics as FastReID).

    Args:
        feature: test-time feature: f | fa (f concatenated with the a_i) | j.
            Unless set with ``--set`` or in a config of yours it follows
            ``model.variant``: j for anet, f for van and the baseline.
        metric: cosine | euclidean, on L2-normalised features.
        flip: average the features of the image and its mirror.
        rerank: k-reciprocal re-ranking (galleries that fit in memory).
        max_rank: length of the CMC curve.
        chunk_size: queries per chunk in the scalable evaluator.
        vehicleid_trials: random gallery draws of the VehicleID protocol.
        trapezoid_ap: also report the MATLAB-style trapezoid mAP.
        seed: seed of the VehicleID protocol's random gallery draws.
        tracks: the track protocols reported beside image-to-image when the
            test data has track ids: image_to_track | track_to_track |
            track_average; [] for none.
    """

    feature: Literal[TEST_FEATURES] = "j"  # DEFAULT_FEATURE[variant] unless set
    metric: Literal["cosine", "euclidean"] = "cosine"
    flip: bool = False
    rerank: bool = False
    max_rank: int = 50
    chunk_size: int = 256
    vehicleid_trials: int = 10
    trapezoid_ap: bool = False
    seed: int = 0
    tracks: list[str] = field(default_factory=lambda: list(TRACK_PROTOCOLS))


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
    quantize: Literal[QUANTIZE] | None = None


@dataclass
class Config:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # Where the config came from (file path), for error messages; not a YAML key.
    source: str = field(default=DEFAULTS, metadata={"internal": True})
    # Dotted key -> the file or "--set" that gave it (the loader's); not a YAML key.
    origins: dict[str, str] = field(
        default_factory=dict, metadata={"internal": True}, repr=False, compare=False
    )
    # Values a default had before it followed model.variant (the baseline's
    # data.attributes: []), so that a later change of variant gets them back.
    followed: dict[str, Any] = field(
        default_factory=dict, metadata={"internal": True}, repr=False, compare=False
    )

    def origin(self, key: str) -> str:
        """Where a message about ``key`` says its value came from: ``--set`` or the
        user's file, never a shipped config the user did not name."""
        return blame(key, self.origins, self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe) of every setting, without the internal
        fields (``source``, ``origins``, ``followed``)."""
        out = _to_plain(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                out.pop(f.name, None)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)



def scheduled_epochs(cfg: Config) -> int:
    """Epochs the lr schedule spans: stage 1, plus ANet's stage 2 unless
    ``train.stage2.lr`` gives that stage its own constant lr."""
    t = cfg.train
    follows = cfg.model.variant == "anet" and t.stage2.lr is None
    return t.stage1.epochs + (t.stage2.epochs if follows else 0)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
