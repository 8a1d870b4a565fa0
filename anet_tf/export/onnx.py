"""ONNX export (tf2onnx) and an ONNX Runtime runner.

The ONNX model is the same pixel function the TFLite models carry
(:meth:`AnetServing.pixel_outputs <anet_tf.export.saved_model.AnetServing.pixel_outputs>`):
``images`` float32 [N, H, W, 3] RGB pixels in [0, 255], N a dynamic axis ->
``embedding`` [N, D] (L2-normalised) and ``<attribute>_probs`` [N, m_i].

tf2onnx is used rather than Keras 3's ``export(format="onnx")``: it converts the
whole serving function (normalisation, test feature, L2 norm, softmax), not only
the network, and its output matches TensorFlow to ~1e-7. The IBN InstanceNorm
arrives as ReduceMean/Sub/Mul/Sqrt nodes (our layer is written with ``moments``),
so no ONNX ``InstanceNormalization`` node, and no TensorRT plugin for it, is needed.
"""

from __future__ import annotations

import os

import numpy as np

from anet_tf.io import atomic_write_bytes
from anet_tf.io import atomic_write_text

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT_NAME = "images"


def _require(name: str, extra: str = "onnx"):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f"the ONNX export needs {name}: pip install 'anet-tf[{extra}]' "
            f"(tf2onnx, onnxruntime)"
        ) from None


def export_onnx(module, out_dir: str, metadata: dict | None = None) -> str:
    """Convert the module's pixel function to ``out_dir/model.onnx``; returns the path.

    Args:
        module: an :class:`~anet_tf.export.saved_model.AnetServing`.
        metadata: also written as ``metadata.json`` and into the model's
            ``metadata_props`` (key ``anet_tf``).
    """
    import json

    import tensorflow as tf

    tf2onnx = _require("tf2onnx")
    h, w = module.image_size
    spec = (tf.TensorSpec([None, h, w, 3], tf.float32, name=INPUT_NAME),)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, ONNX_FILE)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(module.pixel_outputs), input_signature=spec, opset=OPSET
    )
    if metadata is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "anet_tf", json.dumps(metadata)
        atomic_write_text(os.path.join(out_dir, "metadata.json"), json.dumps(metadata, indent=2))
    atomic_write_bytes(path, proto.SerializeToString())
    return path


class OnnxRuntimeModel:
    """An ONNX model run by ONNX Runtime; ``model(pixels)`` -> output dict. Needs
    neither TensorFlow nor tf2onnx.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers (default: CPU).
        num_threads: intra-op threads (None: ONNX Runtime's default).
    """

    def __init__(self, path: str, providers=None, num_threads: int | None = None):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.path = path
        self.session = ort.InferenceSession(
            path, options, providers=providers or ["CPUExecutionProvider"]
        )
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, pixels) -> dict[str, np.ndarray]:
        pixels = np.ascontiguousarray(pixels, np.float32)
        values = self.session.run(None, {INPUT_NAME: pixels})
        return dict(zip(self.output_names, values, strict=True))

    def embed(self, pixels) -> np.ndarray:
        return self(pixels)["embedding"]
