"""The contract every model family implements.

A family adapter knows how to build a model and its processor from a source (hub id, local
directory, offline package, random init), how to turn audio into model inputs, how to run
generation, and (for quantization) which blocks and Linears exist. It holds no quantization
maths: that lives in ``fade.quant`` and acts on tensors only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch


@dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to feed it and read its output."""

    family: str
    name: str
    model: torch.nn.Module
    processor: Any
    #: Identifies the weights (hub revision, file hash, random seed) so cached results can be keyed.
    revision: str
    #: Free-form facts for reports (source, dtype, parameter count, ...).
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class Transcripts:
    """Decoded hypotheses of one batch, and which of them hit their token cap."""

    texts: list[str]
    capped: list[bool]


class ModelFamily(ABC):
    """One encoder-decoder ASR family (Whisper, Moonshine, Qwen3-ASR)."""

    name: ClassVar[str]

    @abstractmethod
    def load_pretrained(self, path_or_id: str, *, dtype: torch.dtype, local_files_only: bool) -> LoadedModel:
        """Load from a hub id or a local transformers-format directory."""

    @abstractmethod
    def build_random(self, *, seed: int, size: str = "tiny") -> LoadedModel:
        """A small randomly initialised model of this family, deterministic for a seed."""

    @abstractmethod
    def prepare_inputs(self, loaded: LoadedModel, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Turn 16 kHz mono float audio into the model's input tensors (on the model's device)."""

    @abstractmethod
    def generate(
        self,
        loaded: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: Sequence[int],
        num_beams: int = 1,
    ) -> Transcripts:
        """Transcribe a batch; ``max_new_tokens[i]`` caps the tokens generated for utterance i."""
