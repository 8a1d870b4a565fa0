"""ONNX export (dynamic batch, parity with ONNX Runtime), the TensorRT path (refused
with a clear message where there is no GPU; engine parity where there is), and
``anet-tf export`` from a run directory."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from anet_tf.cli import main  # noqa: E402
from anet_tf.export.tensorrt import unavailable_reason  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory, export_image_size, tiny_export_run):
    """``anet-tf export --run RUN --formats saved_model,onnx,tensorrt
    --model-version 3`` on a run directory holding a tiny untrained network."""
    from anet_tf.training.fit import save_run_config

    tmp = str(tmp_path_factory.mktemp("onnx"))
    net, cfg, dataset = tiny_export_run(tmp)
    run = os.path.join(tmp, "run")
    save_run_config(cfg, run)
    os.makedirs(os.path.join(run, "checkpoints", "best"))
    net.save_weights(os.path.join(run, "checkpoints", "best", "net.weights.h5"))
    out = os.path.join(tmp, "out")
    rc = main(
        [
            "export",
            "--run",
            run,
            "--out",
            out,
            "--formats",
            "saved_model,onnx,tensorrt",
            "--model-version",
            "3",
            "--quiet",
        ]
    )
    from anet_tf.export.tflite import load_pixels

    records = dataset.query + dataset.gallery
    pixels = load_pixels([r.path for r in records], export_image_size)
    return rc, out, cfg, dataset, pixels, run


def test_export_writes_saved_model_and_onnx(exported, export_image_size):
    rc, out, *_ = exported
    assert os.path.isfile(os.path.join(out, "anet", "3", "saved_model.pb"))
    assert os.path.isfile(os.path.join(out, "onnx", "model.onnx"))
    with open(os.path.join(out, "onnx", "metadata.json")) as fh:
        assert json.load(fh)["input_size"] == list(export_image_size)
    assert rc == (1 if unavailable_reason() else 0)


def test_onnx_matches_the_saved_model_with_a_dynamic_batch(exported, export_image_size):
    import onnx

    from anet_tf.export.onnx import OnnxRuntimeModel

    _, out, _, _, pixels, _ = exported
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


def test_tensorrt_is_refused_with_a_reason_where_it_cannot_run(exported):
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here")
    rc, out = exported[0], exported[1]
    assert rc == 1
    # ... after the other formats were written.
    assert os.path.isfile(os.path.join(out, "onnx", "model.onnx"))
    assert not os.path.exists(os.path.join(out, "tensorrt"))
    assert "NVIDIA GPU" in reason and "tensorrt" in reason
    assert "TF-TRT" in reason, "say why TensorFlow's own TensorRT path is not used"


def test_tensorrt_engines_match_onnx(exported, tmp_path, export_image_size):
    if unavailable_reason() is not None:
        pytest.skip(f"TensorRT cannot run here: {unavailable_reason()[:80]}")
    pytest.importorskip("torch")
    from anet_tf.export.onnx import OnnxRuntimeModel
    from anet_tf.export.tensorrt import TensorRTModel
    from anet_tf.export.tensorrt import export_tensorrt

    _, out, _, _, pixels, _ = exported
    onnx_path = os.path.join(out, "onnx", "model.onnx")
    engines = export_tensorrt(onnx_path, str(tmp_path), export_image_size)
    reference = OnnxRuntimeModel(onnx_path)(pixels)["embedding"]
    for precision, bound in (("fp32", 0.9999), ("fp16", 0.999)):
        got = TensorRTModel(engines[precision])(pixels)["embedding"]
        cos = np.sum(got * reference, -1) / np.linalg.norm(got, axis=-1)
        assert cos.min() >= bound, (precision, cos.min())


def test_fp16_onnx_for_tensorrt_11_keeps_float32_io_and_matches(exported, tmp_path):
    """TensorRT 11 builds its fp16 engine from this model (no BuilderFlag.FP16)."""
    pytest.importorskip("onnxconverter_common")
    from anet_tf.export.onnx import OnnxRuntimeModel
    from anet_tf.export.tensorrt import fp16_onnx

    _, out, _, _, pixels, _ = exported
    onnx_path = os.path.join(out, "onnx", "model.onnx")
    half = fp16_onnx(onnx_path, str(tmp_path / "model_fp16.onnx"))
    reference = OnnxRuntimeModel(onnx_path)(pixels)["embedding"]
    got = OnnxRuntimeModel(half)(pixels)["embedding"]
    assert got.dtype == np.float32
    cos = np.sum(got * reference, -1) / np.linalg.norm(got, axis=-1)
    assert cos.min() >= 0.999


def test_a_checkpoint_folder_or_file_finds_its_run(exported):
    from anet_tf.training.run_checkpoints import resolve_weights

    run = exported[5]
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
