"""Features of a trained network over a dataset's test split, and their evaluation.

``evaluate_net(net, dataset, cfg)`` runs the evaluation pipeline (no augmentation,
record order), takes the configured test-time feature (f, fa or j; Table 1), with
optional flip test-time augmentation, and scores it with the dataset's protocol.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from anet_tf.config import Config
from anet_tf.evaluation.protocols import evaluate_protocol
from anet_tf.evaluation.protocols import finalize_features
from anet_tf.evaluation.protocols import format_table
from anet_tf.evaluation.protocols import protocol_kwargs


def keras_embed_fn(net, feature: str, attribute_names: list[str]) -> Callable:
    """A compiled ``fn(images) -> features`` of a functional ANet network."""
    from anet_tf.model.anet import test_feature

    @tf.function(reduce_retracing=True)
    def embed(images):
        outputs = net(images, training=False)
        return tf.cast(test_feature(outputs, feature, attribute_names), tf.float32)

    return embed


def extract_features(embed_fn: Callable, records, cfg: Config, num_classes, flip: bool = False) -> np.ndarray:
    """Features of ``records`` in order, ``[len(records), dim]`` float32 (not normalised)."""
    from anet_tf.data.pipeline import build_eval_dataset

    if not records:
        return np.zeros((0, 0), np.float32)
    ds = build_eval_dataset(records, cfg.data, num_classes, flip=flip)
    chunks = [embed_fn(images).numpy() for images, _ in ds]
    feats = np.concatenate(chunks, axis=0)
    if feats.shape[0] != len(records):
        raise RuntimeError(f"extracted {feats.shape[0]} features for {len(records)} images")
    return feats


def split_features(embed_fn: Callable, records, cfg: Config, num_classes) -> np.ndarray:
    """L2-normalised test features, flip-averaged when ``eval.flip`` is set."""
    feats = extract_features(embed_fn, records, cfg, num_classes)
    flipped = extract_features(embed_fn, records, cfg, num_classes, flip=True) if cfg.eval.flip else None
    return finalize_features(feats, flipped) if len(feats) else feats


def evaluate_embedder(embed_fn: Callable, dataset, cfg: Config) -> dict:
    """Evaluate any ``fn(images) -> features`` on the dataset's protocol."""
    q = split_features(embed_fn, dataset.query, cfg, dataset.num_classes)
    g = split_features(embed_fn, dataset.gallery, cfg, dataset.num_classes)
    if len(q) == 0:
        q = np.zeros((0, g.shape[1]), np.float32)
    results = evaluate_protocol(
        dataset.name,
        q,
        g,
        dataset.query,
        dataset.gallery,
        **protocol_kwargs(cfg.eval),
    )
    return to_jsonable(results)


def evaluate_net(net, dataset, cfg: Config) -> dict:
    """Metrics of a functional ANet network on the dataset's test protocol."""
    names = list(cfg.data.attributes) if cfg.model.variant != "baseline" else []
    return evaluate_embedder(keras_embed_fn(net, cfg.eval.feature, names), dataset, cfg)


def chance_metrics(dataset, cfg: Config, seeds=(0, 1, 2)) -> dict:
    """The same protocol scored with random features (mean over a few seeds): the
    level a model that learned nothing reaches, printed beside real results."""
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        q = rng.standard_normal((len(dataset.query), 64)).astype(np.float32)
        g = rng.standard_normal((len(dataset.gallery), 64)).astype(np.float32)
        runs.append(
            evaluate_protocol(dataset.name, q, g, dataset.query, dataset.gallery, **protocol_kwargs(cfg.eval))
        )
    keys = [k for k in ("mAP", "R1", "R5", "R10", "mINP") if k in runs[0]]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


def to_jsonable(results: dict) -> dict:
    out = {}
    for key, value in results.items():
        if isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, (np.floating, np.integer)):
            out[key] = value.item()
        elif isinstance(value, dict):
            out[key] = to_jsonable(value)
        elif isinstance(value, list):
            out[key] = [to_jsonable(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def format_results(metrics: dict, dataset: str, chance: dict | None = None) -> str:
    """The paper-style table, with the chance level underneath when given."""
    shown = dict(metrics)
    if isinstance(shown.get("cmc"), list):
        shown["cmc"] = np.asarray(shown["cmc"])
    text = format_table(shown, dataset)
    if chance:
        parts = ", ".join(f"{k} {100 * v:.2f}" for k, v in chance.items())
        text += f"\nchance level (random features, same protocol): {parts}"
    return text
