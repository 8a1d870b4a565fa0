"""Evaluation: re-id metrics (CMC, mAP, mINP), each dataset's protocol, test-time
features, k-reciprocal re-ranking and attribute accuracy. NumPy only; no TensorFlow
import (the activation maps of :mod:`anet_tf.evaluation.activation`, a forward pass,
import it when called)."""

from anet_tf.evaluation.attributes import attribute_accuracy
from anet_tf.evaluation.attributes import format_attribute_table
from anet_tf.evaluation.attributes import per_attribute_accuracy
from anet_tf.evaluation.metrics import METRICS
from anet_tf.evaluation.metrics import evaluate_features
from anet_tf.evaluation.metrics import evaluate_rank
from anet_tf.evaluation.metrics import l2_normalize
from anet_tf.evaluation.metrics import pairwise_distance
from anet_tf.evaluation.protocols import PROTOCOLS
from anet_tf.evaluation.protocols import assemble_feature
from anet_tf.evaluation.protocols import combine_flip
from anet_tf.evaluation.protocols import evaluate_protocol
from anet_tf.evaluation.protocols import finalize_features
from anet_tf.evaluation.protocols import format_table
from anet_tf.evaluation.protocols import labels
from anet_tf.evaluation.protocols import protocol_kwargs
from anet_tf.evaluation.protocols import vehicleid_protocol
from anet_tf.evaluation.protocols import vehicleid_split
from anet_tf.evaluation.protocols import veri_protocol
from anet_tf.evaluation.rerank import k_reciprocal_rerank

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "assemble_feature",
    "attribute_accuracy",
    "combine_flip",
    "evaluate_features",
    "evaluate_protocol",
    "evaluate_rank",
    "finalize_features",
    "format_attribute_table",
    "format_table",
    "k_reciprocal_rerank",
    "l2_normalize",
    "labels",
    "pairwise_distance",
    "per_attribute_accuracy",
    "protocol_kwargs",
    "vehicleid_protocol",
    "vehicleid_split",
    "veri_protocol",
]
