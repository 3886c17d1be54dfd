"""A byte-level tokenizer built in code, for randomly initialised test models.

Random models need a tokenizer that the family's real processor code can use, but no hub
files exist offline. 256 byte symbols (GPT-2's byte-to-unicode alphabet, so any text
round-trips) plus the family's special tokens are enough for the same code path to run.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def byte_vocab() -> dict[str, int]:
    """GPT-2's reversible byte → printable unicode mapping, as a vocabulary of 256 symbols."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    symbols = {byte: chr(code) for byte, code in zip(printable, codes)}
    return {symbols[byte]: byte for byte in range(256)}
