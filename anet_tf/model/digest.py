"""A digest of a network's weights: what a run's calibration names its model by,
and what an export records (``weights_digest`` in the SavedModel's metadata), so
that a calibration of a run's weights is known to serve its own export."""

from __future__ import annotations

import hashlib


def weights_digest(net) -> str:
    """A SHA-1 digest of every weight of ``net`` (path, shape, dtype and values, in
    ``net.weights`` order): equal for the same architecture with the same weights,
    whichever process built it."""
    import keras
    import numpy as np

    h = hashlib.sha1()
    for w in net.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w.value))
        h.update(f"{w.path}:{value.shape}:{value.dtype}".encode())
        h.update(value.tobytes())
    return h.hexdigest()
