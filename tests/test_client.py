"""The TF Serving side that can be tested without the server binary: the warm-up
file, the files in export/, and the client's REST and gRPC requests, run through the
exported signatures directly and through local stand-ins of TF Serving's two APIs
(loopback only)."""

import base64
import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from anet_tf.export import client
from anet_tf.export import serving_protos as sp
from anet_tf.export.warmup import BATCH_SIZES
from anet_tf.export.warmup import WARMUP_DIR
from anet_tf.export.warmup import WARMUP_FILE
from anet_tf.export.warmup import read_warmup_file

SERVING_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "anet_tf", "export", "serving")


@pytest.fixture(scope="module")
def served(tmp_path_factory, encode_image, random_pixels, tiny_export_run):
    from anet_tf.export.saved_model import export_saved_model

    tmp = str(tmp_path_factory.mktemp("client"))
    net, cfg, dataset = tiny_export_run(tmp)
    path = export_saved_model(net, cfg, dataset, os.path.join(tmp, "models"))
    loaded = tf.saved_model.load(path)
    images = [encode_image(random_pixels(40, 30, seed=s), "JPEG") for s in range(3)]
    direct = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    return path, loaded, images, direct


def _run_signature(loaded, name, inputs):
    """What TF Serving does with a request's inputs: call the signature."""
    return loaded.signatures[name or "serving_default"](
        **{k: tf.constant(v) for k, v in inputs.items()}
    )


def _assert_same(outputs, direct):
    assert sorted(outputs) == sorted(direct)
    for key, value in direct.items():
        value = value.numpy()
        if value.dtype == object:
            got = [v.decode() if isinstance(v, bytes) else str(v) for v in outputs[key]]
            assert got == [v.decode() for v in value]
        else:
            np.testing.assert_allclose(outputs[key], value, atol=1e-6)


# ------------------------------------------------------------------------ warm-up


def test_warmup_file_parses_as_prediction_logs_that_run(served):
    path, loaded, _, _ = served
    records = read_warmup_file(os.path.join(path, WARMUP_DIR, WARMUP_FILE))
    assert len(records) == len(BATCH_SIZES) + 1
    for log in records:
        request = log.predict_log.request
        assert request.model_spec.name == "anet"
        inputs = {k: sp.make_ndarray(v) for k, v in request.inputs.items()}
        out = _run_signature(loaded, request.model_spec.signature_name, inputs)
        assert out["embedding"].shape[0] == next(iter(inputs.values())).shape[0]
    sizes = [
        len(r.predict_log.request.inputs["image_bytes"].string_val)
        for r in records[:-1]
    ]
    assert sizes == list(BATCH_SIZES)


def test_warmup_file_parses_with_tensorflow_serving_api(served):
    prediction_log_pb2 = pytest.importorskip(
        "tensorflow_serving.apis.prediction_log_pb2"
    )
    path = served[0]
    raw = [
        r.numpy()
        for r in tf.data.TFRecordDataset(os.path.join(path, WARMUP_DIR, WARMUP_FILE))
    ]
    for data in raw:
        log = prediction_log_pb2.PredictionLog.FromString(data)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name in ("serving_default", "serve_images")
        for tensor in request.inputs.values():
            assert tf.make_ndarray(tensor).shape[0] >= 1


def test_batching_parameters_match_the_warmup_batch_sizes():
    with open(os.path.join(SERVING_DIR, "batching_parameters.txt")) as fh:
        text = fh.read()
    allowed = [int(v) for v in re.findall(r"allowed_batch_sizes\s*:\s*(\d+)", text)]
    assert allowed == list(BATCH_SIZES)
    max_batch = int(
        re.search(r"max_batch_size\s*\{\s*value\s*:\s*(\d+)", text).group(1)
    )
    assert max_batch == max(BATCH_SIZES)


def test_models_config_is_a_model_server_config():
    with open(os.path.join(SERVING_DIR, "models.config")) as fh:
        text = fh.read()
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        assert 'name: "anet"' in text and 'base_path: "/models/anet"' in text
        return
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "anet",
        "/models/anet",
        "tensorflow",
    )


# ----------------------------------------------------------------- the requests


def test_rest_request_runs_through_the_signature(served):
    _, loaded, images, direct = served
    body = json.loads(json.dumps(client.build_rest_request(images)))
    assert body["signature_name"] == "serving_default"
    files = [base64.b64decode(v["b64"]) for v in body["inputs"]["image_bytes"]]
    assert files == images
    out = _run_signature(loaded, body["signature_name"], {"image_bytes": files})
    _assert_same({k: v.numpy() for k, v in out.items()}, direct)
    assert client.rest_url("localhost:8501", "anet", 3) == (
        "http://localhost:8501/v1/models/anet/versions/3:predict"
    )


def test_grpc_request_runs_through_the_signature(served):
    _, loaded, images, direct = served
    data = client.build_grpc_request(images, "anet", version=1).SerializeToString()
    request = sp.PredictRequest.FromString(data)
    assert request.model_spec.version.value == 1
    inputs = {k: sp.make_ndarray(v) for k, v in request.inputs.items()}
    out = _run_signature(loaded, request.model_spec.signature_name, inputs)
    _assert_same({k: v.numpy() for k, v in out.items()}, direct)


def test_grpc_request_is_a_tensorflow_serving_predict_request(served):
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    images = served[2]
    data = client.build_grpc_request(images, "anet", version=2).SerializeToString()
    request = predict_pb2.PredictRequest.FromString(data)
    assert request.model_spec.name == "anet"
    assert request.model_spec.version.value == 2
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == images
    response = predict_pb2.PredictResponse()
    response.outputs["embedding"].CopyFrom(
        tf.make_tensor_proto(np.eye(2, 3, dtype=np.float32))
    )
    response.outputs["color_label"].CopyFrom(
        tf.make_tensor_proto(np.array([b"red", b"blue"]))
    )
    parsed = client.parse_grpc_response(
        sp.PredictResponse.FromString(response.SerializeToString())
    )
    np.testing.assert_array_equal(parsed["embedding"], np.eye(2, 3))
    assert list(parsed["color_label"]) == ["red", "blue"]


# --------------------------------------------- the client against local stand-ins


def _outputs_json(out):
    return {
        k: [s.decode() for s in v.numpy()]
        if v.dtype == tf.string
        else v.numpy().tolist()
        for k, v in out.items()
    }


@pytest.fixture(scope="module")
def rest_server(served):
    """TF Serving's REST predict API (columnar inputs, {"b64": ...}) on loopback."""
    loaded = served[1]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            match = re.fullmatch(r"/v1/models/anet(/versions/\d+)?:predict", self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                assert match, f"no model at {self.path}"
                inputs = {
                    k: [base64.b64decode(x["b64"]) for x in v]
                    for k, v in body["inputs"].items()
                }
                out = _run_signature(loaded, body.get("signature_name"), inputs)
                status, payload = 200, {"outputs": _outputs_json(out)}
            except Exception as exc:  # what the server reports, as the real one does
                status, payload = 400, {"error": getattr(exc, "message", str(exc))}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def grpc_server(served):
    """TF Serving's PredictionService/Predict on loopback."""
    grpc = pytest.importorskip("grpc")
    loaded = served[1]

    def predict(request, context):
        inputs = {k: sp.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            out = _run_signature(loaded, request.model_spec.signature_name, inputs)
        except tf.errors.InvalidArgumentError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        response = sp.PredictResponse()
        for key, value in out.items():
            response.outputs[key].CopyFrom(sp.make_tensor_proto(value.numpy()))
        return response

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                predict,
                request_deserializer=sp.PredictRequest.FromString,
                response_serializer=sp.PredictResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_rest_client_gets_the_signature_outputs(served, rest_server):
    _, _, images, direct = served
    _assert_same(client.rest_predict(rest_server, images, "anet", version=1), direct)
    with pytest.raises(client.ServingError, match="(?s)HTTP 400.*cannot decode image"):
        client.rest_predict(rest_server, [b"not an image"], "anet")


def test_grpc_client_gets_the_signature_outputs(served, grpc_server):
    _, _, images, direct = served
    _assert_same(client.grpc_predict(grpc_server, images, "anet"), direct)
    with pytest.raises(
        client.ServingError, match="(?s)INVALID_ARGUMENT.*cannot decode image"
    ):
        client.grpc_predict(grpc_server, [b"not an image"], "anet")


def test_client_command_prints_attributes_and_saves_embeddings(
    served, rest_server, tmp_path, capsys
):
    from anet_tf.cli import main

    files = []
    for i, data in enumerate(served[2]):
        files.append(str(tmp_path / f"car{i}.jpg"))
        with open(files[-1], "wb") as fh:
            fh.write(data)
    out = str(tmp_path / "emb.npy")
    assert main(["client", *files, "--server", rest_server, "--out", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "color=" in lines[0] and "type=" in lines[0]
    np.testing.assert_allclose(np.load(out), served[3]["embedding"].numpy(), atol=1e-6)
    assert main(["client", files[0], "--server", "http://127.0.0.1:9"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_client_command_names_the_file_the_server_cannot_decode(
    served, rest_server, tmp_path, capsys
):
    """A PNG that announces 0 x 0 pixels has a valid header and end chunk; the
    served model's error names its index in the request, and the command turns
    that into the file and its place among the images sent, on one line."""
    import struct
    import zlib

    from anet_tf.cli import main

    def chunk(kind, payload):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    empty_png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    files = []
    for i, data in enumerate([served[2][0], served[2][1], empty_png]):
        files.append(str(tmp_path / f"car{i}.{'png' if i == 2 else 'jpg'}"))
        with open(files[-1], "wb") as fh:
            fh.write(data)
    assert main(["client", *files, "--server", rest_server]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"anet-tf client: error: {files[2]} (image 3 of 3): the server cannot decode "
        "it: its header announces no pixels (width or height 0)"
    ), err
    assert client.bad_image("HTTP 400: something else") is None
