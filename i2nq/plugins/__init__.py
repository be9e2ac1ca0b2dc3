"""GPU code for the ai.i2nq ops: CUDA kernels (csrc/), the TensorRT plugin library, the torch extension.

Nothing here imports torch or tensorrt at import time; each entry point imports what it needs.
"""

from __future__ import annotations

from pathlib import Path

PLUGINS = Path(__file__).resolve().parent
CSRC = PLUGINS / "csrc"
#: Version of the ai.i2nq op contract and of the TensorRT plugin creators (plugin_version).
PLUGIN_VERSION = "1"
#: TensorRT plugin namespace of the creators (plugin_namespace).
PLUGIN_NAMESPACE = "i2nq"
