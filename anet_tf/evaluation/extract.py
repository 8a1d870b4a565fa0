"""Features of a trained network over a dataset's test split, and their evaluation.

``evaluate_net(net, dataset, cfg)`` runs the evaluation pipeline (no augmentation,
record order), takes the configured test-time feature (f, fa or j; Table 1), with
optional flip test-time augmentation, and scores it with the dataset's protocol.
For VAN and ANet the same forward pass also gives each attribute branch's
prediction (argmax of ``a_<name>_logits``), scored on the test images (query and
gallery) with a known label under the key ``"attributes"``
(:func:`anet_tf.evaluation.attributes.attribute_accuracy`); the baseline has no
attribute branch and no such key.

A *predictor* is ``fn(images) -> (features [B, D], {attribute: class index [B]})``
on a batch of normalised images; an *embedder* ``fn(images) -> features [B, D]`` is
a predictor without attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import keras
import numpy as np

from anet_tf.config import Config
from anet_tf.evaluation.attributes import format_attribute_table
from anet_tf.evaluation.attributes import per_attribute_accuracy
from anet_tf.evaluation.protocols import evaluate_protocol
from anet_tf.evaluation.protocols import finalize_features
from anet_tf.evaluation.protocols import format_table
from anet_tf.evaluation.protocols import protocol_kwargs
from anet_tf.evaluation.tracks import format_track_table
from anet_tf.evaluation.tracks import has_tracks
from anet_tf.evaluation.tracks import track_protocol_kwargs
from anet_tf.evaluation.tracks import track_protocols
from anet_tf.evaluation.verification import format_verification
from anet_tf.model.anet import compiled_inference
from anet_tf.progress import Progress


def keras_embed_fn(net, feature: str, attribute_names: list[str]) -> Callable:
    """A compiled ``fn(images) -> features`` of a functional ANet network."""
    from anet_tf.model.anet import select_test_feature

    def read(outputs):
        return keras.ops.cast(select_test_feature(outputs, feature, attribute_names), "float32")

    return compiled_inference(net, read)


def keras_predict_fn(net, feature: str, attribute_names: list[str]) -> Callable:
    """A compiled predictor of a functional ANet network: the test feature and the
    argmax of each ``a_<name>_logits``, from one forward pass."""
    from anet_tf.model.anet import select_test_feature

    def read(outputs):
        feats = keras.ops.cast(select_test_feature(outputs, feature, attribute_names), "float32")
        classes = {
            name: keras.ops.cast(keras.ops.argmax(outputs[f"a_{name}_logits"], axis=-1), "int32")
            for name in attribute_names
        }
        return feats, classes

    return compiled_inference(net, read)


def extract_outputs(
    predict_fn: Callable, records, cfg: Config, num_classes, flip: bool = False,
    progress=None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features ``[len(records), dim]`` float32 (not normalised) and predicted
    attribute classes (int64 [len(records)] per attribute) of ``records`` in order,
    each image decoded once; ``progress`` (a :class:`~anet_tf.progress.Progress`)
    is told of each batch's images."""
    from anet_tf.data.pipeline import build_eval_dataset

    if not records:
        return np.zeros((0, 0), np.float32), {}
    ds = build_eval_dataset(records, cfg.data, num_classes, flip=flip)
    chunks, predicted = [], {}
    for images, _ in ds:
        feats, classes = predict_fn(images)
        chunks.append(np.asarray(feats, np.float32))
        if progress is not None:
            progress.update(len(chunks[-1]))
        for name, value in classes.items():
            predicted.setdefault(name, []).append(np.asarray(value, np.int64))
    feats = np.concatenate(chunks, axis=0)
    if feats.shape[0] != len(records):
        raise RuntimeError(
            f"extracted {feats.shape[0]} features for {len(records)} images"
        )
    return feats, {name: np.concatenate(v) for name, v in predicted.items()}


def extract_features(embed_fn: Callable, records, cfg: Config, num_classes, flip: bool = False) -> np.ndarray:
    """Features of ``records`` in order, ``[len(records), dim]`` float32 (not normalised)."""
    return extract_outputs(_as_predictor(embed_fn), records, cfg, num_classes, flip)[0]


def split_outputs(
    predict_fn: Callable, records, cfg: Config, num_classes, progress=None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """L2-normalised test features, flip-averaged when ``eval.flip`` is set, and the
    attribute classes predicted on the unflipped images (what is served);
    ``progress``: as :func:`extract_outputs`."""
    feats, classes = extract_outputs(predict_fn, records, cfg, num_classes, progress=progress)
    flipped = None
    if cfg.eval.flip:
        flipped = extract_outputs(
            predict_fn, records, cfg, num_classes, flip=True, progress=progress
        )[0]
    return (finalize_features(feats, flipped) if len(feats) else feats), classes


def split_features(embed_fn: Callable, records, cfg: Config, num_classes) -> np.ndarray:
    """L2-normalised test features, flip-averaged when ``eval.flip`` is set."""
    return split_outputs(_as_predictor(embed_fn), records, cfg, num_classes)[0]


def _as_predictor(embed_fn: Callable) -> Callable:
    return lambda images: (embed_fn(images), {})


def dataset_attribute_classes(dataset, names: Sequence[str]) -> dict[str, list[str]]:
    """``{name: class names}`` of the dataset's attributes ``names``.

    Raises:
        KeyError: an attribute the dataset does not label, listing those it does.
    """
    offered = list(dataset.attribute_names)
    missing = [n for n in names if n not in offered]
    if missing:
        raise KeyError(
            f"attributes {missing} are not labelled in the dataset {dataset.name!r} "
            f"at {dataset.root} (it has {offered})"
        )
    return {n: list(dataset.attribute_classes[offered.index(n)]) for n in names}


def true_attributes(records, dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Known class index per record (-1 unknown), int64 [len(records)] per attribute
    of ``names`` (in the dataset's attribute order)."""
    offered = list(dataset.attribute_names)
    return {
        n: np.asarray([r.attributes[offered.index(n)] for r in records], np.int64)
        for n in names
    }


def test_outputs(predict_fn: Callable, dataset, cfg: Config, progress: bool = True):
    """(query features, their attribute classes, gallery features, theirs) of the
    dataset's test split, as :func:`split_outputs` gives them; ``progress``: the
    images through the network on stdout."""
    images = (len(dataset.query) + len(dataset.gallery)) * (2 if cfg.eval.flip else 1)
    bar = Progress(images, "features", enabled=progress)
    q, q_classes = split_outputs(predict_fn, dataset.query, cfg, dataset.num_classes, bar)
    g, g_classes = split_outputs(predict_fn, dataset.gallery, cfg, dataset.num_classes, bar)
    bar.close()
    if len(q) == 0:
        q = np.zeros((0, g.shape[1]), np.float32)
    return q, q_classes, g, g_classes


def evaluate_predictor(
    predict_fn: Callable,
    dataset,
    cfg: Config,
    attributes: Mapping[str, Sequence[str]] | None = None,
    progress: bool = True,
) -> dict:
    """Re-id metrics of a predictor on the dataset's protocol, its same-vehicle
    decision figures (``"verification"``,
    :mod:`anet_tf.evaluation.verification`) and, for ``attributes``, attribute
    accuracy on the query and gallery images together.
    ``progress``: the images through the network and the ranking's queries on
    stdout (:class:`~anet_tf.progress.Progress`: a bar on a terminal, a line per
    10 % otherwise; none inside :func:`anet_tf.progress.silenced`).

    Args:
        predict_fn: ``fn(images) -> (features, {attribute: class index})``.
        dataset: the :class:`~anet_tf.data.records.ReidDataset`.
        cfg: reads ``data`` (pipeline) and ``eval`` (protocol, flip).
        attributes: ``{name: class names}`` of the attributes to score, the class
            index ``predict_fn`` returns indexing these names; they must be the
            dataset's classes of that attribute. None or empty: no
            ``"attributes"`` key in the result.

    Raises:
        ValueError: an attribute's classes differ from the dataset's.
    """
    attributes = dict(attributes or {})
    expected = dataset_attribute_classes(dataset, list(attributes))
    for name, classes in attributes.items():
        if list(classes) != expected[name]:
            raise ValueError(
                f"attribute {name!r}: the model's classes {list(classes)} differ "
                f"from the dataset's {expected[name]} ({dataset.root})"
            )
    q, q_classes, g, g_classes = test_outputs(predict_fn, dataset, cfg, progress)
    results = evaluate_protocol(
        dataset.name,
        q,
        g,
        dataset.query,
        dataset.gallery,
        **protocol_kwargs(cfg.eval),
        progress=progress,
        verification=True,
    )
    results = to_jsonable(results)
    if (
        cfg.eval.tracks
        and dataset.name != "vehicleid"
        and has_tracks(dataset.query + dataset.gallery)
    ):
        results["tracks"] = to_jsonable(
            track_protocols(
                cfg.eval.tracks,
                q,
                g,
                dataset.query,
                dataset.gallery,
                **track_protocol_kwargs(cfg.eval),
            )
        )
    if attributes:
        records = dataset.query + dataset.gallery
        empty = np.zeros(0, np.int64)
        predicted = {}
        for name in attributes:
            parts = [c.get(name, empty) for c in (q_classes, g_classes)]
            predicted[name] = np.concatenate(parts)
            if len(predicted[name]) != len(records):
                raise RuntimeError(
                    f"attribute {name!r} was predicted for {len(predicted[name])} of "
                    f"{len(records)} test images"
                )
        true = true_attributes(records, dataset, list(attributes))
        results["attributes"] = per_attribute_accuracy(predicted, true, attributes)
    return results


def evaluate_embedder(embed_fn: Callable, dataset, cfg: Config) -> dict:
    """Evaluate any ``fn(images) -> features`` on the dataset's protocol."""
    return evaluate_predictor(_as_predictor(embed_fn), dataset, cfg)


def evaluate_net(
    net, dataset, cfg: Config, attributes: Mapping[str, Sequence[str]] | None = None
) -> dict:
    """Metrics of a functional ANet network on the dataset's test protocol, with the
    accuracy of its attribute branches (van, anet) under ``"attributes"``.

    Args:
        attributes: ``{name: class names}`` of the branches to score (the
            network's classes, which the dataset must label alike); default every
            attribute of ``data.attributes`` with the dataset's classes (the
            dataset the network was trained on).
    """
    names = list(cfg.data.attributes) if cfg.model.variant != "baseline" else []
    if attributes is None:
        attributes = dataset_attribute_classes(dataset, names)
    return evaluate_predictor(
        keras_predict_fn(net, cfg.eval.feature, names),
        dataset,
        cfg,
        attributes,
    )


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


def format_results(
    metrics: dict, dataset: str, chance: dict | None = None, feature: str | None = None
) -> str:
    """The paper-style table, with the chance level underneath when given, then the
    verification lines when ``metrics`` has ``"verification"``, then the
    attribute accuracy table when it has ``"attributes"``."""
    shown = dict(metrics)
    if isinstance(shown.get("cmc"), list):
        shown["cmc"] = np.asarray(shown["cmc"])
    text = format_table(shown, dataset, feature)
    if chance:
        parts = ", ".join(f"{k} {100 * v:.2f}" for k, v in chance.items())
        text += f"\nchance level (random features, same protocol): {parts}"
    if metrics.get("verification"):
        text += "\n\n" + format_verification(metrics["verification"])
    if metrics.get("tracks"):
        text += (
            "\n\ntrack protocols (docs/evaluation.md#tracks), same metrics:\n"
            + format_track_table(metrics["tracks"])
        )
    if metrics.get("attributes"):
        text += (
            "\n\nattribute accuracy (%) on the test images with a known label; "
            "chance = always answering the majority class:\n"
            + format_attribute_table(metrics["attributes"])
        )
    return text
