"""The machine a study ran on, as recorded with each invocation in study.yaml."""

from __future__ import annotations

import os
import platform


def describe_machine() -> str:
    """Host, CPU cores, GPUs TensorFlow sees, and the TensorFlow / Keras versions."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        try:
            names.append(
                tf.config.experimental.get_device_details(gpu).get(
                    "device_name", gpu.name
                )
            )
        except Exception:  # noqa: BLE001 - informative only
            names.append(gpu.name)
    return (
        f"host {platform.node()}, {os.cpu_count()} CPU cores, "
        f"GPUs: {', '.join(names) or 'none'}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}"
    )
