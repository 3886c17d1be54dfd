"""Pure tensor maths of layer-wise post-training quantization (no model knowledge).

Weights are [out_features, in_features]; statistics are [in_features, in_features].
"""

from fade.quant.damping import damped_cholesky
from fade.quant.gptq import GPTQResult, gptq_quantize
from fade.quant.grid import (
    GridSpec,
    check_group_fits,
    dequantize,
    expand_groups,
    fake_quantize,
    fit_scales,
    group_index,
    num_groups,
    quantize_codes,
)
from fade.quant.hessian import HessianAccumulator, QEPStatistics
from fade.quant.packing import pack_codes, packed_words, unpack_codes
from fade.quant.qep import DEFAULT_QEP_DAMP, QEPResult, qep_target
from fade.quant.rtn import QuantResult, rtn_quantize

__all__ = [
    "GridSpec",
    "check_group_fits",
    "num_groups",
    "group_index",
    "expand_groups",
    "fit_scales",
    "quantize_codes",
    "dequantize",
    "fake_quantize",
    "QuantResult",
    "rtn_quantize",
    "HessianAccumulator",
    "QEPStatistics",
    "GPTQResult",
    "gptq_quantize",
    "QEPResult",
    "qep_target",
    "DEFAULT_QEP_DAMP",
    "damped_cholesky",
    "pack_codes",
    "unpack_codes",
    "packed_words",
]
