"""int32 packing of b-bit codes: exact round trips and the documented bit layout."""

import pytest
import torch

from fade.errors import QuantizationError
from fade.quant import pack_codes, packed_words, unpack_codes

LENGTHS = [1, 7, 31, 32, 33, 100, 257]


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("use_ct", [True, False], ids=["compressed_tensors", "plain"])
def test_round_trip_every_width_and_ragged_length(bits, use_ct):
    g = torch.Generator().manual_seed(bits)
    for n in LENGTHS:
        codes = torch.randint(0, 2**bits, (5, n), generator=g).to(torch.uint8)
        codes[0, :] = 2**bits - 1  # all-ones row: sign bit of the int32 words is used
        packed = pack_codes(codes, bits, use_compressed_tensors=use_ct)
        assert packed.dtype == torch.int32 and packed.shape == (5, packed_words(n, bits))
        assert torch.equal(unpack_codes(packed, bits, n, use_compressed_tensors=use_ct), codes)


@pytest.mark.parametrize("bits", range(2, 9))
def test_compressed_tensors_and_plain_layouts_agree(bits):
    pytest.importorskip("compressed_tensors")
    g = torch.Generator().manual_seed(100 + bits)
    codes = torch.randint(0, 2**bits, (3, 77), generator=g)
    ct = pack_codes(codes, bits)
    plain = pack_codes(codes, bits, use_compressed_tensors=False)
    assert torch.equal(ct, plain)
    assert torch.equal(unpack_codes(ct, bits, 77, use_compressed_tensors=False), codes.to(torch.uint8))


def _words_as_bits(packed):
    """Little-endian bit stream of int32 words, bit k of word w at position 32 w + k."""
    return [(int(v) & 0xFFFFFFFF) >> k & 1 for v in packed for k in range(32)]


@pytest.mark.parametrize("bits", [3, 4, 5, 8])
def test_bit_layout_value_i_at_bit_i_times_b(bits):
    codes = torch.tensor([(7 * i + 3) % 2**bits for i in range(40)])
    stream = _words_as_bits(pack_codes(codes, bits))
    for i, v in enumerate(codes.tolist()):
        assert sum(stream[i * bits + k] << k for k in range(bits)) == v
    assert not any(stream[40 * bits :])  # padding bits are zero


def test_known_words():
    assert pack_codes(torch.arange(1, 9), 4).tolist() == [0x87654321 - 2**32]
    # 3-bit: value 10 occupies bits 30..32 and straddles into the second word
    codes = torch.zeros(11, dtype=torch.int64)
    codes[10] = 0b111
    assert pack_codes(codes, 3).tolist() == [-(2**31) + 2**30, 1]


def test_bad_inputs_raise():
    with pytest.raises(QuantizationError, match=r"\[0, 7\]"):
        pack_codes(torch.tensor([0, 8]), 3)
    with pytest.raises(QuantizationError, match="bits=9"):
        pack_codes(torch.tensor([0, 1]), 9)
    with pytest.raises(QuantizationError, match="float32"):
        pack_codes(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(QuantizationError, match="expected 2"):
        unpack_codes(torch.zeros(3, dtype=torch.int32), 4, 10)
