"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays the PredictionLog records of this TFRecord file when it loads a
version, before the version takes traffic, so the first real requests do not pay for
kernel selection and memory allocation. One request per batch size of
``anet_tf/export/serving/batching_parameters.txt`` (each padded batch size is a new shape for the
kernels) goes to ``serving_default`` with a generated JPEG, and one to
``serve_images``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from anet_tf.export import serving_protos as sp

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
# The allowed_batch_sizes of serving/batching_parameters.txt (a test keeps them equal).
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def sample_pixels(image_size: Sequence[int]) -> np.ndarray:
    """A deterministic, non-constant RGB image, uint8 [h, w, 3]."""
    h, w = image_size
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [(x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), ((x + y) * 7) % 256],
        axis=-1,
    ).astype(np.uint8)


def warmup_requests(
    model_name: str,
    image_size: Sequence[int],
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list:
    """The PredictionLog records of the warm-up file."""
    pixels = sample_pixels(image_size)
    jpeg = tf.io.encode_jpeg(pixels, quality=90).numpy()
    logs = []
    for n in batch_sizes:
        request = sp.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs["image_bytes"].CopyFrom(
            sp.make_tensor_proto(np.array([jpeg] * n, dtype=object))
        )
        logs.append(sp.PredictionLog(predict_log=sp.PredictLog(request=request)))
    request = sp.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serve_images"
    request.inputs["images"].CopyFrom(
        sp.make_tensor_proto(pixels[None].astype(np.float32))
    )
    logs.append(sp.PredictionLog(predict_log=sp.PredictLog(request=request)))
    return logs


def write_warmup_file(
    saved_model_dir: str, model_name: str, image_size: Sequence[int]
) -> str:
    """Write ``<saved_model_dir>/assets.extra/tf_serving_warmup_requests``; returns
    its path."""
    folder = os.path.join(saved_model_dir, WARMUP_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, image_size):
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path: str) -> list:
    """The PredictionLog records of a warm-up file (what TF Serving parses)."""
    return [
        sp.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
