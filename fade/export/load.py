"""Load a packed checkpoint written by :func:`fade.export.export_packed` back into a model
whose quantized Linears hold the dequantized weights (plain ``torch.nn.Linear``, CPU or GPU).

Two ways, same result (both reproduce fade's ``scale · (code − zero)`` bit for bit):

- ``method="transformers"``: ``from_pretrained`` with ``CompressedTensorsConfig(dequantize=True)``
  (what ``run_compressed=False`` maps to in transformers 5): compressed-tensors unpacks every
  quantized Linear while loading and the model is dense from the start.
  Two limits of transformers 5.23 + compressed-tensors 0.20, found while writing this module:

  * the default ``dequantize=False`` route cannot load *asymmetric* pack-quantized
    checkpoints: it builds the compressed module layout on the meta device, where
    ``PackedQuantizationCompressor.compress`` skips packing the zero point, so the model
    expects ``weight_zero_point`` of shape ``[out, groups]`` while the format (and the
    non-meta compressor, and vLLM) store it packed, ``[ceil(out·b/32), groups]``; loading
    stops with a size-mismatch error. So ``dequantize=True`` is always passed here.
  * the dequantize-on-load converter decompresses *every* dense module with the first config
    group's scheme (``get_dense_scheme``), so a checkpoint with several config groups (ragged
    layers exported with a smaller effective group size, see fade/export/compressed.py) is
    decompressed with the wrong group size.

- ``method="explicit"``: reads ``model.safetensors`` (safetensors only, never pickle), unpacks
  codes and zero points with the same compressed-tensors helpers, computes
  ``scale · (code − zero)`` per group in the scale's dtype, builds the model from its config and
  loads the dense state dict. Used for checkpoints with several config groups.

``method="auto"`` (default) takes the transformers route when the checkpoint has a single
config group, the explicit one otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from fade.export.compressed import SAFETENSORS_NAME, ExportError
from fade.models.base import LoadedModel
from fade.quant.packing import unpack_codes

__all__ = ["load_packed", "decompress_state_dict", "model_class"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def model_class(family: str):
    """The transformers class a family's checkpoints load with."""
    import transformers

    names = {"whisper": "WhisperForConditionalGeneration", "moonshine": "MoonshineForConditionalGeneration",
             "qwen3_asr": "Qwen3ASRForConditionalGeneration"}
    if family not in names:
        raise ExportError(f"unknown model family {family!r}; known: {sorted(names)}")
    return getattr(transformers, names[family])


def _processor(family: str, directory: Path):
    from transformers import AutoProcessor, WhisperProcessor

    if family == "whisper":
        return WhisperProcessor.from_pretrained(directory, local_files_only=True)
    return AutoProcessor.from_pretrained(directory, local_files_only=True)


def _matches(name: str, module: torch.nn.Module | None, target: str) -> bool:
    """compressed-tensors' target rule: ``re:`` regex (re.match), exact name, or class name."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    if target == name:
        return True
    return module is not None and any(cls.__name__ == target for cls in type(module).__mro__)


def _schemes_by_layer(qconfig: dict[str, Any], names: list[str], modules: dict[str, torch.nn.Module] | None = None) -> dict[str, dict]:
    """Quantized Linear name → its weights args, from the config groups' targets minus ``ignore``."""
    ignore = qconfig.get("ignore") or []
    found: dict[str, dict] = {}
    for name in names:
        module = modules.get(name) if modules else None
        if any(_matches(name, module, pattern) for pattern in ignore):
            continue
        for group in qconfig["config_groups"].values():
            if any(_matches(name, module, target) for target in group["targets"]):
                found[name] = group["weights"]
                break
    return found


def decompress_state_dict(tensors: dict[str, torch.Tensor], qconfig: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Packed tensors → dense ``<name>.weight`` = scale · (code − zero), in the scale's dtype.

    Codes are the stored bits of ``weight_packed`` (compressed-tensors' signed value + 2^(b−1));
    the zero point's stored bits (packed along the output dimension) are fade's unsigned zero;
    symmetric schemes store none and use 2^(b−1).
    """
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    layers = sorted({k[: -len(".weight_packed")] for k in tensors if k.endswith(".weight_packed")})
    schemes = _schemes_by_layer(qconfig, layers)
    dense = {k: v for k, v in tensors.items() if not any(k.startswith(f"{n}.weight_") for n in layers)}
    for name in layers:
        if name not in schemes:
            raise ExportError(f"{name} has packed weights but no config group targets it")
        args = schemes[name]
        bits, strategy = int(args["num_bits"]), args["strategy"]
        if args.get("type", "int") != "int" or strategy not in ("group", "channel"):
            raise ExportError(f"{name}: only int group/channel schemes are supported, got {args}")
        if f"{name}.weight_g_idx" in tensors:
            raise ExportError(f"{name}: g_idx (actorder='group') is not supported")
        out_features, in_features = (int(x) for x in tensors[f"{name}.weight_shape"].tolist())
        scale = tensors[f"{name}.weight_scale"]
        groups = scale.shape[1]
        codes = unpack_codes(tensors[f"{name}.weight_packed"], bits, in_features)
        if args.get("symmetric", True):
            zero = torch.full((out_features, groups), float(1 << (bits - 1)), dtype=scale.dtype)
        else:
            signed = unpack_from_int32(tensors[f"{name}.weight_zero_point"], bits, torch.Size((out_features, groups)), packed_dim=0)
            zero = (signed.to(torch.int16) + (1 << (bits - 1))).to(scale.dtype)
        group_size = in_features if strategy == "channel" else int(args["group_size"])
        if group_size * groups != in_features:
            raise ExportError(f"{name}: {groups} groups of {group_size} do not cover {in_features} columns")
        dense[f"{name}.weight"] = scale.repeat_interleave(group_size, dim=1) * (codes.to(scale.dtype) - zero.repeat_interleave(group_size, dim=1))
    return dense


def _explicit(cls, directory: Path, config_dict: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, GenerationConfig
    from transformers.initialization import no_init_weights

    qconfig = config_dict["quantization_config"]
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with no_init_weights():
        model = cls._from_config(config, dtype=torch.float32)
    dense = decompress_state_dict(load_file(str(directory / SAFETENSORS_NAME)), qconfig)
    missing, unexpected = model.load_state_dict(dense, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise ExportError(f"{directory}: checkpoint does not fit {cls.__name__}: missing {sorted(set(missing) - tied)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(directory, local_files_only=True)
    return model.to(dtype)


def _transformers(cls, directory: Path, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import CompressedTensorsConfig

    with warnings.catch_warnings():  # "the quantization_config from the model will be used" is what we want
        warnings.filterwarnings("ignore", message=".*quantization_config.*")
        return cls.from_pretrained(directory, dtype=dtype, local_files_only=True,
                                   quantization_config=CompressedTensorsConfig(dequantize=True))


def _revision(directory: Path) -> str:
    digest = hashlib.sha256()
    with open(directory / SAFETENSORS_NAME, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return f"packed-{digest.hexdigest()[:16]}"


def load_packed(out_dir, family: str, *, dtype: str = "float32", device: torch.device | str = "cpu",
                method: str = "auto") -> LoadedModel:
    """Load a folder written by :func:`~fade.export.export_packed` (see the module docstring)."""
    directory = Path(out_dir)
    config_path = directory / "config.json"
    if not config_path.exists() or not (directory / SAFETENSORS_NAME).exists():
        raise ExportError(f"{directory} is not a packed checkpoint (config.json or {SAFETENSORS_NAME} missing)")
    config_dict = json.loads(config_path.read_text())
    qconfig = config_dict.get("quantization_config") or {}
    if qconfig.get("quant_method") != "compressed-tensors" or qconfig.get("format") != "pack-quantized":
        raise ExportError(f"{config_path} has no compressed-tensors pack-quantized quantization_config")
    if dtype not in _DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    if method == "auto":
        method = "transformers" if len(qconfig["config_groups"]) == 1 else "explicit"
    cls = model_class(family)
    if method == "transformers":
        model = _transformers(cls, directory, _DTYPES[dtype])
    elif method == "explicit":
        model = _explicit(cls, directory, config_dict, _DTYPES[dtype])
    else:
        raise ExportError(f"unknown load method {method!r}; use auto, transformers or explicit")
    model.to(device).eval()
    loaded = LoadedModel(family, f"packed:{directory.name}", model, _processor(family, directory), _revision(directory))
    loaded.info.update(source="packed", path=str(directory), dtype=dtype, load_method=method,
                       parameters=sum(p.numel() for p in model.parameters()))
    return loaded
