"""The few TensorFlow Serving messages a client and the warm-up file need.

``tensorflow-serving-api`` holds these messages, but it requires the full
``tensorflow`` distribution, which pip would install on top of ``tensorflow-cpu``;
a client needs neither. This module declares the same messages (same package, names
and field numbers as ``tensorflow_serving/apis/{model,predict,prediction_log}.proto``
and ``tensorflow/core/framework/{tensor,tensor_shape}.proto`` of TF Serving 2.21,
checked against ``tensorflow-serving-api`` in ``tests/test_client.py``) in a private
descriptor pool, so they never collide with the real ones when both are imported.
Only the fields we use are declared; protobuf keeps unknown fields when parsing.

Besides protobuf it needs only NumPy: ``make_tensor_proto`` / ``make_ndarray`` cover
the dtypes a predict call carries (float32, uint8, int32, int64, string).
"""

from __future__ import annotations

import numpy as np
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto

# tensorflow/core/framework/types.proto
DT_FLOAT = 1
DT_INT32 = 3
DT_UINT8 = 4
DT_STRING = 7
DT_INT64 = 9
_DTYPES = {
    DT_FLOAT: np.dtype(np.float32),
    DT_INT32: np.dtype(np.int32),
    DT_UINT8: np.dtype(np.uint8),
    DT_INT64: np.dtype(np.int64),
}
_DTYPE_OF_NUMPY = {v: k for k, v in _DTYPES.items()}


def _field(name, number, ftype, type_name="", repeated=False, oneof=None):
    f = _F(name=name, number=number, type=ftype)
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof
    return f


def _message(name, fields, nested=(), oneofs=()):
    m = descriptor_pb2.DescriptorProto(name=name)
    m.field.extend(fields)
    m.nested_type.extend(nested)
    for oneof in oneofs:
        m.oneof_decl.add(name=oneof)
    return m


def _map_entry(name, value_type):
    entry = _message(
        name,
        [
            _field("key", 1, _F.TYPE_STRING),
            _field("value", 2, _F.TYPE_MESSAGE, value_type),
        ],
    )
    entry.options.map_entry = True
    return entry


# long: the message declarations of the TF Serving protos, data written as code, read like the .proto files.
def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)

    tensor = descriptor_pb2.FileDescriptorProto(
        name="anet_tf/tensorflow_tensor.proto", package="tensorflow", syntax="proto3"
    )
    tensor.message_type.extend(
        [
            _message(
                "TensorShapeProto",
                [
                    _field(
                        "dim",
                        2,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.TensorShapeProto.Dim",
                        True,
                    ),
                    _field("unknown_rank", 3, _F.TYPE_BOOL),
                ],
                nested=[
                    _message(
                        "Dim",
                        [
                            _field("size", 1, _F.TYPE_INT64),
                            _field("name", 2, _F.TYPE_STRING),
                        ],
                    )
                ],
            ),
            _message(
                "TensorProto",
                [
                    # An enum (DataType) on the wire is a varint, as int32 is.
                    _field("dtype", 1, _F.TYPE_INT32),
                    _field(
                        "tensor_shape",
                        2,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.TensorShapeProto",
                    ),
                    _field("version_number", 3, _F.TYPE_INT32),
                    _field("tensor_content", 4, _F.TYPE_BYTES),
                    _field("float_val", 5, _F.TYPE_FLOAT, repeated=True),
                    _field("double_val", 6, _F.TYPE_DOUBLE, repeated=True),
                    _field("int_val", 7, _F.TYPE_INT32, repeated=True),
                    _field("string_val", 8, _F.TYPE_BYTES, repeated=True),
                    _field("int64_val", 10, _F.TYPE_INT64, repeated=True),
                ],
            ),
        ]
    )
    pool.Add(tensor)

    serving = descriptor_pb2.FileDescriptorProto(
        name="anet_tf/tensorflow_serving_apis.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto", tensor.name],
    )
    serving.message_type.extend(
        [
            _message(
                "ModelSpec",
                [
                    _field("name", 1, _F.TYPE_STRING),
                    _field(
                        "version",
                        2,
                        _F.TYPE_MESSAGE,
                        ".google.protobuf.Int64Value",
                        oneof=0,
                    ),
                    _field("signature_name", 3, _F.TYPE_STRING),
                    _field("version_label", 4, _F.TYPE_STRING, oneof=0),
                ],
                oneofs=["version_choice"],
            ),
            _message(
                "PredictRequest",
                [
                    _field(
                        "model_spec",
                        1,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.ModelSpec",
                    ),
                    _field(
                        "inputs",
                        2,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.PredictRequest.InputsEntry",
                        repeated=True,
                    ),
                    _field("output_filter", 3, _F.TYPE_STRING, repeated=True),
                ],
                nested=[_map_entry("InputsEntry", ".tensorflow.TensorProto")],
            ),
            _message(
                "PredictResponse",
                [
                    _field(
                        "outputs",
                        1,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.PredictResponse.OutputsEntry",
                        repeated=True,
                    ),
                    _field(
                        "model_spec",
                        2,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.ModelSpec",
                    ),
                ],
                nested=[_map_entry("OutputsEntry", ".tensorflow.TensorProto")],
            ),
            _message(
                "PredictLog",
                [
                    _field(
                        "request",
                        1,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.PredictRequest",
                    ),
                    _field(
                        "response",
                        2,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.PredictResponse",
                    ),
                ],
            ),
            _message(
                "PredictionLog",
                [
                    _field(
                        "predict_log",
                        6,
                        _F.TYPE_MESSAGE,
                        ".tensorflow.serving.PredictLog",
                        oneof=0,
                    )
                ],
                oneofs=["log_type"],
            ),
        ]
    )
    pool.Add(serving)
    return pool


_POOL = _build_pool()


def _cls(full_name: str):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


TensorShapeProto = _cls("tensorflow.TensorShapeProto")
TensorProto = _cls("tensorflow.TensorProto")
ModelSpec = _cls("tensorflow.serving.ModelSpec")
PredictRequest = _cls("tensorflow.serving.PredictRequest")
PredictResponse = _cls("tensorflow.serving.PredictResponse")
PredictLog = _cls("tensorflow.serving.PredictLog")
PredictionLog = _cls("tensorflow.serving.PredictionLog")

# The gRPC method of tensorflow_serving/apis/prediction_service.proto.
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def make_tensor_proto(values) -> TensorProto:
    """A TensorProto of a NumPy array: bytes/str arrays as DT_STRING (``string_val``),
    float32/uint8/int32/int64 as ``tensor_content`` (what ``tf.make_tensor_proto``
    writes for numeric arrays).

    Raises:
        TypeError: another dtype, naming it and the ones supported.
    """
    array = np.asarray(values)
    proto = TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=int(size))
    if array.dtype.kind in "SUO":
        proto.dtype = DT_STRING
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v)
            for v in array.reshape(-1)
        )
        return proto
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype not in _DTYPE_OF_NUMPY:
        raise TypeError(
            f"cannot send a {array.dtype} array; use float32, uint8, int32, int64 or "
            f"bytes"
        )
    proto.dtype = _DTYPE_OF_NUMPY[array.dtype]
    proto.tensor_content = np.ascontiguousarray(
        array, array.dtype.newbyteorder("<")
    ).tobytes()
    return proto


def make_ndarray(proto: TensorProto) -> np.ndarray:
    """The NumPy array of a TensorProto, from ``tensor_content`` or the typed
    ``*_val`` fields (TF Serving answers with either), strings as an object array of
    bytes.

    Raises:
        TypeError: a dtype this module does not decode.
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if proto.dtype == DT_STRING:
        values = list(proto.string_val)
        if len(values) == 1 and count > 1:
            values = values * count
        return np.array(values, dtype=object).reshape(shape)
    if proto.dtype not in _DTYPES:
        raise TypeError(f"cannot decode a tensor of DataType {proto.dtype}")
    dtype = _DTYPES[proto.dtype]
    if proto.tensor_content:
        return (
            np.frombuffer(proto.tensor_content, dtype.newbyteorder("<"))
            .astype(dtype)
            .reshape(shape)
        )
    field = {DT_FLOAT: proto.float_val, DT_INT64: proto.int64_val}.get(
        proto.dtype, proto.int_val
    )
    values = np.asarray(list(field), dtype)
    if values.size == 1 and count > 1:
        values = np.full(count, values[0], dtype)
    if values.size == 0 and count > 0:
        values = np.zeros(count, dtype)
    return values.reshape(shape)
