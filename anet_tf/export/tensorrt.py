"""TensorRT engines built from the ONNX export.

TensorFlow 2.18 and later ship no TF-TRT (the 2.21 wheels report "Tensorflow has
not been built with TensorRT support"), so the engine is built by TensorRT's own
ONNX parser from ``model.onnx`` (:mod:`anet_tf.export.onnx`). The IBN InstanceNorm
reaches the parser as ReduceMean/Sub/Mul/Sqrt nodes, so the
``InstanceNormalization`` plugin that FastReID exports miss is not needed.

Engines are specific to the GPU model and TensorRT version that built them; build
on the machine (or the same GPU) that serves. Two are written: ``model_fp32.engine``
(TF32 off) and ``model_fp16.engine``, each with an optimisation profile for batch
1..``max_batch``. TensorRT 10 makes the fp16 engine with ``BuilderFlag.FP16``;
TensorRT 11 removed weak typing, so there the fp16 engine is built from an fp16
copy of the ONNX model (``model_fp16.onnx``, float32 input and outputs, made with
``onnxconverter-common``).

Needs an NVIDIA GPU with its driver, the ``tensorrt`` Python package (for example
``pip install tensorrt-cu12``), and PyTorch or ``cuda-python`` only to *run* an
engine (:class:`TensorRTModel`, for the parity check). Without them
:func:`unavailable_reason` says what is missing and the export refuses the format.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

ENGINE_FILES = {"fp32": "model_fp32.engine", "fp16": "model_fp16.engine"}
INPUT_NAME = "images"
MAX_BATCH = 32
OPT_BATCH = 8
WORKSPACE_BYTES = 1 << 30


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot build engines on this machine (no package or no GPU)."""


def unavailable_reason() -> str | None:
    """None where engines can be built here, else why not, for people."""
    try:
        import tensorrt as trt
    except ImportError:
        gpu = "an NVIDIA GPU was found" if _has_nvidia_gpu() else "no NVIDIA GPU found"
        return (
            "the TensorRT format needs an NVIDIA GPU and the `tensorrt` Python "
            f"package; `import tensorrt` failed ({gpu}). TF-TRT is not an option: "
            "TensorFlow 2.18+ is not built with TensorRT. Install TensorRT (e.g. "
            "`pip install tensorrt-cu12`) on the GPU machine that will serve and run "
            "the export there, or build the engine from the ONNX file with "
            "`trtexec --onnx=model.onnx --saveEngine=model.engine --fp16 "
            "--minShapes=images:1xHxWx3 --optShapes=images:8xHxWx3 "
            "--maxShapes=images:32xHxWx3` (H, W: the model's input size; see "
            "SERVING.md beside the export)"
        )
    if not _has_nvidia_gpu():
        return (
            "the TensorRT format needs an NVIDIA GPU; tensorrt "
            f"{trt.__version__} is installed but no GPU is visible (nvidia-smi / "
            "/dev/nvidia0 not found)"
        )
    return None


def _has_nvidia_gpu() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def check_available() -> None:
    """Raise :class:`TensorRTUnavailable` with the reason where engines cannot be built."""
    reason = unavailable_reason()
    if reason:
        raise TensorRTUnavailable(reason)


def fp16_onnx(onnx_path: str, out_path: str) -> str:
    """An fp16 copy of an ONNX model that keeps float32 inputs and outputs
    (onnxconverter-common), for TensorRT 11's strongly typed fp16 engine."""
    import warnings

    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ImportError(
            "TensorRT 11 removed BuilderFlag.FP16; the fp16 engine is built from an "
            "fp16 ONNX model made with onnxconverter-common: pip install "
            "onnxconverter-common (or convert with ModelOpt AutoCast)"
        ) from None
    with warnings.catch_warnings():
        # Constants below fp16's range (e.g. 1e-12 epsilons) are clamped: expected.
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(
            onnx.load(onnx_path), keep_io_types=True
        )
    onnx.save(model, out_path)
    return out_path


def build_engine(
    onnx_path: str,
    engine_path: str,
    *,
    image_size,
    fp16: bool = False,
    max_batch: int = MAX_BATCH,
) -> str:
    """Parse ``onnx_path`` and write a serialized engine to ``engine_path``.

    Args:
        onnx_path: the exported ``model.onnx`` (input ``images`` [N, H, W, 3]).
        engine_path: where the engine goes.
        image_size: (H, W) of the model input.
        fp16: allow FP16 kernels.
        max_batch: the largest batch of the optimisation profile.

    Raises:
        TensorRTUnavailable: no TensorRT or no GPU here.
        RuntimeError: the parser rejected a node (its errors are listed) or the
            build failed.
    """
    check_available()
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    # TensorRT 11 builds strongly typed networks only (BuilderFlag.FP16 is gone):
    # the precision comes from the model, so fp16 parses an fp16 copy of it.
    strongly_typed = major >= 11
    if fp16 and strongly_typed:
        onnx_path = fp16_onnx(onnx_path, os.path.splitext(engine_path)[0] + ".onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise TensorRTUnavailable("tensorrt.Builder could not start (no usable GPU)")
    # TensorRT 10+ networks are always explicit-batch; older versions need the flag.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    flags = 0 if flag is None or major >= 10 else 1 << int(flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    elif not fp16 and hasattr(trt.BuilderFlag, "TF32"):
        # fp32 means fp32: TF32 tensor-core matmuls/convolutions keep 10 mantissa bits.
        config.clear_flag(trt.BuilderFlag.TF32)
    h, w = image_size
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME,
        (1, h, w, 3),
        (min(OPT_BATCH, max_batch), h, w, 3),
        (max_batch, h, w, 3),
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    os.makedirs(os.path.dirname(os.path.abspath(engine_path)), exist_ok=True)
    with open(engine_path, "wb") as fh:
        fh.write(serialized)
    return engine_path


def export_tensorrt(onnx_path: str, out_dir: str, image_size) -> dict[str, str]:
    """Build the fp32 and fp16 engines of ``onnx_path`` into ``out_dir``."""
    check_available()
    return {
        precision: build_engine(
            onnx_path,
            os.path.join(out_dir, name),
            image_size=image_size,
            fp16=precision == "fp16",
        )
        for precision, name in ENGINE_FILES.items()
    }


class TensorRTModel:
    """Run a serialized engine; ``model(pixels)`` -> output dict (NumPy).

    Device memory comes from PyTorch (present on most GPU machines).

    Args:
        engine_path: a file written by :func:`build_engine`.
    """

    def __init__(self, engine_path: str):
        check_available()
        import tensorrt as trt

        try:
            import torch
        except ImportError:
            raise ImportError("running a TensorRT engine here needs PyTorch") from None
        self._torch = torch
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_path, "rb") as fh:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: TensorRT could not load the engine")
        self.context = self.engine.create_execution_context()
        names = [
            self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
        ]
        self.output_names = [
            n
            for n in names
            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
        ]

    def __call__(self, pixels) -> dict[str, np.ndarray]:
        torch = self._torch
        pixels = np.ascontiguousarray(pixels, np.float32)
        x = torch.from_numpy(pixels).cuda()
        self.context.set_input_shape(INPUT_NAME, tuple(pixels.shape))
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}

    def embed(self, pixels) -> np.ndarray:
        return self(pixels)["embedding"]
