"""Export a calibrated model as a packed low-bit checkpoint, and load one back.

- :func:`export_packed` writes a compressed-tensors ``pack-quantized`` checkpoint folder
  (config.json with ``quantization_config``, model.safetensors, processor and generation
  config, ``quantization_report.json``) that transformers and vLLM read;
- :func:`load_packed` loads such a folder back as a :class:`~fade.models.base.LoadedModel`
  whose Linear weights are the dequantized ones.
"""

from fade.export.compressed import ExportError, export_packed
from fade.export.load import load_packed

__all__ = ["ExportError", "export_packed", "load_packed"]
