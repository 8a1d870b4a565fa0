"""Typed configuration: nested dataclasses loaded from YAML.

A config file is YAML read with ``yaml.safe_load``. It may extend another file with
``_base_: other.yaml`` (a path relative to the extending file; a list of bases is
merged left to right), and command-line overrides (``--set train.stage1.epochs=3``)
are applied last. Every key is checked against the dataclasses of the schema: an
unknown key, a value of the wrong type or an impossible value raises
:class:`ConfigError` naming the dotted key and the file (or ``--set``) it came from.

=============  ==================================================================
module         holds
=============  ==================================================================
``schema``     the dataclasses, one per section (``Args:`` documents each key)
``loader``     :func:`load_config`, ``_base_``, ``--set``, type coercion
``validate``   :func:`validate`: one check per section
``errors``     :class:`ConfigError` and where a key came from
=============  ==================================================================

The choice lists (variants, test features, backbones, export formats) belong to the
modules that implement them (:mod:`anet_tf.model.names`,
:mod:`anet_tf.export.formats`); the schema imports them. The package imports nothing
else of anet_tf but :mod:`anet_tf.io`.
"""

from anet_tf.config.errors import ConfigError
from anet_tf.config.loader import CONFIG_DIR
from anet_tf.config.loader import DEFAULT_CONFIG
from anet_tf.config.loader import apply_overrides
from anet_tf.config.loader import config_from_dict
from anet_tf.config.loader import load_config
from anet_tf.config.loader import resolve_config_path
from anet_tf.config.schema import DATASET_NAMES
from anet_tf.config.schema import TRACK_PROTOCOLS
from anet_tf.config.schema import AugmentConfig
from anet_tf.config.schema import Config
from anet_tf.config.schema import DataConfig
from anet_tf.config.schema import DistillConfig
from anet_tf.config.schema import EvalConfig
from anet_tf.config.schema import ExportConfig
from anet_tf.config.schema import HeadConfig
from anet_tf.config.schema import JointModuleConfig
from anet_tf.config.schema import LossConfig
from anet_tf.config.schema import ModelConfig
from anet_tf.config.schema import StageConfig
from anet_tf.config.schema import SynthConfig
from anet_tf.config.schema import TrainConfig
from anet_tf.config.schema import scheduled_epochs
from anet_tf.config.validate import MAX_IMAGE_SIDE
from anet_tf.config.validate import validate

__all__ = [
    "CONFIG_DIR",
    "DATASET_NAMES",
    "DEFAULT_CONFIG",
    "MAX_IMAGE_SIDE",
    "TRACK_PROTOCOLS",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "ExportConfig",
    "HeadConfig",
    "JointModuleConfig",
    "LossConfig",
    "ModelConfig",
    "StageConfig",
    "SynthConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "resolve_config_path",
    "scheduled_epochs",
    "validate",
]
