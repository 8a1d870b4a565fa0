"""Attribute accuracy: hand-computed values, unknown labels left out, balanced
accuracy over the classes present, a NumPy reference, and where it is reported
(evaluation of a predictor, TensorBoard)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anet_tf.evaluation.attributes import attribute_accuracy
from anet_tf.evaluation.attributes import format_attribute_table
from anet_tf.evaluation.attributes import per_attribute_accuracy

CLASSES = ["red", "blue", "white"]


def reference(pred, true, m):
    """Loop-by-loop definitions, independent of the implementation."""
    pairs = [(p, t) for p, t in zip(pred, true, strict=True) if t != -1]
    confusion = [[0] * m for _ in range(m)]
    for p, t in pairs:
        confusion[t][p] += 1
    n = len(pairs)
    recalls = []
    for c in range(m):
        of_c = [p for p, t in pairs if t == c]
        if of_c:
            recalls.append(sum(p == c for p in of_c) / len(of_c))
    return {
        "top1": sum(p == t for p, t in pairs) / n,
        "balanced": sum(recalls) / len(recalls),
        "count": n,
        "majority_rate": max(sum(1 for _, t in pairs if t == c) for c in range(m)) / n,
        "confusion": confusion,
    }


def test_hand_computed_example_with_an_unknown_label():
    true = [0, 0, 0, 1, 1, 2, -1]
    pred = [0, 0, 1, 1, 0, 2, 2]  # the last prediction has no label: left out
    acc = attribute_accuracy(pred, true, CLASSES)
    assert acc["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert acc["count"] == 6
    assert acc["top1"] == pytest.approx(4 / 6)
    assert acc["balanced"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert acc["majority_rate"] == pytest.approx(3 / 6)
    assert acc["classes"] == CLASSES


def test_balanced_leaves_out_a_class_without_labelled_images():
    # no "white" image: its recall is undefined, not 0
    acc = attribute_accuracy([0, 2, 1, 1], [0, 0, 1, 1], CLASSES)
    assert acc["confusion"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert acc["top1"] == pytest.approx(3 / 4)
    assert acc["balanced"] == pytest.approx((1 / 2 + 1) / 2)
    assert acc["majority_rate"] == pytest.approx(1 / 2)


def test_no_labelled_image_gives_null_rates_and_valid_json():
    acc = attribute_accuracy([1, 2], [-1, -1], CLASSES)
    assert acc["count"] == 0
    assert acc["top1"] is None and acc["balanced"] is None
    assert acc["majority_rate"] is None
    assert acc["confusion"] == [[0] * 3] * 3
    assert json.loads(json.dumps(acc, allow_nan=False)) == acc
    empty = attribute_accuracy(np.zeros(0, int), np.zeros(0, int), CLASSES)
    assert empty["count"] == 0 and empty["top1"] is None


@pytest.mark.parametrize("seed,m", [(0, 2), (1, 5), (2, 9)])
def test_matches_the_numpy_reference(seed, m):
    rng = np.random.default_rng(seed)
    true = rng.integers(-1, m, 200)
    pred = np.where(rng.random(200) < 0.6, np.maximum(true, 0), rng.integers(0, m, 200))
    acc = attribute_accuracy(pred, true, [f"c{i}" for i in range(m)])
    ref = reference(pred.tolist(), true.tolist(), m)
    assert acc["confusion"] == ref["confusion"] and acc["count"] == ref["count"]
    for key in ("top1", "balanced", "majority_rate"):
        assert acc[key] == pytest.approx(ref[key], abs=1e-12)
    assert isinstance(acc["count"], int) and isinstance(acc["top1"], float)


def test_out_of_range_and_shape_errors_say_what():
    with pytest.raises(ValueError, match="pred holds class index 3"):
        attribute_accuracy([3], [0], CLASSES)
    with pytest.raises(ValueError, match="true holds class index 7"):
        attribute_accuracy([0], [7], CLASSES)
    with pytest.raises(ValueError, match="same length"):
        attribute_accuracy([0, 1], [0], CLASSES)


def test_per_attribute_accuracy_names_the_attribute():
    out = per_attribute_accuracy(
        {"color": [0, 1], "type": [1]},
        {"color": [0, 0], "type": [1]},
        {"color": CLASSES, "type": ["sedan", "suv"]},
    )
    assert list(out) == ["color", "type"]
    assert out["color"]["top1"] == 0.5 and out["type"]["top1"] == 1.0
    with pytest.raises(ValueError, match="attribute 'type'"):
        per_attribute_accuracy({"type": [5]}, {"type": [1]}, {"type": ["a", "b"]})
    with pytest.raises(KeyError, match="no pred labels"):
        per_attribute_accuracy({}, {"type": [1]}, {"type": ["a", "b"]})


def test_table_lists_n_top1_balanced_and_chance():
    table = format_attribute_table(
        {
            "color": attribute_accuracy(
                [0, 0, 1, 1, 0, 2], [0, 0, 0, 1, 1, 2], CLASSES
            ),
            "type": attribute_accuracy([0], [-1], ["a", "b"]),
        }
    )
    lines = table.splitlines()
    assert "top-1" in lines[0] and "balanced" in lines[0] and "chance" in lines[0]
    assert lines[2] == "| color | 6 | 66.67 | 72.22 | 50.00 |"
    assert lines[3] == "| type | 0 | - | - | - |"


# ------------------------------------------------- where the metric is reported


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from anet_tf.config import load_config
    from anet_tf.data.readers import load_dataset
    from anet_tf.data.synthetic import generate

    root = str(tmp_path_factory.mktemp("attr") / "data")
    generate(root, ids=6, test_ids=3, cameras=2, images_per_id=3, image_size=32)
    cfg = load_config(
        None,
        [f"data.root={root}", "data.image_size=[32, 32]", "data.test_batch_size=4"],
    )
    return cfg, load_dataset(cfg)


def test_evaluate_predictor_scores_query_and_gallery_together(tiny_dataset):
    """A predictor that always answers class 0 scores the share of class 0 among
    the labelled test images; without attributes the key is absent."""
    import tensorflow as tf

    from anet_tf.evaluation.extract import evaluate_embedder
    from anet_tf.evaluation.extract import evaluate_predictor

    cfg, dataset = tiny_dataset
    names = list(dataset.attribute_names)
    classes = dict(zip(names, dataset.attribute_classes, strict=True))

    def predict(images):
        n = tf.shape(images)[0]
        feats = tf.reshape(tf.reduce_mean(images, axis=[1, 2]), [n, 3])
        return feats, {a: tf.zeros([n], tf.int32) for a in names}

    metrics = evaluate_predictor(predict, dataset, cfg, classes)
    records = dataset.query + dataset.gallery
    for k, name in enumerate(names):
        true = np.asarray([r.attributes[k] for r in records])
        acc = metrics["attributes"][name]
        assert acc["count"] == int((true >= 0).sum()) > 0
        assert acc["top1"] == pytest.approx(np.mean(true[true >= 0] == 0))
        assert np.asarray(acc["confusion"])[:, 1:].sum() == 0
    assert "mAP" in metrics
    assert "attributes" not in evaluate_embedder(lambda x: predict(x)[0], dataset, cfg)
    wrong = {names[0]: list(reversed(classes[names[0]]))}
    with pytest.raises(ValueError, match="differ from the dataset's"):
        evaluate_predictor(predict, dataset, cfg, wrong)


def test_tensorboard_gets_top1_and_balanced_per_attribute(tmp_path):
    import tensorflow as tf

    from anet_tf.training.callbacks import EpochRecord
    from anet_tf.training.callbacks import StageProgress
    from anet_tf.training.callbacks import TensorBoardScalars

    progress = StageProgress(
        str(tmp_path), stage=1, stage_offset=0, stage_epochs=1, batch_size=4, columns=["total"]
    )
    cb = TensorBoardScalars(progress)
    eval_metrics = {
        "mAP": 0.5,
        "attributes": {
            "color": attribute_accuracy([0, 1], [0, 0], CLASSES),
            "type": attribute_accuracy([0], [-1], ["a", "b"]),
        },
    }
    cb.write(
        EpochRecord(
            stage=1, epoch=1, global_epoch=1, logs={"total": 1.0}, lr=0.1, elapsed=1.0,
            images_per_s=2.0, eval_metrics=eval_metrics,
        )
    )
    cb.on_train_end()
    values = {}
    for path in (tmp_path / "tensorboard").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                values[v.tag] = float(tf.make_ndarray(v.tensor))
    assert values["eval/attr/color_top1"] == pytest.approx(0.5)
    assert values["eval/attr/color_balanced"] == pytest.approx(0.5)
    assert values["eval/mAP"] == pytest.approx(0.5)
    assert not any(tag.startswith("eval/attr/type") for tag in values)  # no label
