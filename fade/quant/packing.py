"""Pack b-bit codes (b = 2..8) into int32 words for export, and unpack them exactly.

Layout (compressed-tensors ``pack-quantized``, which vLLM reads): along the last
dimension, value i occupies bits [i·b, i·b + b) of the little-endian bit stream formed
by consecutive int32 words, i.e. value i starts in word (i·b) // 32 at bit (i·b) % 32.
Packing is dense: for b = 3, 5, 6, 7 a value may straddle two words, and a row of n
values takes ceil(n·b / 32) words; unused high bits of the last word are 0. Values are
unsigned codes 0 .. 2**b − 1 (our ``codes``), stored as-is; compressed-tensors works on
signed int8 (code − 2**(b−1)) and adds the same offset back before packing, so the
stored bits are identical.

``compressed_tensors.compressors.pack_quantized.helpers.pack_to_int32`` /
``unpack_from_int32`` are used when that package is installed (it supports 1..8 bits);
the plain implementation below writes the same layout and is the fallback.
"""

from __future__ import annotations

import math

import torch

from fade.errors import QuantizationError
from fade.quant.grid import MAX_BITS, MIN_BITS

__all__ = ["pack_codes", "unpack_codes", "packed_words"]


def _compressed_tensors_helpers():
    try:  # imported lazily: compressed_tensors pulls in transformers (seconds)
        from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
    except ImportError:
        return None
    return pack_to_int32, unpack_from_int32


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise QuantizationError(f"bits={bits!r} cannot be packed; use an integer from {MIN_BITS} to {MAX_BITS}.")


def packed_words(num_values: int, bits: int) -> int:
    """int32 words needed for ``num_values`` values of ``bits`` bits."""
    return math.ceil(num_values * bits / 32)


def _as_2d(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 1:
        return t.unsqueeze(0)
    if t.dim() != 2:
        raise QuantizationError(f"expected a 1-D or 2-D tensor, got shape {tuple(t.shape)}.")
    return t


def _pack_plain(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Reference packer: OR every value's bits into its word(s), in int64 then wrap."""
    rows, n = codes.shape
    words = packed_words(n, bits)
    start = torch.arange(n, device=codes.device, dtype=torch.int64) * bits
    word, offset = start // 32, start % 32
    values = codes.to(torch.int64)
    # Shifting into an int64 "double word" keeps the straddling high part: its low 32
    # bits go to `word`, the high bits to `word + 1`. Bit ranges never overlap, so a sum
    # is the same as an OR.
    shifted = values << offset
    acc = torch.zeros(rows, words + 1, dtype=torch.int64, device=codes.device)
    acc.index_add_(1, word, shifted & 0xFFFFFFFF)
    acc.index_add_(1, word + 1, shifted >> 32)
    acc = acc[:, :words]
    # Reinterpret as signed int32 (two's complement).
    return torch.where(acc >= 2**31, acc - 2**32, acc).to(torch.int32)


def _unpack_plain(packed: torch.Tensor, bits: int, num_values: int) -> torch.Tensor:
    rows = packed.shape[0]
    unsigned = packed.to(torch.int64) & 0xFFFFFFFF
    padded = torch.cat([unsigned, torch.zeros(rows, 1, dtype=torch.int64, device=packed.device)], dim=1)
    start = torch.arange(num_values, device=packed.device, dtype=torch.int64) * bits
    word, offset = start // 32, start % 32
    double_word = padded[:, word] | (padded[:, word + 1] << 32)
    return ((double_word >> offset) & ((1 << bits) - 1)).to(torch.uint8)


def pack_codes(codes: torch.Tensor, bits: int, *, use_compressed_tensors: bool = True) -> torch.Tensor:
    """Pack unsigned codes [rows, n] (or [n]) along the last dim -> int32 [rows, ceil(n·b/32)]."""
    _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
        raise QuantizationError(f"codes must be an integer tensor, got {codes.dtype}.")
    squeeze = codes.dim() == 1
    codes = _as_2d(codes)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > (1 << bits) - 1):
        raise QuantizationError(
            f"codes span [{int(codes.min())}, {int(codes.max())}] but {bits}-bit codes must lie in "
            f"[0, {(1 << bits) - 1}]; pass the unsigned codes from the quantizer."
        )
    helpers = _compressed_tensors_helpers() if use_compressed_tensors else None
    if helpers is not None:
        signed = (codes.to(torch.int16) - (1 << (bits - 1))).to(torch.int8)
        packed = helpers[0](signed, bits, packed_dim=1)
    else:
        packed = _pack_plain(codes, bits)
    return packed[0] if squeeze else packed


def unpack_codes(packed: torch.Tensor, bits: int, num_values: int, *, use_compressed_tensors: bool = True) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int32 [rows, words] -> uint8 codes [rows, num_values]."""
    _check_bits(bits)
    if packed.dtype != torch.int32:
        raise QuantizationError(f"packed codes must be int32, got {packed.dtype}.")
    squeeze = packed.dim() == 1
    packed = _as_2d(packed)
    if packed.shape[1] != packed_words(num_values, bits):
        raise QuantizationError(
            f"{packed.shape[1]} packed words do not hold {num_values} {bits}-bit values "
            f"(expected {packed_words(num_values, bits)}); check num_values and bits."
        )
    helpers = _compressed_tensors_helpers() if use_compressed_tensors else None
    if helpers is not None:
        signed = helpers[1](packed, bits, torch.Size((packed.shape[0], num_values)), packed_dim=1)
        codes = (signed.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8)
    else:
        codes = _unpack_plain(packed, bits, num_values)
    return codes[0] if squeeze else codes
