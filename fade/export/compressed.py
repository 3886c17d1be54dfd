"""Write a calibrated model as a compressed-tensors ``pack-quantized`` checkpoint.

Folder layout (what ``transformers.from_pretrained`` and vLLM read):

- ``model.safetensors``: for each quantized Linear ``<name>``: ``<name>.weight_packed``
  (int32), ``<name>.weight_scale`` (float32 by default), ``<name>.weight_zero_point``
  (int32, asymmetric grids only), ``<name>.weight_shape`` (int64 ``[out, in]``) and its
  ``<name>.bias`` unchanged; every other tensor (embeddings, norms, convolutions, Linears
  left in full precision) exactly as in the calibrated model. Tied weights are stored once.
- ``config.json``: the model config plus ``quantization_config`` (``quant_method:
  compressed-tensors``, ``format: pack-quantized``, ``quantization_status: compressed``).
- ``generation_config.json`` and the processor/tokenizer files.
- ``quantization_report.json``: per-Linear and total byte counts (see :func:`export_packed`).

Mapping from fade's grid to compressed-tensors (derived from compressed-tensors 0.20's
``PackedQuantizationCompressor``, ``pack_to_int32`` and ``dequantize``):

fade stores unsigned codes ``c`` in ``[0, 2^b − 1]`` and an integer zero ``z`` in the same
range, ``w = s · (c − z)``. compressed-tensors works with *signed* int8 values ``q`` in
``[−2^(b−1), 2^(b−1) − 1]`` and a signed zero point ``zp``, ``w = (q − zp) · s``, and its
``pack_to_int32`` adds ``2^(b−1)`` to every value before writing its ``b`` bits (and
``unpack_from_int32`` subtracts it again). So:

- ``q = c − 2^(b−1)``, i.e. the stored bits of ``weight_packed`` are exactly ``c``
  (:func:`fade.quant.packing.pack_codes` writes them);
- ``zp = z − 2^(b−1)``, packed with ``pack_to_int32(zp, b, packed_dim=0)``: the stored bits
  are exactly ``z``, packed along the *output* dimension, giving an int32 tensor of shape
  ``[ceil(out·b/32), n_groups]``;
- symmetric grids have ``z = 2^(b−1)`` for every group, i.e. ``zp = 0``: compressed-tensors
  stores no zero point then (``symmetric: true``).

Exactness: ``q − zp = c − z`` is an integer of magnitude < 256, exact in any float dtype,
so compressed-tensors' ``(q − zp) · s`` in the scale's dtype is the same single rounding as
fade's ``s · (c − z)`` (:func:`fade.quant.grid.dequantize`; multiplication commutes): the
dequantized weight is equal **bit for bit** when the scale is stored in the dtype fade
computed it in (float32; ``scale_dtype=torch.float32``, the default). Cast to a half-precision
model dtype afterwards, both sides round the same float32 value once. A half-precision
``scale_dtype`` halves the scale bytes but is then only within the rounding of the scale.

Groups: compressed-tensors' ``group`` strategy requires ``in_features % group_size == 0``
(its ``_process_group`` raises otherwise) and 0.20 has dropped activation-order ``g_idx``
(``actorder: group``). fade's ragged last group (e.g. width 288 with g=128: groups of 128,
128, 32) is exported exactly with the effective group size ``gcd(group_size, in_features)``
(32 here): each fade group is cut into equal sub-groups that repeat its scale and zero. Such
layers go into their own config group; the report lists the effective size and its cost.
A non-trivial ``g_idx`` (GPTQ act-order with ``static_groups=False``) cannot be written in a
format compressed-tensors 0.20 loads and raises :class:`ExportError`; with act-order fade's
default static groups keep ``g_idx`` trivial (``actorder: weight`` is recorded then).

Readers: transformers loads these folders on CPU (see fade/export/load.py for its limits);
vLLM's compressed-tensors WNA16 scheme reads the same tensors (zero points packed along the
output dimension, int64 ``weight_shape``, scales cast to the model dtype on load) but only for
4- and 8-bit weights; 2/3-bit exports are for transformers/compressed-tensors (not checked
against a vLLM install here).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from fade.cache import atomic_directory
from fade.errors import FadeError
from fade.quant.grid import GridSpec, group_index, num_groups
from fade.quant.packing import pack_codes

__all__ = ["ExportError", "export_packed", "SAFETENSORS_NAME", "REPORT_NAME"]

SAFETENSORS_NAME = "model.safetensors"
REPORT_NAME = "quantization_report.json"
#: Tensor suffixes compressed-tensors' pack-quantized format stores per quantized Linear.
QUANTIZED_SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")


class ExportError(FadeError, ValueError):
    """A calibrated model that cannot be written in the requested format."""


def _unwrap(source) -> tuple[torch.nn.Module | None, Any, str | None]:
    """(model, processor, directory) from a LoadedModel, a model, or a checkpoint folder."""
    from fade.models.base import LoadedModel

    if isinstance(source, LoadedModel):
        return source.model, source.processor, None
    if isinstance(source, torch.nn.Module):
        return source, None, None
    if isinstance(source, (str, os.PathLike)):
        return None, None, str(source)
    raise ExportError(f"export_packed needs a LoadedModel, a model or a checkpoint folder, got {type(source).__name__}")


def _effective_group_size(name: str, grid: GridSpec, in_features: int, g_idx: torch.Tensor | None) -> int | None:
    """The group size written to the checkpoint (None = per-channel)."""
    if g_idx is not None:
        trivial = group_index(in_features, grid.group_size)
        if not torch.equal(g_idx.detach().cpu().to(torch.int32), trivial):
            raise ExportError(
                f"{name}: non-trivial g_idx (GPTQ act-order with dynamic groups). compressed-tensors "
                ">= 0.20 removed actorder='group' (g_idx), so this layer cannot be exported loadably; "
                "calibrate with quantizer.static_groups=null/true (the default with act-order), "
                "which keeps groups contiguous."
            )
    if grid.group_size is None:
        return None
    return math.gcd(grid.group_size, in_features)


def _expand_to(per_group: torch.Tensor, group_size: int, in_features: int, export_group: int) -> torch.Tensor:
    """[out, ceil(in/group_size)] → [out, in/export_group]: sub-group k lies in group k·e // g."""
    sub = torch.arange(in_features // export_group) * export_group // group_size
    return per_group[:, sub]


def _pack_zero_point(zero: torch.Tensor, bits: int) -> torch.Tensor:
    """fade's unsigned zero [out, groups] → compressed-tensors' packed zero point [ceil(out·b/32), groups]."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    signed = (zero.to(torch.int16) - (1 << (bits - 1))).to(torch.int8)
    return pack_to_int32(signed.contiguous(), bits, packed_dim=0).contiguous()


def _quantized_tensors(name: str, linear: torch.nn.Linear, qw, grid: GridSpec, scale_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], int | None]:
    out_features, in_features = linear.weight.shape
    codes = qw.codes.detach().cpu()
    if tuple(codes.shape) != (out_features, in_features):
        raise ExportError(f"{name}: codes have shape {tuple(codes.shape)}, the Linear's weight {(out_features, in_features)}")
    export_group = _effective_group_size(name, grid, in_features, qw.g_idx)
    groups = num_groups(in_features, grid.group_size)
    scale = qw.scale.detach().cpu()
    zero = qw.zero.detach().cpu()
    if tuple(scale.shape) != (out_features, groups) or tuple(zero.shape) != (out_features, groups):
        raise ExportError(f"{name}: scale/zero have shapes {tuple(scale.shape)}/{tuple(zero.shape)}, expected {(out_features, groups)}")
    if not bool(torch.all(zero == torch.round(zero))) or int(zero.min()) < 0 or int(zero.max()) > grid.maxq:
        raise ExportError(f"{name}: zero points must be integers in [0, {grid.maxq}] to be stored in {grid.bits} bits")
    if grid.symmetric and not bool(torch.all(zero == (1 << (grid.bits - 1)))):
        raise ExportError(f"{name}: a symmetric grid needs every zero point at {1 << (grid.bits - 1)}")
    if export_group is not None and export_group != grid.group_size:
        scale = _expand_to(scale, grid.group_size, in_features, export_group)
        zero = _expand_to(zero, grid.group_size, in_features, export_group)
    tensors = {
        "weight_packed": pack_codes(codes, grid.bits),
        "weight_scale": scale.to(scale_dtype).contiguous(),
        "weight_shape": torch.tensor([out_features, in_features], dtype=torch.int64),
    }
    if not grid.symmetric:
        tensors["weight_zero_point"] = _pack_zero_point(zero, grid.bits)
    return tensors, export_group


def _weights_args(grid: GridSpec, export_group: int | None, actorder: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "num_bits": grid.bits,
        "type": "int",
        "symmetric": grid.symmetric,
        "strategy": "channel" if export_group is None else "group",
        "group_size": export_group,
        "dynamic": False,
        "observer": "minmax",
    }
    if actorder:
        args["actorder"] = actorder
    return args


def _quantization_config(groups: dict[int | None, list[str]], grid: GridSpec, ignore: list[str], actorder: str | None) -> dict[str, Any]:
    """The ``quantization_config`` block, validated by compressed-tensors' own pydantic model."""
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationConfig

    # The configured group size first: transformers' dequantize-on-load path uses the first group.
    order = sorted(groups, key=lambda g: (g != grid.group_size, -(g or 0)))
    config_groups = {
        f"group_{index}": {"targets": sorted(groups[g]), "weights": _weights_args(grid, g, actorder),
                           "input_activations": None, "output_activations": None, "format": "pack-quantized"}
        for index, g in enumerate(order)
    }
    config = QuantizationConfig.model_validate({
        "config_groups": config_groups, "format": "pack-quantized", "quantization_status": "compressed",
        "ignore": ignore, "kv_cache_scheme": None, "global_compression_ratio": None,
    })
    payload = config.model_dump(exclude=["quant_method"])
    return {"version": compressed_tensors.__version__, "quant_method": "compressed-tensors", "sparsity_config": {},
            "transform_config": {}, **payload}


def _drop_tied(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep one name per shared tensor, as save_pretrained does: a tied target (e.g. Whisper's
    ``proj_out.weight``) is dropped in favour of its source (``model.decoder.embed_tokens.weight``)."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    kept: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for key in sorted(state, key=lambda k: k in tied):  # stable: sources first, tied targets last
        tensor = state[key]
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and ident in seen:
            continue
        seen.add(ident)
        kept[key] = tensor
    return {k: kept[k] for k in state if k in kept}


def _save_processor(processor, directory: str | None, target: Path) -> None:
    if processor is not None:
        processor.save_pretrained(target)
        return
    if directory is None:
        return
    for entry in Path(directory).iterdir():  # tokenizer/processor files of the source folder
        if entry.is_file() and entry.suffix in {".json", ".txt", ".model", ".tiktoken"} and entry.name not in {
            "config.json", "generation_config.json", "model.safetensors.index.json", REPORT_NAME}:
            shutil.copy2(entry, target / entry.name)


def _safetensors_sizes(path: Path) -> dict[str, int]:
    """Bytes of every tensor as recorded in the file's header (data_offsets)."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def export_packed(loaded_model_dir_or_model, result, grid: GridSpec, out_dir: Path, *, processor=None,
                  actorder: str | None = None, scale_dtype: torch.dtype = torch.float32,
                  overwrite: bool = False) -> dict[str, Any]:
    """Write ``result`` (a :class:`~fade.calibration.sequential.CalibrationResult`) to ``out_dir``.

    ``loaded_model_dir_or_model``: the LoadedModel that was calibrated (its processor is saved),
    a model, or the full-precision checkpoint folder (its tokenizer/processor files are copied).
    The tensors come from ``result.model`` (the calibrated model) and ``result.quantized``.
    ``actorder="weight"`` records that GPTQ ran with act-order (static groups: format unchanged).
    ``scale_dtype``: float32 (default) makes compressed-tensors' dequantization bit-exact.

    Written atomically (the folder appears complete or not at all; an existing ``out_dir`` is an
    error unless ``overwrite``, then replaced once the new folder is complete). Returns the report, also
    written to ``quantization_report.json``: per Linear its bits, group size (fade's and the
    exported one), weights, and the exact bytes of packed codes, scales and zero points; totals:
    bytes of the quantized Linears' tensors (packed, scale, zero point, shape), bytes of every
    other tensor, average bits per quantized weight (codes + scales + zero points), the
    safetensors file size and the folder's total bytes on disk.
    """
    from safetensors.torch import save_file

    source_model, source_processor, directory = _unwrap(loaded_model_dir_or_model)
    processor = processor if processor is not None else source_processor
    model = result.model
    if not result.quantized:
        raise ExportError("the calibration result holds no quantized Linear (result.quantized is empty)")
    if actorder not in (None, "weight", "static"):
        raise ExportError(f"actorder={actorder!r}: only 'weight' (static groups) is loadable by compressed-tensors >= 0.20")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists; remove it or pass overwrite=True")

    modules = dict(model.named_modules())
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = _drop_tied(model, state)

    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    groups: dict[int | None, list[str]] = defaultdict(list)
    for name, qw in result.quantized.items():
        linear = modules.get(name)
        if not isinstance(linear, torch.nn.Linear):
            raise ExportError(f"{name} is not a Linear of the calibrated model")
        if f"{name}.weight" not in state:
            raise ExportError(f"{name}.weight is missing from the state dict (tied to another tensor?)")
        packed, export_group = _quantized_tensors(name, linear, qw, grid, scale_dtype)
        state.pop(f"{name}.weight")
        for suffix, tensor in packed.items():
            tensors[f"{name}.{suffix}"] = tensor
        groups[export_group].append(name)
        out_features, in_features = linear.weight.shape
        weights = out_features * in_features
        packed_bytes = packed["weight_packed"].nbytes
        scale_bytes = packed["weight_scale"].nbytes
        zero_bytes = packed["weight_zero_point"].nbytes if "weight_zero_point" in packed else 0
        layers[name] = {
            "bits": grid.bits, "group_size": grid.group_size, "export_group_size": export_group,
            "strategy": "channel" if export_group is None else "group", "symmetric": grid.symmetric,
            "out_features": out_features, "in_features": in_features, "weights": weights,
            "packed_bytes": packed_bytes, "scale_bytes": scale_bytes, "zero_point_bytes": zero_bytes,
            "shape_bytes": packed["weight_shape"].nbytes,
            "bits_per_weight": 8 * (packed_bytes + scale_bytes + zero_bytes) / weights,
        }
    for key, tensor in state.items():
        tensors[key] = tensor.contiguous()

    quantized_names = set(result.quantized)
    ignore = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in quantized_names)

    with atomic_directory(out_dir) as tmp:
        save_file(tensors, str(tmp / SAFETENSORS_NAME), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config["quantization_config"] = _quantization_config(groups, grid, ignore, actorder)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
        _save_processor(processor, directory, tmp)

        sizes = _safetensors_sizes(tmp / SAFETENSORS_NAME)
        quantized_keys = {f"{n}.{s}" for n in quantized_names for s in QUANTIZED_SUFFIXES}
        quantized_bytes = sum(b for k, b in sizes.items() if k in quantized_keys)
        unquantized_bytes = sum(b for k, b in sizes.items() if k not in quantized_keys)
        total_weights = sum(layer["weights"] for layer in layers.values())
        payload = sum(layer["packed_bytes"] + layer["scale_bytes"] + layer["zero_point_bytes"] for layer in layers.values())
        report: dict[str, Any] = {
            "format": "compressed-tensors pack-quantized",
            "bits": grid.bits, "group_size": grid.group_size, "symmetric": grid.symmetric,
            "scale_dtype": str(scale_dtype).removeprefix("torch."), "actorder": actorder,
            "quantized_linears": len(layers), "ignored_linears": ignore,
            "config_groups": {("channel" if g is None else f"group_size={g}"): len(v) for g, v in groups.items()},
            "layers": layers,
            "totals": {
                "quantized_weights": total_weights,
                "quantized_tensor_bytes": quantized_bytes,
                "unquantized_tensor_bytes": unquantized_bytes,
                "unquantized_parameters": sum(t.numel() for k, t in tensors.items() if k not in quantized_keys),
                "bits_per_quantized_weight": 8 * payload / total_weights,
                "safetensors_file_bytes": (tmp / SAFETENSORS_NAME).stat().st_size,
            },
        }
        others = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        total = others
        while True:  # the report's own size is part of the total: iterate to the fixed point
            report["totals"]["checkpoint_bytes_on_disk"] = total
            text = json.dumps(report, indent=2) + "\n"
            if others + len(text.encode()) == total:
                break
            total = others + len(text.encode())
        (tmp / REPORT_NAME).write_text(text)
        if out_dir.exists():  # overwrite: the old folder goes only once the new one is complete
            shutil.rmtree(out_dir)
    return report
