"""ONNX export of I²NQ models: ai.i2nq custom ops with standard-op function bodies, flavors, verification.

Attributes load lazily, so `i2nq.export.commands` (imported by the CLI) pulls in neither torch nor onnx.
"""

from __future__ import annotations

__all__ = ["ExportResult", "VerifyReport", "export_onnx", "to_onnx", "verify_onnx"]


def __getattr__(name: str):
    if name in ("ExportResult", "export_onnx", "to_onnx"):
        from i2nq.export import onnx_export

        return getattr(onnx_export, name)
    if name in ("VerifyReport", "verify_onnx"):
        from i2nq.export import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'i2nq.export' has no attribute {name!r}")
