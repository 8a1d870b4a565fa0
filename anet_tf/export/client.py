"""A small TF Serving client: REST with the standard library, gRPC with grpcio.

REST (port 8501) posts ``{"signature_name": ..., "inputs": {"image_bytes":
[{"b64": ...}, ...]}}`` to ``/v1/models/<name>[/versions/<v>]:predict``; gRPC (port
8500) calls ``tensorflow.serving.PredictionService/Predict`` with a PredictRequest
built from :mod:`anet_tf.export.serving_protos`, so neither path needs TensorFlow or
``tensorflow-serving-api`` (which would pull the full ``tensorflow`` on top of
``tensorflow-cpu``). gRPC needs ``grpcio``, a TensorFlow dependency that a
client-only machine installs alone.

Both return the outputs of the ``serving_default`` signature as NumPy arrays:
``embedding`` float32 [N, D], ``<attribute>_probs`` float32 [N, m], and
``<attribute>_label`` as an array of str.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence

import numpy as np

from anet_tf.export import serving_protos as sp

DEFAULT_REST = "http://localhost:8501"
DEFAULT_GRPC = "localhost:8500"
SIGNATURE = "serving_default"
INPUT_BYTES = "image_bytes"
# gRPC's default 4 MB message limit is too small for a batch of photos.
GRPC_MESSAGE_BYTES = 64 * 1024 * 1024


class ServingError(RuntimeError):
    """The server answered with an error (its message is kept)."""


# What the SavedModel's serving_default says of an image it cannot decode.
_DECODE_FAILURE = re.compile(r"cannot decode image image_bytes\[(\d+)\]: ([^\n\]]+)")


def bad_image(message: str) -> tuple[int, str] | None:
    """(index in the request, reason) of the image a server's error message says it
    could not decode, or None when the error is about something else."""
    match = _DECODE_FAILURE.search(message)
    return (int(match.group(1)), match.group(2).strip()) if match else None


def read_images(paths: Sequence[str]) -> list[bytes]:
    """The files as they are on disk (the server decodes them)."""
    images = []
    for path in paths:
        with open(path, "rb") as fh:
            images.append(fh.read())
    return images


def rest_url(server: str, model_name: str, version: int | None = None) -> str:
    """``<server>/v1/models/<name>[/versions/<v>]:predict``."""
    server = server.rstrip("/")
    if "://" not in server:
        server = "http://" + server
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return f"{server}{path}:predict"


def build_rest_request(images: Sequence[bytes], signature: str = SIGNATURE) -> dict:
    """The JSON body of a REST predict call on encoded images (columnar format;
    binary values go base64-encoded as ``{"b64": ...}``)."""
    return {
        "signature_name": signature,
        "inputs": {
            INPUT_BYTES: [{"b64": base64.b64encode(b).decode("ascii")} for b in images]
        },
    }


def build_rest_pixels_request(pixels, signature: str = "serve_images") -> dict:
    """The JSON body of a REST call on decoded pixels [N, H, W, 3] (``serve_images``)."""
    return {
        "signature_name": signature,
        "inputs": {"images": np.asarray(pixels, np.float32).tolist()},
    }


def parse_rest_response(payload: dict) -> dict[str, np.ndarray]:
    """The ``outputs`` of a REST predict answer as NumPy arrays."""
    if "error" in payload:
        raise ServingError(payload["error"])
    outputs = payload.get("outputs")
    if not isinstance(outputs, dict):
        raise ServingError(
            f"unexpected REST answer (no 'outputs' dict): {payload!r:.200}"
        )
    return {key: _as_array(key, value) for key, value in outputs.items()}


def _as_array(key: str, value) -> np.ndarray:
    if key.endswith("_label"):
        return np.array(value, dtype=str)
    return np.asarray(value, np.float32)


def rest_predict(
    server: str,
    images: Sequence[bytes],
    model_name: str = "anet",
    version: int | None = None,
    signature: str = SIGNATURE,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """POST the images to TF Serving's REST API and return the outputs.

    Raises:
        ServingError: the server's error message (HTTP 4xx/5xx), or why it could
            not be reached.
    """
    body = json.dumps(build_rest_request(images, signature)).encode("utf-8")
    request = urllib.request.Request(
        rest_url(server, model_name, version),
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text
        raise ServingError(
            f"HTTP {exc.code} from {request.full_url}: {message}"
        ) from None
    except urllib.error.URLError as exc:
        raise ServingError(f"cannot reach {request.full_url}: {exc.reason}") from None
    return parse_rest_response(payload)


def build_grpc_request(
    images: Sequence[bytes],
    model_name: str = "anet",
    version: int | None = None,
    signature: str = SIGNATURE,
):
    """A ``tensorflow.serving.PredictRequest`` on encoded images."""
    request = sp.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT_BYTES].CopyFrom(
        sp.make_tensor_proto(np.array(list(images), dtype=object))
    )
    return request


def parse_grpc_response(response) -> dict[str, np.ndarray]:
    """The outputs of a PredictResponse as NumPy arrays (labels as str)."""
    outputs = {}
    for key, proto in response.outputs.items():
        array = sp.make_ndarray(proto)
        if array.dtype == object:
            array = np.array([v.decode("utf-8") for v in array.reshape(-1)], dtype=str)
        outputs[key] = array
    return outputs


def grpc_predict(
    target: str,
    images: Sequence[bytes],
    model_name: str = "anet",
    version: int | None = None,
    signature: str = SIGNATURE,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """Call ``PredictionService/Predict`` at ``target`` (host:port).

    Raises:
        ImportError: grpcio is not installed.
        ServingError: the gRPC status and message of a failed call.
    """
    try:
        import grpc
    except ImportError:
        raise ImportError("the gRPC client needs grpcio: pip install grpcio") from None
    options = [
        ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
    ]
    request = build_grpc_request(images, model_name, version, signature)
    with grpc.insecure_channel(target, options=options) as channel:
        predict = channel.unary_unary(
            sp.PREDICT_METHOD,
            request_serializer=sp.PredictRequest.SerializeToString,
            response_deserializer=sp.PredictResponse.FromString,
        )
        try:
            response = predict(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise ServingError(
                f"gRPC {exc.code().name} from {target}: {exc.details()}"
            ) from None
    return parse_grpc_response(response)


def format_predictions(names: Sequence[str], outputs: dict[str, np.ndarray]) -> str:
    """One line per image: its top attribute labels (with probability) and the
    embedding's size."""
    attributes = sorted(k[: -len("_label")] for k in outputs if k.endswith("_label"))
    lines = []
    for i, name in enumerate(names):
        parts = [name]
        for a in attributes:
            p = outputs.get(f"{a}_probs")
            prob = f" ({p[i].max():.2f})" if p is not None else ""
            parts.append(f"{a}={outputs[f'{a}_label'][i]}{prob}")
        if "embedding" in outputs:
            parts.append(f"embedding[{outputs['embedding'].shape[-1]}]")
        lines.append("  ".join(parts))
    return "\n".join(lines)
