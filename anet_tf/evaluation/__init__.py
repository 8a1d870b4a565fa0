"""Evaluation: re-id metrics (CMC, mAP, mINP), each dataset's protocol, test-time
features and k-reciprocal re-ranking. NumPy only; no TensorFlow import."""

from anet_tf.evaluation.metrics import (
    METRICS,
    evaluate_features,
    evaluate_rank,
    l2_normalize,
    pairwise_distance,
)
from anet_tf.evaluation.protocols import (
    PROTOCOLS,
    assemble_feature,
    combine_flip,
    evaluate_protocol,
    finalize_features,
    format_table,
    labels,
    protocol_kwargs,
    vehicleid_protocol,
    vehicleid_split,
    veri_protocol,
)
from anet_tf.evaluation.rerank import k_reciprocal_rerank

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "assemble_feature",
    "combine_flip",
    "evaluate_features",
    "evaluate_protocol",
    "evaluate_rank",
    "finalize_features",
    "format_table",
    "k_reciprocal_rerank",
    "l2_normalize",
    "labels",
    "pairwise_distance",
    "protocol_kwargs",
    "vehicleid_protocol",
    "vehicleid_split",
    "veri_protocol",
]
