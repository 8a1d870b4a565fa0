"""Do the exported models compute what the SavedModel computes?

:func:`parity_report` runs each exported format on the same decoded test images as
the SavedModel's ``serve_images`` signature and reports the cosine similarity of
the embeddings, the largest absolute difference, and the rank-1 / mAP of the
dataset's test protocol with each format's embeddings. ``anet-tf export --check``
prints it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from anet_tf.export.saved_model import EMBEDDING
from anet_tf.export.saved_model import INPUT_IMAGES
from anet_tf.export.saved_model import SIGNATURE_IMAGES
from anet_tf.export.saved_model import pixel_embedder

# Cosine similarity to the SavedModel's embeddings that each variant must reach.
COSINE_THRESHOLDS = {
    "tflite fp32": 0.9999,
    "tflite fp16": 0.999,
    "tflite int8_dynamic": 0.99,
    "tflite int8": 0.99,
    "onnx": 0.9999,
    "tensorrt fp32": 0.9999,
    "tensorrt fp16": 0.999,
}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def exported_models(paths: dict) -> dict:
    """name -> ``fn(pixels) -> output dict`` for every non-SavedModel format in
    ``paths`` (as :func:`anet_tf.export.export_formats` returns them)."""
    models = {}
    for variant, path in paths.get("tflite", {}).items():
        from anet_tf.export.tflite import LiteRTModel

        models[f"tflite {variant}"] = LiteRTModel(path)
    if "onnx" in paths:
        from anet_tf.export.onnx import OnnxRuntimeModel

        models["onnx"] = OnnxRuntimeModel(paths["onnx"])
    for precision, path in paths.get("tensorrt", {}).items():
        from anet_tf.export.tensorrt import TensorRTModel

        models[f"tensorrt {precision}"] = TensorRTModel(path)
    return models


def parity_report(
    paths: dict, cfg, dataset, max_images: int = 64, retrieval: bool = True
) -> list[dict]:
    """One row per format: cosine min/mean, max |diff|, R1 and mAP.

    Args:
        paths: what :func:`anet_tf.export.export_formats` wrote; needs
            ``saved_model``.
        cfg: the run's config (image size, eval protocol).
        dataset: the run's dataset; its query + gallery images are used.
        max_images: test images for the embedding comparison.
        retrieval: also run the test protocol with each format (slower).
    """
    from anet_tf.evaluation.extract import evaluate_embedder
    from anet_tf.export.tflite import load_pixels

    loaded = tf.saved_model.load(paths["saved_model"])
    signature = loaded.signatures[SIGNATURE_IMAGES]

    def saved_model(pixels):
        return {
            EMBEDDING: signature(**{INPUT_IMAGES: tf.constant(pixels)})[
                EMBEDDING
            ].numpy()
        }

    records = (dataset.query + dataset.gallery)[:max_images]
    pixels = load_pixels([r.path for r in records], cfg.data.image_size)
    reference = saved_model(pixels)[EMBEDDING]
    models = {"saved_model": saved_model, **exported_models(paths)}
    rows = []
    for name, model in models.items():
        emb = np.concatenate(
            [model(pixels[i : i + 32])[EMBEDDING] for i in range(0, len(pixels), 32)]
        )
        cos = cosine(emb, reference)
        row = {
            "format": name,
            "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()),
            "max_abs_diff": float(np.abs(emb - reference).max()),
            "threshold": COSINE_THRESHOLDS.get(name),
        }
        if retrieval:

            def embed_pixels(p, model=model):
                return model(np.asarray(p, np.float32))[EMBEDDING]

            fn = pixel_embedder(embed_pixels)
            metrics = evaluate_embedder(
                lambda x, fn=fn: tf.constant(fn(x)), dataset, cfg
            )
            row["R1"] = float(metrics["R1"])
            row["mAP"] = float(metrics["mAP"])
        rows.append(row)
    return rows


def format_parity(rows: list[dict]) -> str:
    """A Markdown table of :func:`parity_report` rows (R1 and mAP in %)."""
    lines = [
        "| format | cosine min | cosine mean | max abs diff | R1 (%) | mAP (%) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['cosine_min']:.6f} | {r['cosine_mean']:.6f} | "
            f"{r['max_abs_diff']:.2e} | {100 * r.get('R1', float('nan')):.2f} | "
            f"{100 * r.get('mAP', float('nan')):.2f} |"
        )
    return "\n".join(lines)
