"""An exported anet-tf SavedModel, called in process as TF Serving calls it.

:class:`ServingModel` loads a SavedModel (a version folder, or a model base folder
whose highest version is used, as TF Serving picks) and runs its
``serving_default`` signature: encoded image bytes in, the embedding and each
attribute's probabilities and top-1 class out. :func:`model_fingerprint` says
whether two SavedModels compute the same thing (an index refuses embeddings of
another model).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from anet_tf.io import ASIDE_SUFFIX
from anet_tf.io import committed_folder
from anet_tf.search.errors import SearchError

# Metadata keys that do not change what the model computes: a re-export of the
# same weights under another version number keeps its fingerprint.
_VOLATILE_METADATA = (
    "model_name",
    "version",
    "anet_tf_version",
    "tensorflow_version",
    "keras_version",
)


def outputs_to_numpy(out: dict) -> dict[str, np.ndarray]:
    """A signature's or serving function's outputs as NumPy arrays, its string
    tensors (attribute labels) as ``str`` arrays."""
    result = {}
    for key, value in out.items():
        value = value.numpy()
        if value.dtype == object:
            value = np.asarray([v.decode("utf-8") for v in value], dtype=str)
        result[key] = value
    return result


def resolve_model_dir(path: str) -> str:
    """The version folder of a SavedModel: ``path`` itself when it holds
    ``saved_model.pb``, else its highest numbered sub-folder (as TF Serving picks
    from a model base folder). A version folder in the middle of its replacement
    by a new export counts (read through :func:`anet_tf.io.committed_folder`)."""
    if os.path.isfile(os.path.join(committed_folder(path), "saved_model.pb")):
        return os.path.abspath(path)
    versions = []
    if os.path.isdir(path):
        names = {d for d in os.listdir(path) if d.isdigit()}
        names |= {  # .N.replaced: version N, aside while it is replaced
            d[1 : -len(ASIDE_SUFFIX)]
            for d in os.listdir(path)
            if d.startswith(".") and d.endswith(ASIDE_SUFFIX)
        }
        versions = [
            int(d)
            for d in names
            if d.isdigit()
            and os.path.isfile(
                os.path.join(committed_folder(os.path.join(path, d)), "saved_model.pb")
            )
        ]
    if not versions:
        raise SearchError(
            f"{path} is not a SavedModel: no saved_model.pb in it nor in a numbered "
            f"version folder under it (`anet-tf fit` writes RUN_DIR/export/anet/1)"
        )
    return os.path.abspath(os.path.join(path, str(max(versions))))


def model_fingerprint(saved_model_dir: str) -> str:
    """A short hash that changes when the model's weights or outputs change.

    It hashes ``variables/variables.index`` (which holds a CRC32C of every
    weight tensor) and the model's metadata without its name, version and library
    versions, so it is quick to compute for any model size and equal for
    re-exports of the same weights.
    """
    from anet_tf.export.saved_model import read_metadata

    digest = hashlib.sha256()
    index = os.path.join(
        committed_folder(saved_model_dir), "variables", "variables.index"
    )
    try:
        with open(index, "rb") as fh:
            digest.update(fh.read())
    except OSError as exc:
        raise SearchError(
            f"{saved_model_dir}: cannot read the weights index: {exc}"
        ) from None
    metadata = {
        k: v
        for k, v in read_metadata(saved_model_dir).items()
        if k not in _VOLATILE_METADATA
    }
    digest.update(json.dumps(metadata, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]


class ServingModel:
    """An exported anet-tf SavedModel called through ``serving_default``.

    Args:
        path: the version folder (``<base>/<model_name>/<version>``) or the model
            base folder (its highest version is used).
    """

    def __init__(self, path: str):
        from anet_tf.export.saved_model import SIGNATURE_BYTES
        from anet_tf.export.saved_model import read_metadata

        self.path = resolve_model_dir(path)
        try:
            self.metadata = read_metadata(self.path)
        except FileNotFoundError as exc:
            raise SearchError(str(exc)) from None
        self.fingerprint = model_fingerprint(self.path)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(committed_folder(self.path))
        self._signature = self._loaded.signatures[SIGNATURE_BYTES]

    @property
    def attribute_names(self) -> list[str]:
        return [a["name"] for a in self.metadata["attributes"]]

    @property
    def attribute_classes(self) -> list[list[str]]:
        return [list(a["classes"]) for a in self.metadata["attributes"]]

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata["embedding_dim"])

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.metadata["input_size"]
        return int(h), int(w)

    def info(self) -> dict:
        """What an embeddings file and an index record about the model
        (``weights_digest``: that of its metadata, None for a model exported
        before exports recorded it)."""
        keys = (
            "model_name",
            "version",
            "dataset",
            "feature",
            "variant",
            "backbone",
            "weights_digest",
        )
        return {
            "path": self.path,
            "fingerprint": self.fingerprint,
            "embedding_dim": self.embedding_dim,
            **{k: self.metadata.get(k) for k in keys},
            "attributes": self.metadata["attributes"],
        }

    def predict_bytes(self, contents: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Encoded images -> ``embedding`` [N, D], ``<a>_probs`` [N, m], ``<a>_label``
        (str [N]).

        Raises:
            tensorflow.errors.InvalidArgumentError: an image could not be decoded.
        """
        import tensorflow as tf

        from anet_tf.export.saved_model import INPUT_BYTES

        return outputs_to_numpy(self._signature(**{INPUT_BYTES: tf.constant(list(contents), tf.string)}))
