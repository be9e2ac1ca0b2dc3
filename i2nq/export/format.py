"""The export file format in one place (torch- and onnx-free, so the CLI can import it cheaply)."""

from __future__ import annotations

FLAVORS = {"portable": "float32", "tensorrt": "float16"}  # flavor -> dtype of the graph, input and output
OPSETS = range(17, 24)  # local functions need >= 15; 17..23 are checked and run by ONNX Runtime here
DEFAULT_OPSET = 18  # torch's exporter writes opset 18 natively; ONNX Runtime >= 1.14, TensorRT >= 8.6
INPUT_LAYOUT = "NCHW;RGB;float[0,1]"
