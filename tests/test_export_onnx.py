"""ONNX export (dynamic batch, parity with ONNX Runtime) and ``anet-tf export`` from
a run directory (``onnx_export`` of conftest.py, shared with test_export_tensorrt.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from anet_tf.cli import main  # noqa: E402
from anet_tf.export.tensorrt import unavailable_reason  # noqa: E402


def test_export_writes_saved_model_and_onnx(onnx_export, export_image_size):
    rc, out, *_ = onnx_export
    assert os.path.isfile(os.path.join(out, "anet", "3", "saved_model.pb"))
    assert os.path.isfile(os.path.join(out, "onnx", "model.onnx"))
    with open(os.path.join(out, "onnx", "metadata.json")) as fh:
        assert json.load(fh)["input_size"] == list(export_image_size)
    assert rc == (1 if unavailable_reason() else 0)


def test_onnx_matches_the_saved_model_with_a_dynamic_batch(onnx_export, export_image_size):
    import onnx

    from anet_tf.export.onnx import OnnxRuntimeModel

    _, out, _, _, pixels, _ = onnx_export
    path = os.path.join(out, "onnx", "model.onnx")
    graph = onnx.load(path).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value, "batch axis must be dynamic"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [
        *export_image_size,
        3,
    ]
    # The IBN InstanceNorm arrives as plain ops: no plugin needed downstream.
    assert "InstanceNormalization" not in {n.op_type for n in graph.node}

    signature = tf.saved_model.load(os.path.join(out, "anet", "3")).signatures[
        "serve_images"
    ]
    model = OnnxRuntimeModel(path)
    for n in (1, len(pixels)):
        reference = signature(images=tf.constant(pixels[:n]))
        got = model(pixels[:n])
        assert sorted(got) == ["color_probs", "embedding", "type_probs"]
        for key, value in got.items():
            assert value.shape == tuple(reference[key].shape)
            np.testing.assert_allclose(value, reference[key].numpy(), atol=1e-4)


def test_a_checkpoint_folder_or_file_finds_its_run(onnx_export):
    from anet_tf.training.run_checkpoints import resolve_weights

    run = onnx_export[5]
    best = os.path.join(run, "checkpoints", "best")
    weights = os.path.join(best, "net.weights.h5")
    assert resolve_weights(run) == (run, weights)
    assert resolve_weights(best) == (os.path.abspath(run), weights)
    assert resolve_weights(weights) == (os.path.abspath(run), weights)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        resolve_weights(os.path.dirname(run))


def test_unknown_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--run", "x", "--out", "y", "--formats", "onnx,coreml"])
    assert info.value.code == 2
    assert "coreml" in capsys.readouterr().err
