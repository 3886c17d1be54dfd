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


@dataclass(frozen=True)
class LinearGroup:
    """Linears of one block that read the same input, so they share one Hessian.

    ``names`` are module paths relative to the block. ``reads_encoder_output`` marks
    cross-attention key/value projections, whose input is the encoder's output rather than
    the block's own hidden states (X from the full-precision encoder, X̂ from the quantized one).
    """

    names: tuple[str, ...]
    reads_encoder_output: bool = False


@dataclass(frozen=True)
class Stage:
    """A run of blocks quantized in order: a ModuleList path (or a single module's path).

    ``part`` is reported per layer (encoder, projector, decoder). ``mask`` names the entry of
    ``CalibrationBatch.masks`` that marks real (non-padding) tokens of this stage's hidden states.
    """

    part: str
    path: str
    groups: tuple[LinearGroup, ...]
    mask: str
    #: True when ``path`` is one module rather than a ModuleList of blocks.
    single: bool = False


@dataclass
class CalibrationBatch:
    """Teacher-forced model inputs for calibration, and which tokens are real."""

    model_inputs: dict[str, torch.Tensor]
    #: ``[batch, tokens]`` bool per stream of hidden states ("encoder", "decoder", ...); None = all real.
    masks: dict[str, torch.Tensor | None]


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences → ``[batch, longest]`` ids padded on the right, and the bool mask of real tokens.

    Teacher-forced calibration pads on the right so every row's positions count from 0.
    """
    longest = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), longest), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = True
    return ids, mask


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

    # --- quantization: which Linears exist, which share an input, how to feed the model -----

    @abstractmethod
    def stages(self, loaded: LoadedModel) -> list[Stage]:
        """Blocks in the order they are quantized (encoder blocks first, then decoder blocks)."""

    @abstractmethod
    def calibration_batch(self, loaded: LoadedModel, audios: Sequence[np.ndarray], texts: Sequence[str]) -> CalibrationBatch:
        """Inputs for one teacher-forced forward pass: audio plus the reference transcript
        behind the family's prompt tokens, on the model's device."""
