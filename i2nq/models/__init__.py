"""SR architectures, a registry of named configurations, and checkpoint load/save."""

from __future__ import annotations

from i2nq.models.checkpoint import load, save
from i2nq.models.info import ModelInfo
from i2nq.models.registry import ARCHS, build

__all__ = ["ARCHS", "ModelInfo", "build", "load", "save"]
