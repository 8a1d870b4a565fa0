"""The SavedModel for TF Serving: image files in, embedding and attributes out.

Layout (what ``tensorflow_model_server --model_base_path=<out>/<model_name>`` reads)::

    <out>/<model_name>/<version>/
        saved_model.pb
        variables/                      every weight stored once
        assets/metadata.json            config, dataset, feature, input size, classes,
                                        weights digest
        assets/config.yaml              the run's resolved config
        assets/<attribute>_classes.txt  class names, one per line, index = class id
        assets.extra/tf_serving_warmup_requests

Signatures (inputs -> outputs; N may be 0):

``serving_default``
    ``image_bytes`` string [N] (JPEG, PNG, GIF, BMP or WebP files as they are).
``serve_images``
    ``images`` float32 [N, H, W, 3], RGB pixels in [0, 255], any H and W.
``serve_images_uint8``
    ``images`` uint8 [N, H, W, 3], the same as decoded pixels.

Each returns ``embedding`` float32 [N, D] (the configured test feature of
``eval.feature``, L2-normalised), and per attribute ``<name>_probs`` float32
[N, m_i] (softmax of the attribute logits) and ``<name>_label`` string [N] (the top-1
class name). Decoding, resizing and normalisation are
:func:`anet_tf.data.preprocessing.preprocess_image_bytes` and
:func:`~anet_tf.data.preprocessing.preprocess_for_inference`, the functions evaluation
uses, so a client sends image files unchanged. An input that is not an image, or
one the decoder refuses behind a valid header, fails the request with
InvalidArgument ("cannot decode image image_bytes[i]: ...", i the index of the
first bad image of the batch), never the server; so do NaN or Inf
pixels sent to ``serve_images`` and a file whose header announces more than
``data.max_image_pixels`` pixels (refused before it is decoded).

Keras' ``model.export`` tracks the model's variables twice (a SavedModel twice the
size of the weights); here a ``tf.Module`` holds the network once and
``tf.saved_model.save`` writes each variable once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from anet_tf.config import Config
from anet_tf.data.preprocessing import IMAGENET_MEAN
from anet_tf.data.preprocessing import IMAGENET_STD
from anet_tf.data.preprocessing import normalize
from anet_tf.data.preprocessing import preprocess_for_inference
from anet_tf.data.preprocessing import preprocess_image_bytes
from anet_tf.io import committed_folder
from anet_tf.io import recover_folder
from anet_tf.io import remove_path
from anet_tf.io import replace_folder
from anet_tf.io import staging_path
from anet_tf.model.anet import select_test_feature
from anet_tf.model.digest import weights_digest

SIGNATURE_BYTES = "serving_default"
SIGNATURE_IMAGES = "serve_images"
SIGNATURE_IMAGES_UINT8 = "serve_images_uint8"
INPUT_BYTES = "image_bytes"
INPUT_IMAGES = "images"
EMBEDDING = "embedding"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.yaml"


def probs_key(attribute: str) -> str:
    return f"{attribute}_probs"


def label_key(attribute: str) -> str:
    return f"{attribute}_label"


def classes_file(attribute: str) -> str:
    return f"{attribute}_classes.txt"


class _Untracked:
    """Holds an object out of a tf.Module's tracked (saved) children."""

    def __init__(self, value):
        self.value = value


class AnetServing(tf.Module):
    """The serving graph around a functional ANet network.

    The module tracks the network's variables, not the Keras model, so the
    SavedModel stores each weight once. TFLite and ONNX convert
    :meth:`pixel_outputs` at a fixed input size.

    Args:
        net: the functional network of :func:`anet_tf.model.build_anet`.
        feature: test-time feature, f | fa | j (``eval.feature``).
        attribute_names: attributes with a branch (empty for the baseline).
        attribute_classes: class names of each attribute, index = class id.
        image_size: (height, width) of the network input.
        max_pixels: the largest image ``serving_default`` decodes (width x height
            from the file's header, checked before decoding); None = no limit.
            Exports use ``data.max_image_pixels``.
    """

    def __init__(
        self,
        net,
        *,
        feature: str,
        attribute_names: Sequence[str],
        attribute_classes: Sequence[Sequence[str]],
        image_size: Sequence[int],
        max_pixels: int | None = None,
    ):
        super().__init__(name="anet_serving")
        self._max_pixels = max_pixels
        if len(attribute_names) != len(attribute_classes):
            raise ValueError(
                f"attribute_names and attribute_classes need one entry per attribute."
                f" Received: attribute_names={list(attribute_names)}, "
                f"{len(attribute_classes)} class lists"
            )
        missing = [
            key
            for key in [f"a_{n}_logits" for n in attribute_names]
            if key not in net.output
        ]
        if missing:
            raise ValueError(
                f"the network has no outputs {missing}; it gives {sorted(net.output)}"
            )
        for name, classes in zip(attribute_names, attribute_classes, strict=True):
            m = net.output[f"a_{name}_logits"].shape[-1]
            if m != len(classes):
                raise ValueError(
                    f"attribute {name!r}: the network predicts {m} classes, "
                    f"{len(classes)} class names were given"
                )
        # The SavedModel's object graph holds the tf.Variables under the Keras
        # variables and not the Keras model: tracking both stores every weight
        # twice (what model.export does), and through the Keras model alone the
        # TFLite converter cannot freeze them (uninitialised resource variables,
        # NaN outputs).
        self._net = _Untracked(net)
        self.net_variables = [v.value for v in net.variables]
        self._feature = feature
        self._embedding_dim = _embedding_dim(net, feature, attribute_names)
        self._attribute_names = list(attribute_names)
        self._attribute_classes = [list(c) for c in attribute_classes]
        self._image_size = tuple(int(s) for s in image_size)
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)],
        )
        self.serve_images = tf.function(
            self._serve_pixels,
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_IMAGES)
            ],
        )
        self.serve_images_uint8 = tf.function(
            self._serve_pixels,
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_IMAGES)
            ],
        )

    @property
    def net(self):
        """The functional Keras network (not part of the SavedModel's objects)."""
        return self._net.value

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @property
    def attribute_names(self) -> list[str]:
        return list(self._attribute_names)

    @property
    def attribute_classes(self) -> list[list[str]]:
        return [list(c) for c in self._attribute_classes]

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    def signatures(self) -> dict:
        return {
            SIGNATURE_BYTES: self.serve_bytes,
            SIGNATURE_IMAGES: self.serve_images,
            SIGNATURE_IMAGES_UINT8: self.serve_images_uint8,
        }

    def network_input(self, pixels: tf.Tensor) -> tf.Tensor:
        """Pixels [N, H, W, 3] in [0, 255] -> the network input, as in evaluation.

        Where H x W is statically the input size, the bilinear resize is the
        identity (half-pixel centres at scale 1 sample every pixel exactly) and is
        left out of the graph, so converters see no resize op.
        """
        if tuple(pixels.shape[1:3]) == self._image_size:
            return normalize(tf.cast(pixels, tf.float32))
        return preprocess_for_inference(pixels, self._image_size)

    def outputs(self, network_input: tf.Tensor) -> dict:
        """Numeric outputs of a normalised batch: embedding and <name>_probs."""
        out = self.net(network_input, training=False)
        feature = select_test_feature(out, self._feature, self._attribute_names)
        result = {EMBEDDING: tf.math.l2_normalize(tf.cast(feature, tf.float32), -1)}
        for name in self._attribute_names:
            logits = tf.cast(out[f"a_{name}_logits"], tf.float32)
            result[probs_key(name)] = tf.nn.softmax(logits, axis=-1)
        return result

    def pixel_outputs(self, images: tf.Tensor) -> dict:
        """Pixels [N, H, W, 3] -> numeric outputs (what TFLite and ONNX carry)."""
        return self.outputs(self.network_input(images))

    def _batch_outputs(self, network_input: tf.Tensor) -> dict:
        """:meth:`outputs`, with an empty batch answered by empty outputs (the
        convolutions reject a batch of 0 on CPU)."""

        def empty():
            result = {EMBEDDING: tf.zeros([0, self._embedding_dim], tf.float32)}
            for name, classes in zip(
                self._attribute_names, self._attribute_classes, strict=True
            ):
                result[probs_key(name)] = tf.zeros([0, len(classes)], tf.float32)
            return result

        return tf.cond(
            tf.shape(network_input)[0] > 0,
            lambda: self.outputs(network_input),
            empty,
        )

    def _with_labels(self, result: dict) -> dict:
        for name, classes in zip(
            self._attribute_names, self._attribute_classes, strict=True
        ):
            top = tf.argmax(result[probs_key(name)], axis=-1)
            result[label_key(name)] = tf.gather(tf.constant(classes), top)
        return result

    def _serve_bytes(self, image_bytes):
        images = preprocess_image_bytes(image_bytes, self._image_size, self._max_pixels)
        return self._with_labels(self._batch_outputs(images))

    def _serve_pixels(self, images):
        if images.dtype.is_floating:
            # NaN or Inf pixels would give a NaN embedding with a confident label.
            images = tf.debugging.assert_all_finite(
                images, "images: the pixels contain NaN or Inf; send values in [0, 255]"
            )
        return self._with_labels(self._batch_outputs(self.network_input(images)))


def _embedding_dim(net, feature: str, attribute_names: Sequence[str]) -> int:
    keys = {"f": ["f"], "j": ["j"], "fa": ["f"] + [f"a_{n}" for n in attribute_names]}
    missing = [k for k in keys.get(feature, [feature]) if k not in net.output]
    if missing:
        raise ValueError(
            f"feature {feature!r} needs the network outputs {missing}; it gives "
            f"{sorted(net.output)}"
        )
    return int(sum(net.output[k].shape[-1] for k in keys[feature]))


def serving_attributes(cfg: Config, dataset) -> tuple[list[str], list[list[str]]]:
    """The attribute names (``data.attributes``; none for the baseline) and their
    class names, from the run's
    :class:`~anet_tf.training.run.NetworkDescription` (or a dataset: anything with
    ``name``, ``attribute_names`` and ``attribute_classes``).

    Raises:
        ValueError: an attribute the description does not name, listing those it
            does.
    """
    if cfg.model.variant == "baseline":
        return [], []
    names = list(cfg.data.attributes)
    offered = list(dataset.attribute_names)
    unknown = [n for n in names if n not in offered]
    if unknown:
        raise ValueError(
            f"data.attributes {unknown} are not in the dataset {dataset.name!r} "
            f"(it has {offered}); export needs their class names"
        )
    return names, [list(dataset.attribute_classes[offered.index(n)]) for n in names]


def build_serving_module(net, cfg: Config, dataset) -> AnetServing:
    """The :class:`AnetServing` of a run's network, config and dataset."""
    names, classes = serving_attributes(cfg, dataset)
    return AnetServing(
        net,
        feature=cfg.eval.feature,
        attribute_names=names,
        attribute_classes=classes,
        image_size=cfg.data.image_size,
        max_pixels=cfg.data.max_image_pixels,
    )


def serving_metadata(module: AnetServing, cfg: Config, dataset) -> dict:
    """What a client needs to know about the model, stored as assets/metadata.json.

    ``weights_digest`` is the first 16 hex digits of
    :func:`~anet_tf.model.digest.weights_digest` of the exported network: what a
    calibration of the run's weights (``anet-tf calibrate --run``) names its
    model by, so ``search`` knows such a file serves this export. It depends on
    the weights alone, so a re-export of the same weights keeps it (and keeps
    the SavedModel's fingerprint)."""
    import keras

    from anet_tf._version import __version__

    h, w = module.image_size
    return {
        "model_name": cfg.export.model_name,
        "version": cfg.export.version,
        "dataset": cfg.data.name,
        "feature": cfg.eval.feature,
        "embedding_dim": module.embedding_dim,
        "metric": cfg.eval.metric,
        "variant": cfg.model.variant,
        "backbone": cfg.model.backbone,
        "input_size": [h, w],
        "max_image_pixels": cfg.data.max_image_pixels,
        "weights_digest": weights_digest(module.net)[:16],
        "pixels": "RGB, float in [0, 255] or uint8; resized bilinearly to input_size",
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "attributes": [
            {"name": n, "classes": c}
            for n, c in zip(
                module.attribute_names, module.attribute_classes, strict=True
            )
        ],
        "signatures": {
            SIGNATURE_BYTES: {INPUT_BYTES: "string [N]: encoded image files"},
            SIGNATURE_IMAGES: {INPUT_IMAGES: "float32 [N, H, W, 3] pixels in [0, 255]"},
            SIGNATURE_IMAGES_UINT8: {INPUT_IMAGES: "uint8 [N, H, W, 3] pixels"},
        },
        "outputs": [EMBEDDING]
        + [k(n) for n in module.attribute_names for k in (probs_key, label_key)],
        "anet_tf_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }


def export_saved_model(
    net, cfg: Config, dataset, out_dir: str, *, warmup: bool = True
) -> str:
    """Write the TF Serving SavedModel of a trained network.

    Args:
        net: the functional ANet network (trained weights loaded).
        cfg: the run's config; reads eval.feature, data.image_size,
            data.attributes, model.variant and export.model_name / version.
        dataset: the run's :class:`~anet_tf.training.run.NetworkDescription`
            (or its dataset), for the attribute class names.
        out_dir: the model base folder's parent; the model goes to
            ``out_dir/<export.model_name>/<export.version>/``.
        warmup: write ``assets.extra/tf_serving_warmup_requests``.

    Returns:
        The version folder. It is written beside its final place
        (:func:`anet_tf.io.staging_path`, a name TF Serving ignores) and swapped in
        when complete by :func:`anet_tf.io.replace_folder`: an existing folder of
        the same version is renamed aside, the new one renamed in, and only then
        the old one removed, so a server polling the base folder never sees half a
        model and a kill at any point leaves one whole version (the old one until
        the new one is in; a reader finds it through
        :func:`anet_tf.io.committed_folder`, and the next export puts it back
        first, :func:`anet_tf.io.recover_folder`). Two exports of one version at
        once are not supported (``anet-tf fit`` holds its run's lock while it
        exports).
    """
    module = build_serving_module(net, cfg, dataset)
    base = os.path.join(out_dir, cfg.export.model_name)
    final = os.path.join(base, str(cfg.export.version))
    os.makedirs(base, exist_ok=True)
    recover_folder(final)  # an interrupted earlier export: its old version back
    staging = staging_path(final)
    remove_path(staging)
    # The asset files' sources; tf.saved_model.save copies them into assets/.
    scratch = tempfile.mkdtemp(prefix="anet-tf-export-")
    try:
        _save_module(module, cfg, dataset, scratch, staging)
        if warmup:
            from anet_tf.export.warmup import write_warmup_file

            write_warmup_file(staging, cfg.export.model_name, module.image_size)
        replace_folder(staging, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        remove_path(staging)
    return final


def _save_module(
    module: AnetServing, cfg: Config, dataset, scratch: str, model_dir: str
) -> None:
    """``tf.saved_model.save`` the module with its asset files (written to
    ``scratch`` first) into ``model_dir``."""
    metadata = serving_metadata(module, cfg, dataset)
    files = {
        METADATA_FILE: json.dumps(metadata, indent=2),
        CONFIG_FILE: cfg.to_yaml(),
    }
    for name, classes in zip(
        module.attribute_names, module.attribute_classes, strict=True
    ):
        files[classes_file(name)] = "".join(f"{c}\n" for c in classes)
    for file_name, text in files.items():
        with open(os.path.join(scratch, file_name), "w", encoding="utf-8") as fh:
            fh.write(text)
    module.assets = {
        os.path.splitext(f)[0]: tf.saved_model.Asset(os.path.join(scratch, f))
        for f in files
    }
    tf.saved_model.save(module, model_dir, signatures=module.signatures())


def read_metadata(saved_model_dir: str) -> dict:
    """The ``assets/metadata.json`` of an exported model (its committed version,
    :func:`anet_tf.io.committed_folder`)."""
    path = os.path.join(committed_folder(saved_model_dir), "assets", METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{saved_model_dir} is not an anet-tf SavedModel: {path} is missing"
        )
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def denormalize(images):
    """Inverse of :func:`anet_tf.data.preprocessing.normalize`: network input -> float
    pixels in [0, 255]. The round trip differs from the original pixels by float32
    round-off (about 1e-5 of a grey level)."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    return (tf.cast(images, tf.float32) * std + mean) * 255.0


def pixel_embedder(fn_pixels):
    """``fn(normalised images) -> embeddings`` around ``fn_pixels(pixels) -> embeddings``.

    The evaluation pipeline yields normalised images; exported models take pixels.
    """

    def embed(images):
        return np.asarray(fn_pixels(denormalize(images)), np.float32)

    return embed


def load_embedder(path: str):
    """``fn(normalised images float32 [B, H, W, 3]) -> embeddings [B, D]`` (NumPy) of
    an exported SavedModel, for ``anet-tf evaluate --model``.

    The images are mapped back to pixels (:func:`denormalize`) and run through the
    ``serve_images`` signature, so the evaluation exercises the served graph; the
    round trip adds float32 round-off only (embeddings within ~1e-6 of the Keras
    model's). The embeddings are already L2-normalised.
    """
    loaded, signature = _load_serve_images(path)

    def fn_pixels(pixels):
        return signature(**{INPUT_IMAGES: pixels})[EMBEDDING].numpy()

    embed = pixel_embedder(fn_pixels)
    embed.saved_model = loaded
    return embed


def load_predictor(path: str):
    """``fn(normalised images float32 [B, H, W, 3]) -> (embeddings [B, D],
    {attribute: class index int64 [B]})`` (NumPy) of an exported SavedModel, for
    ``anet-tf evaluate --model``: what is served is what is measured.

    One ``serve_images`` call per batch, as in :func:`load_embedder`, gives the
    embeddings and the served ``<name>_label`` strings; those are mapped back to
    class indices through the class lists of ``assets/metadata.json``.
    ``fn.attribute_classes`` is ``{name: class names}`` (empty for a baseline).

    Raises:
        ValueError: a served label is not among its attribute's classes.
    """
    loaded, signature = _load_serve_images(path)
    classes = {a["name"]: list(a["classes"]) for a in read_metadata(path)["attributes"]}
    index = {n: {c: i for i, c in enumerate(cs)} for n, cs in classes.items()}

    def predict(images):
        out = signature(**{INPUT_IMAGES: denormalize(images)})
        predicted = {}
        for name, lookup in index.items():
            labels = [v.decode("utf-8") for v in out[label_key(name)].numpy()]
            unknown = sorted(set(labels) - set(lookup))
            if unknown:
                raise ValueError(
                    f"{path}: output {label_key(name)} gave {unknown}, not among the "
                    f"classes {classes[name]} of assets/{METADATA_FILE}"
                )
            predicted[name] = np.asarray([lookup[v] for v in labels], np.int64)
        return np.asarray(out[EMBEDDING].numpy(), np.float32), predicted

    predict.saved_model = loaded
    predict.attribute_classes = classes
    return predict


def _load_serve_images(path: str):
    """(the loaded SavedModel, its ``serve_images`` signature); a version folder
    being replaced is read from its last complete version
    (:func:`anet_tf.io.committed_folder`)."""
    path = committed_folder(path)
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(
            f"{path} is not a SavedModel version folder (no saved_model.pb); give "
            f"<base>/<model_name>/<version>"
        )
    loaded = tf.saved_model.load(path)
    return loaded, loaded.signatures[SIGNATURE_IMAGES]


def saved_model_config(saved_model_dir: str, overrides=None):
    """The config a SavedModel was exported with (``assets/config.yaml``), with
    optional ``--set`` overrides; FileNotFoundError if the export stores none."""

    from anet_tf.config import apply_overrides
    from anet_tf.config import config_from_dict
    from anet_tf.io import DamagedFileError
    from anet_tf.io import read_yaml_file

    path = os.path.join(committed_folder(saved_model_dir), "assets", CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{saved_model_dir} stores no assets/{CONFIG_FILE}; give --config")
    raw = read_yaml_file(path, advice="export the model again")
    if not isinstance(raw, dict):
        raise DamagedFileError(f"{path} is damaged (not a mapping of config sections); export the model again")
    cfg = config_from_dict(raw, source=path)
    return apply_overrides(cfg, overrides) if overrides else cfg
