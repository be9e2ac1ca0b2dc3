"""The I²NQ quantizers: nonuniform learned codebooks, FSWA weights, STE, the uniform baseline, packing."""

from __future__ import annotations

from i2nq.quant.api import (I2NQConfig, QuantConfig, UniformConfig, calibrate_, config_from_dict,
                            head_and_tail_float, is_quant_param, quantize_, quantized_sites, restore_sites_,
                            site_record)
from i2nq.quant.codebook import NonuniformCodebook, UniformCodebook
from i2nq.quant.conv import QuantConv2d
from i2nq.quant.functional import codes, lloyd_max, nuquant, nuquant_ref, thresholds
from i2nq.quant.packing import BITS, pack_codes, unpack_codes
from i2nq.quant.quantizers import ActQuantizer, WeightQuantizer, code_entropy

__all__ = ["BITS", "ActQuantizer", "I2NQConfig", "NonuniformCodebook", "QuantConfig", "QuantConv2d",
           "UniformCodebook", "UniformConfig", "WeightQuantizer", "calibrate_", "code_entropy", "codes",
           "config_from_dict", "head_and_tail_float", "is_quant_param", "lloyd_max", "nuquant", "nuquant_ref", "pack_codes",
           "quantize_", "quantized_sites", "restore_sites_", "site_record", "thresholds", "unpack_codes"]
