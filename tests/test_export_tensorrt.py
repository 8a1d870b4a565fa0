"""The TensorRT path of ``anet-tf export``: refused with a clear message where there
is no GPU, engine parity with ONNX Runtime where there is, and the fp16 ONNX copy
TensorRT 11 builds its fp16 engine from. The export is ``onnx_export`` of
conftest.py, shared with test_export_onnx.py."""

import os

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from anet_tf.export.tensorrt import unavailable_reason  # noqa: E402


def test_tensorrt_is_refused_with_a_reason_where_it_cannot_run(onnx_export):
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here")
    rc, out = onnx_export[0], onnx_export[1]
    assert rc == 1
    # ... after the other formats were written.
    assert os.path.isfile(os.path.join(out, "onnx", "model.onnx"))
    assert not os.path.exists(os.path.join(out, "tensorrt"))
    assert "NVIDIA GPU" in reason and "tensorrt" in reason
    assert "TF-TRT" in reason, "say why TensorFlow's own TensorRT path is not used"


def test_tensorrt_engines_match_onnx(onnx_export, tmp_path, export_image_size):
    if unavailable_reason() is not None:
        pytest.skip(f"TensorRT cannot run here: {unavailable_reason()[:80]}")
    pytest.importorskip("torch")
    from anet_tf.export.onnx import OnnxRuntimeModel
    from anet_tf.export.tensorrt import TensorRTModel
    from anet_tf.export.tensorrt import export_tensorrt

    _, out, _, _, pixels, _ = onnx_export
    onnx_path = os.path.join(out, "onnx", "model.onnx")
    engines = export_tensorrt(onnx_path, str(tmp_path), export_image_size)
    reference = OnnxRuntimeModel(onnx_path)(pixels)["embedding"]
    for precision, bound in (("fp32", 0.9999), ("fp16", 0.999)):
        got = TensorRTModel(engines[precision])(pixels)["embedding"]
        cos = np.sum(got * reference, -1) / np.linalg.norm(got, axis=-1)
        assert cos.min() >= bound, (precision, cos.min())


def test_fp16_onnx_for_tensorrt_11_keeps_float32_io_and_matches(onnx_export, tmp_path):
    """TensorRT 11 builds its fp16 engine from this model (no BuilderFlag.FP16)."""
    pytest.importorskip("onnxconverter_common")
    from anet_tf.export.onnx import OnnxRuntimeModel
    from anet_tf.export.tensorrt import fp16_onnx

    _, out, _, _, pixels, _ = onnx_export
    onnx_path = os.path.join(out, "onnx", "model.onnx")
    half = fp16_onnx(onnx_path, str(tmp_path / "model_fp16.onnx"))
    reference = OnnxRuntimeModel(onnx_path)(pixels)["embedding"]
    got = OnnxRuntimeModel(half)(pixels)["embedding"]
    assert got.dtype == np.float32
    cos = np.sum(got * reference, -1) / np.linalg.norm(got, axis=-1)
    assert cos.min() >= 0.999
