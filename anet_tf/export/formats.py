"""The export formats and TFLite quantizations that ``anet-tf export`` and the
``export`` config section accept. This module imports nothing, so the config may
import it."""

FORMATS = ("saved_model", "tflite", "onnx", "tensorrt")
QUANTIZE = ("fp16", "int8")
