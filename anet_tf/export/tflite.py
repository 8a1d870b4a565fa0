"""TFLite (LiteRT) models: decoded pixels in, embedding and attribute probabilities out.

JPEG decoding is not a TFLite builtin op, and a model with Flex (TensorFlow) ops
does not run in the LiteRT interpreter, so the TFLite model starts from pixels: it is
the converted :meth:`AnetServing.pixel_outputs
<anet_tf.export.saved_model.AnetServing.pixel_outputs>` (the ``serve_images``
computation) at the model's input size, and the client decodes and resizes
(:func:`load_pixels`, the evaluation pipeline's functions).

One signature, ``serving_default``: ``images`` float32 [N, H, W, 3] RGB pixels in
[0, 255] (N is dynamic) -> ``embedding`` [N, D] (L2-normalised) and
``<attribute>_probs`` [N, m_i]. Class names are in the SavedModel's
``assets/metadata.json`` and in ``<name>.json`` beside the ``.tflite`` files.

Variants (file name -> what it is):

``model.tflite``
    float32.
``model_fp16.tflite``
    weights stored as float16, computed in float32 (half the size).
``model_int8_dynamic.tflite``
    dynamic-range int8: int8 weights, activations quantized on the fly.
``model_int8.tflite``
    full integer: int8 weights and activations, calibrated on a representative
    set of training images; float32 at the input and output, so all variants are
    called the same way.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence

import numpy as np

from anet_tf.io import atomic_write_bytes
from anet_tf.io import atomic_write_text
from anet_tf.native_output import stderr_filtered

TFLITE_FILES = {
    "fp32": "model.tflite",
    "fp16": "model_fp16.tflite",
    "int8_dynamic": "model_int8_dynamic.tflite",
    "int8": "model_int8.tflite",
}
# What ``--quantize`` writes: the float32 model and the quantized variants.
QUANTIZE_VARIANTS = {
    None: ("fp32",),
    "fp16": ("fp32", "fp16"),
    "int8": ("fp32", "int8_dynamic", "int8"),
}
INPUT_NAME = "images"
REPRESENTATIVE_IMAGES = 128


# What the converter and the interpreter print to the process's stderr from C++ on
# every call, with nothing for a user to act on.
_NATIVE_NOISE = re.compile(
    r"(fully_quantize: \d|inference_type: \d|input_inference_type:|output_inference_type:"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate|Estimated count of arithmetic ops"
    r"|^\s*$|^W0000 .*(tf_tfl_flatbuffer_helpers|flatbuffer_export)|^I0000 )"
)


def native_stderr_filtered():
    """The converter's and interpreter's lines that are noise, kept from stderr."""
    return stderr_filtered(_NATIVE_NOISE)


def pixel_function(module, batch_size: int | None = None):
    """The concrete ``pixels -> numeric outputs`` function that TFLite and ONNX
    convert: float32 [batch_size, H, W, 3] at the module's input size."""
    import tensorflow as tf

    h, w = module.image_size
    spec = tf.TensorSpec([batch_size, h, w, 3], tf.float32, name=INPUT_NAME)
    return tf.function(module.pixel_outputs).get_concrete_function(spec)


def save_pixel_model(module, path: str) -> str:
    """Save a SavedModel whose ``serving_default`` is :func:`pixel_function`: the
    converters' input (``from_concrete_functions`` on a Keras 3 model keeps its
    weights as uninitialised TFLite resource variables, so outputs are NaN)."""
    import tensorflow as tf

    tf.saved_model.save(
        module, path, signatures={"serving_default": pixel_function(module)}
    )
    return path


def load_pixels(paths: Sequence[str], image_size: Sequence[int]) -> np.ndarray:
    """Image files -> float32 pixels [N, h, w, 3] in [0, 255]: the decode and resize
    of the evaluation pipeline, without the normalisation the model does itself."""
    from anet_tf.data.decode import read_image
    from anet_tf.data.preprocessing import resize

    if not len(paths):
        return np.zeros((0, *image_size, 3), np.float32)
    return np.stack([resize(read_image(p), image_size).numpy() for p in paths])


def representative_images(
    dataset,
    image_size: Sequence[int],
    count: int = REPRESENTATIVE_IMAGES,
    seed: int = 0,
) -> np.ndarray:
    """Calibration pixels for full-integer quantization: ``count`` training images
    drawn without replacement (all of them when fewer), float32 [n, h, w, 3]."""
    records = dataset.train
    if not records:
        raise ValueError(
            f"{dataset.root}: the train split is empty; full-integer quantization "
            f"needs training images to calibrate on"
        )
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(records), size=min(count, len(records)), replace=False)
    return load_pixels([records[i].path for i in sorted(pick)], image_size)


def convert(
    pixel_model: str, variant: str = "fp32", representative: np.ndarray | None = None
) -> bytes:
    """Convert a pixel SavedModel (:func:`save_pixel_model`) to a TFLite flatbuffer.

    Args:
        pixel_model: the SavedModel folder.
        variant: fp32 | fp16 | int8_dynamic | int8.
        representative: calibration pixels [n, h, w, 3] (int8 only).
    """
    import tensorflow as tf

    if variant not in TFLITE_FILES:
        raise ValueError(
            f"variant must be one of {', '.join(TFLITE_FILES)}. Received: "
            f"variant={variant!r}"
        )
    converter = tf.lite.TFLiteConverter.from_saved_model(pixel_model)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative is None or not len(representative):
            raise ValueError("full-integer int8 needs representative images")

        def representative_dataset():
            for image in representative:
                yield [np.asarray(image, np.float32)[None]]

        converter.representative_dataset = representative_dataset
    with native_stderr_filtered():
        return converter.convert()


def export_tflite(
    module,
    out_dir: str,
    variants: Sequence[str] = ("fp32",),
    representative: np.ndarray | None = None,
    metadata: dict | None = None,
) -> dict[str, str]:
    """Write the TFLite ``variants`` of the module into ``out_dir``.

    Args:
        module: an :class:`~anet_tf.export.saved_model.AnetServing`.
        variants: any of fp32, fp16, int8_dynamic, int8 (``QUANTIZE_VARIANTS``
            maps ``--quantize`` to them).
        representative: calibration pixels for full-integer int8.
        metadata: written as ``metadata.json`` beside the models (class names,
            input size, ...).

    Returns:
        variant -> path.
    """
    import json
    import shutil

    unknown = [v for v in variants if v not in TFLITE_FILES]
    if unknown:
        raise ValueError(
            f"unknown TFLite variant(s) {unknown}; valid: {', '.join(TFLITE_FILES)}"
        )
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    staging = tempfile.mkdtemp(prefix=".pixel-model-", dir=out_dir)
    try:
        pixel_model = save_pixel_model(module, os.path.join(staging, "model"))
        for variant in variants:
            path = os.path.join(out_dir, TFLITE_FILES[variant])
            data = convert(pixel_model, variant, representative)
            atomic_write_bytes(path, data)
            paths[variant] = path
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if metadata is not None:
        atomic_write_text(os.path.join(out_dir, "metadata.json"), json.dumps(metadata, indent=2))
    return paths


class LiteRTModel:
    """A ``.tflite`` model run by the LiteRT interpreter (``ai-edge-litert``); needs
    no TensorFlow.

    ``model(pixels)`` returns the output dict as NumPy arrays; the batch size may
    change from call to call (the input is resized).

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads (None: LiteRT's default).
    """

    def __init__(self, path: str, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ImportError(
                "running a TFLite model needs the LiteRT interpreter: "
                "pip install 'anet-tf[tflite]' (ai-edge-litert)"
            ) from None
        self.path = path
        with native_stderr_filtered():
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner()

    def __call__(self, pixels) -> dict[str, np.ndarray]:
        pixels = np.ascontiguousarray(pixels, np.float32)
        return {k: np.array(v) for k, v in self.runner(**{INPUT_NAME: pixels}).items()}

    def embed(self, pixels) -> np.ndarray:
        return self(pixels)["embedding"]
