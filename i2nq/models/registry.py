"""Named architectures and the model descriptor callers read instead of guessing."""

from __future__ import annotations

from i2nq.errors import I2NQError
from i2nq.models.edsr import EDSR
from i2nq.models.spandrel_models import SpandrelSR
from i2nq.models.srresnet import SRResNet

SRModel = EDSR | SRResNet | SpandrelSR  # the model classes i2nq quantizes, exports and runs

# name -> constructor arguments. edsr-small is the CPU-demo variant we ship; its bicubic skip makes a
# small model train to a useful quality in CPU hours.
ARCHS: dict[str, dict] = {
    "edsr": dict(n_blocks=32, n_feats=256, res_scale=0.1, skip="none"),  # the paper's EDSR
    "edsr-baseline": dict(n_blocks=16, n_feats=64, res_scale=1.0, skip="none"),
    "edsr-small": dict(n_blocks=8, n_feats=32, res_scale=1.0, skip="bicubic"),
    "srresnet": dict(n_blocks=16, n_feats=64, res_scale=1.0),  # BasicSR's MSRResNet
}
FAMILIES: dict[str, type[SRModel]] = {"srresnet": SRResNet}  # the others are EDSR
SCALES = (2, 3, 4)


def build(arch: str, scale: int = 4, **overrides) -> SRModel:
    """A freshly initialized float model of a registered architecture."""
    if arch not in ARCHS:
        raise I2NQError(f"unknown arch {arch!r} (known: {', '.join(sorted(ARCHS))})")
    if scale not in SCALES:
        raise I2NQError(f"unsupported scale {scale} (supported: {', '.join(map(str, SCALES))})")
    return FAMILIES.get(arch, EDSR)(scale=scale, arch=arch, **{**ARCHS[arch], **overrides})
