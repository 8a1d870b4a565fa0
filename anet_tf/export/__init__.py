"""Export a trained ANet to serving formats: TF Serving SavedModel, TFLite (LiteRT),
ONNX and TensorRT.

``export_formats(net, cfg, description, out_dir, formats, quantize)`` writes (what
``anet-tf export`` and ``anet-tf fit`` run, through
:func:`anet_tf.jobs.fit_evaluate_export.export_run`)::

    <out_dir>/<model_name>/<version>/   SavedModel (TF Serving layout, saved_model.py)
    <out_dir>/models.config, batching_parameters.txt, SERVING.md
                                        TF Serving's config and the serving guide
                                        (package data, serving/)
    <out_dir>/tflite/                   model.tflite (+ _fp16, _int8_dynamic, _int8)
    <out_dir>/onnx/model.onnx           dynamic batch axis
    <out_dir>/tensorrt/                 model_fp32.engine, model_fp16.engine

Every format computes the same thing: the configured test feature, L2-normalised,
and the attribute probabilities. The SavedModel takes encoded images; TFLite, ONNX
and TensorRT take decoded RGB pixels at the model's input size (they cannot decode
JPEG), which :func:`anet_tf.export.tflite.load_pixels` produces with the evaluation
pipeline's own decode and resize.

Submodules import TensorFlow and the optional converters only when called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from anet_tf.export.formats import FORMATS
from anet_tf.export.formats import QUANTIZE

SERVING_DIR = os.path.join(os.path.dirname(__file__), "serving")
# package file -> its name beside an export
SERVING_FILES = {
    "models.config": "models.config",
    "batching_parameters.txt": "batching_parameters.txt",
    "README.md": "SERVING.md",
}


def write_serving_files(out_dir: str) -> list[str]:
    """Copy TF Serving's config (``models.config``, ``batching_parameters.txt``)
    and the serving guide (``SERVING.md``) into ``out_dir``, beside the model
    base folder they name (``/models/anet`` when ``out_dir`` is mounted at
    ``/models``). Returns the files written."""
    from anet_tf.io import atomic_write_bytes

    written = []
    for source, name in SERVING_FILES.items():
        with open(os.path.join(SERVING_DIR, source), "rb") as fh:
            data = fh.read()
        path = os.path.join(out_dir, name)
        atomic_write_bytes(path, data)
        written.append(path)
    return written


class ExportRefused(RuntimeError):
    """Some formats could not be exported here; the others were.

    Attributes:
        paths: what was written, as :func:`export_formats` returns it.
        reasons: format -> why it was refused.
    """

    def __init__(self, paths: dict, reasons: dict[str, str]):
        self.paths = paths
        self.reasons = reasons
        super().__init__(
            "; ".join(f"{fmt} refused: {why}" for fmt, why in reasons.items())
        )


# long: 11 lines of docstring; 73 lines of code, one block per format in the order they are written.
def export_formats(
    net,
    cfg,
    description,
    out_dir: str,
    formats: Sequence[str] = ("saved_model",),
    quantize: str | None = None,
    verbose: bool = True,
    calibration=None,
) -> dict:
    """Export a loaded network to each of ``formats`` under ``out_dir``.

    Args:
        net: the trained network (:meth:`anet_tf.training.run_checkpoints.Run.network`).
        cfg: the run's config.
        description: the run's
            :class:`~anet_tf.training.run.NetworkDescription` (attribute class
            names); a dataset serves too.
        calibration: a dataset whose training images calibrate full-integer
            (int8) quantization; default ``description`` when it is a dataset.

    Returns:
        ``{"saved_model": dir, "tflite": {variant: file}, "onnx": file,
        "tensorrt": {precision: file}}`` for the formats written.

    Raises:
        ValueError: an unknown format or quantization.
        ExportRefused: TensorRT cannot run here (after the other formats were
            written); its ``paths`` holds them.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"unknown export format(s) {unknown}; valid: {', '.join(FORMATS)}"
        )
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(
            f"quantize must be one of {', '.join(QUANTIZE)}. Received: "
            f"quantize={quantize!r}"
        )
    from anet_tf.export.saved_model import build_serving_module
    from anet_tf.export.saved_model import export_saved_model
    from anet_tf.export.saved_model import serving_metadata

    def say(message):
        if verbose:
            print(f"[anet-tf export] {message}", flush=True)

    refused: dict[str, str] = {}
    if "tensorrt" in formats:
        from anet_tf.export.tensorrt import unavailable_reason

        reason = unavailable_reason()
        if reason:
            refused["tensorrt"] = reason  # reported once, by the caller, at the end
            say("tensorrt cannot be built here (the reason follows at the end); exporting the other formats")
    paths: dict = {}
    module = build_serving_module(net, cfg, description)
    metadata = serving_metadata(module, cfg, description)
    calibration = calibration if calibration is not None else description
    tflite_variants = None
    if quantize == "int8" and "tflite" in formats and not getattr(calibration, "train", None):
        from anet_tf.export import tflite

        # The dynamic-range variants need no images; full-integer int8 does.
        tflite_variants = tuple(v for v in tflite.QUANTIZE_VARIANTS["int8"] if v != "int8")
        refused["tflite int8"] = (
            "full-integer quantization calibrates on training images, and the run's "
            f"dataset ({cfg.data.root}) is not here; export where it is (the other "
            "TFLite variants were written)"
        )
    if "saved_model" in formats:
        paths["saved_model"] = export_saved_model(net, cfg, description, out_dir)
        say(f"saved_model -> {paths['saved_model']}")
        paths["serving"] = write_serving_files(out_dir)
        say(f"TF Serving config and guide -> {', '.join(paths['serving'])}")
    if "tflite" in formats:
        from anet_tf.export import tflite

        representative = None
        if quantize == "int8" and tflite_variants is None:
            representative = tflite.representative_images(calibration, cfg.data.image_size)
        paths["tflite"] = tflite.export_tflite(
            module,
            os.path.join(out_dir, "tflite"),
            variants=tflite_variants or tflite.QUANTIZE_VARIANTS[quantize],
            representative=representative,
            metadata=metadata,
        )
        for variant, path in paths["tflite"].items():
            say(f"tflite {variant} -> {path}")
    needs_onnx = "onnx" in formats or ("tensorrt" in formats and "tensorrt" not in refused)
    if needs_onnx:
        from anet_tf.export.onnx import export_onnx

        paths["onnx"] = export_onnx(module, os.path.join(out_dir, "onnx"), metadata)
        say(f"onnx -> {paths['onnx']}")
    if "tensorrt" in formats and "tensorrt" not in refused:
        from anet_tf.export.tensorrt import export_tensorrt

        paths["tensorrt"] = export_tensorrt(
            paths["onnx"], os.path.join(out_dir, "tensorrt"), cfg.data.image_size
        )
        for precision, path in paths["tensorrt"].items():
            say(f"tensorrt {precision} -> {path}")
    if refused:
        raise ExportRefused(paths, refused)
    return paths
