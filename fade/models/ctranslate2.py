"""Reader for CTranslate2's ``model.bin`` (binary versions 4 to 6). Pure: no model knowledge.

The layout is the one written by ``ModelSpec._serialize`` in CTranslate2's
``python/ctranslate2/specs/model_spec.py`` and read back by ``Model::load`` in
``src/models/model.cc``. All integers are little-endian (CTranslate2 writes native ``struct``
formats; every platform it ships for is little-endian)::

    u32  binary_version
    str  spec_name                 (e.g. "WhisperSpec")
    u32  spec_revision
    u32  num_variables
    num_variables times:
        str  name                  ("decoder/layer_0/ffn/linear_0/weight")
        u8   rank
        u32  dims[rank]
        u8   dtype_id              (index into _DTYPES below)
        u32  num_bytes
        u8   data[num_bytes]       (row-major)
    u32  num_aliases
    num_aliases times:
        str  alias                 (e.g. "decoder/projection/weight")
        str  target                (the variable it shares storage with)

    str := u16 length (including a trailing NUL), then the UTF-8 bytes and the NUL.

Versions 4, 5 and 6 share this layout (v4 introduced the explicit dtype id; v5 only changed how
the runtime rounds when quantizing; v6 added bfloat16 and new dtypes to the enum). Versions
below 4 store an item size instead of a dtype id and are rejected rather than guessed at.

Scalars (rank 0) hold spec attributes such as ``num_heads`` or an activation enum; strings in a
spec are stored as int8 arrays of UTF-8 bytes. Both come back as ordinary tensors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from fade.errors import ModelSourceError

SUPPORTED_BINARY_VERSIONS = (4, 5, 6)

# Index = CTranslate2's DataType enum value (include/ctranslate2/types.h, mirrored by
# _dtype_to_type_id in model_spec.py). bfloat16 has no numpy dtype: it is read as uint16 bits
# and reinterpreted by torch, which keeps it bit-exact.
_DTYPES: tuple[tuple[str, np.dtype, torch.dtype], ...] = (
    ("float32", np.dtype("<f4"), torch.float32),
    ("int8", np.dtype("i1"), torch.int8),
    ("int16", np.dtype("<i2"), torch.int16),
    ("int32", np.dtype("<i4"), torch.int32),
    ("float16", np.dtype("<f2"), torch.float16),
    ("bfloat16", np.dtype("<u2"), torch.bfloat16),
)

ModelBinSource = Union[bytes, bytearray, memoryview, str, PathLike, Sequence[Union[str, PathLike]]]


@dataclass
class CT2Model:
    """The content of one ``model.bin``."""

    source: str
    binary_version: int
    spec_name: str
    spec_revision: int
    #: Variable name -> tensor, in file order, with the stored dtype and shape.
    variables: dict[str, torch.Tensor]
    #: Alias name -> name of the variable it points to (CTranslate2 de-duplicates tied weights).
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        """A variable by name, following an alias if ``name`` is one."""
        return self.variables[self.aliases.get(name, name)]


def load_model_bin_bytes(source: ModelBinSource) -> tuple[bytes | bytearray | memoryview, str]:
    """The raw bytes of a model.bin and a label for error messages.

    ``source`` may be the bytes themselves, one path, or several paths whose contents are
    concatenated in the given order (a model.bin shipped split into parts). Parts are read
    into one preallocated buffer, so the joined file never needs to exist on disk.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source, "<model.bin bytes>"
    paths = [Path(source)] if isinstance(source, (str, PathLike)) else [Path(p) for p in source]
    if not paths:
        raise ModelSourceError("No model.bin path given (expected one file or a list of parts).")
    for path in paths:
        if not path.is_file():
            raise ModelSourceError(f"CTranslate2 model file not found: {path}")
    sizes = [path.stat().st_size for path in paths]
    buffer = bytearray(sum(sizes))
    view = memoryview(buffer)
    offset = 0
    for path, size in zip(paths, sizes):
        with open(path, "rb") as handle:
            got = handle.readinto(view[offset : offset + size])
        if got != size:
            raise ModelSourceError(f"{path} changed while being read ({got} of {size} bytes).")
        offset += size
    label = str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)
    return buffer, label


class _Cursor:
    """Sequential little-endian reads over a buffer, with a clear error on truncation."""

    def __init__(self, data: bytes | bytearray | memoryview, label: str) -> None:
        self.data = memoryview(data).cast("B")
        self.label = label
        self.pos = 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.pos + size
        if end > len(self.data):
            raise ModelSourceError(
                f"CTranslate2 model file {self.label} is truncated: needed {size} bytes for "
                f"{what} at offset {self.pos}, but the file has {len(self.data)} bytes. "
                "Re-install the package (or check that all parts are present and in order)."
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        length = self.u16(f"length of {what}")
        raw = bytes(self.take(length, what))
        # The stored length counts a trailing NUL; C++ reads up to the first NUL.
        return raw.split(b"\0", 1)[0].decode("utf-8")


def read_model_bin(source: ModelBinSource) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` into tensors (stored dtypes kept, data copied)."""
    data, label = load_model_bin_bytes(source)
    cur = _Cursor(data, label)

    version = cur.u32("the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelSourceError(
            f"{label}: unsupported CTranslate2 binary version {version} "
            f"(this reader handles {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}). "
            "Is this really a CTranslate2 model.bin, with its parts joined in order?"
        )
    spec_name = cur.string("the spec name")
    spec_revision = cur.u32("the spec revision")

    variables: dict[str, torch.Tensor] = {}
    for index in range(cur.u32("the variable count")):
        name = cur.string(f"the name of variable #{index}")
        rank = cur.u8(f"the rank of {name}")
        shape = tuple(cur.u32(f"dimension {d} of {name}") for d in range(rank))
        type_id = cur.u8(f"the dtype of {name}")
        if type_id >= len(_DTYPES):
            raise ModelSourceError(
                f"{label}: variable {name!r} has dtype id {type_id}, which this reader does not "
                f"support (known: {', '.join(f'{i}={d[0]}' for i, d in enumerate(_DTYPES))})."
            )
        dtype_name, np_dtype, torch_dtype = _DTYPES[type_id]
        num_bytes = cur.u32(f"the byte count of {name}")
        count = int(np.prod(shape, dtype=np.int64))  # 1 for a scalar (empty shape)
        if num_bytes != count * np_dtype.itemsize:
            raise ModelSourceError(
                f"{label}: variable {name!r} declares {num_bytes} bytes but shape {shape} of "
                f"{dtype_name} needs {count * np_dtype.itemsize}; the file is corrupt."
            )
        raw = cur.take(num_bytes, f"the data of {name}")
        # Copy out of the shared buffer: each tensor owns its storage (safetensors refuses
        # tensors that share memory) and the file buffer can be freed afterwards.
        array = np.frombuffer(raw, dtype=np_dtype, count=count).copy().reshape(shape)
        tensor = torch.from_numpy(array)
        if torch_dtype == torch.bfloat16:
            tensor = tensor.view(torch.bfloat16)
        if name in variables:
            raise ModelSourceError(f"{label}: variable {name!r} appears twice.")
        variables[name] = tensor

    aliases: dict[str, str] = {}
    for index in range(cur.u32("the alias count")):
        alias = cur.string(f"the name of alias #{index}")
        target = cur.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise ModelSourceError(f"{label}: alias {alias!r} points to unknown variable {target!r}.")
        aliases[alias] = target

    if cur.pos != len(cur.data):
        raise ModelSourceError(
            f"{label}: {len(cur.data) - cur.pos} unexpected bytes after the last alias "
            f"(parsed {cur.pos} of {len(cur.data)}). Extra or misordered parts?"
        )
    return CT2Model(label, version, spec_name, spec_revision, variables, aliases)
