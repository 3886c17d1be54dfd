"""Whisper (OpenAI): log-mel encoder over a 30-second window, text decoder with cross-attention."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from fade.models.base import CalibrationBatch, LinearGroup, LoadedModel, ModelFamily, Stage, Transcripts, right_pad
from fade.models.generation import PerRowLengthCap
from fade.models.random_tokenizer import byte_vocab

#: Whisper's special tokens in the order the real tokenizer adds them (English-only subset of languages).
RANDOM_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]


_ATTENTION_GROUPS = (
    LinearGroup(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    LinearGroup(("self_attn.out_proj",)),
)
_MLP_GROUPS = (LinearGroup(("fc1",)), LinearGroup(("fc2",)))
_CROSS_ATTENTION_GROUPS = (
    LinearGroup(("encoder_attn.q_proj",)),
    LinearGroup(("encoder_attn.k_proj", "encoder_attn.v_proj"), reads_encoder_output=True),
    LinearGroup(("encoder_attn.out_proj",)),
)


class WhisperFamily(ModelFamily):
    name = "whisper"

    def load_pretrained(self, path_or_id: str, *, dtype: torch.dtype, local_files_only: bool) -> LoadedModel:
        model = WhisperForConditionalGeneration.from_pretrained(path_or_id, dtype=dtype, local_files_only=local_files_only)
        processor = WhisperProcessor.from_pretrained(path_or_id, local_files_only=local_files_only)
        return LoadedModel(self.name, str(path_or_id), model.eval(), processor, revision=str(getattr(model.config, "_commit_hash", None) or path_or_id))

    def build_random(self, *, seed: int, size: str = "tiny") -> LoadedModel:
        widths = {"tiny": (64, 2, 4), "small": (128, 2, 4)}
        if size not in widths:
            raise ValueError(f"unknown random Whisper size {size!r}; choose one of {sorted(widths)}")
        d_model, layers, heads = widths[size]
        tokenizer = WhisperTokenizer(vocab=dict(byte_vocab()), merges=[])
        tokenizer.add_special_tokens({"additional_special_tokens": RANDOM_SPECIAL_TOKENS[1:]})
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in RANDOM_SPECIAL_TOKENS}
        config = WhisperConfig(
            vocab_size=len(tokenizer),
            num_mel_bins=80,
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=4 * d_model,
            decoder_ffn_dim=4 * d_model,
            max_source_positions=1500,
            max_target_positions=448,
            decoder_start_token_id=ids["<|startoftranscript|>"],
            eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            bos_token_id=ids["<|endoftext|>"],
        )
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
        model.generation_config = GenerationConfig(
            decoder_start_token_id=ids["<|startoftranscript|>"],
            eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            no_timestamps_token_id=ids["<|notimestamps|>"],
            is_multilingual=False,
            max_length=448,
            suppress_tokens=[],
            begin_suppress_tokens=[ids["<|endoftext|>"]],
        )
        processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
        return LoadedModel(self.name, f"random-whisper-{size}", model, processor, revision=f"random-seed{seed}")

    def prepare_inputs(self, loaded: LoadedModel, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        # Whisper always sees a 30 s window: the feature extractor pads the audio with zeros.
        features = loaded.processor.feature_extractor(list(audios), sampling_rate=16_000, return_tensors="pt")
        dtype = next(loaded.model.parameters()).dtype
        return {"input_features": features.input_features.to(loaded.device, dtype)}

    def generate(self, loaded, inputs, *, max_new_tokens: Sequence[int], num_beams: int = 1) -> Transcripts:
        config = loaded.model.generation_config
        cap = PerRowLengthCap(max_new_tokens, eos_token_id=config.eos_token_id, num_beams=num_beams)
        language = {"language": "en", "task": "transcribe"} if getattr(config, "is_multilingual", False) else {}
        with torch.inference_mode():
            tokens = loaded.model.generate(
                **inputs,
                logits_processor=[cap],
                max_new_tokens=max(max_new_tokens) + 1,  # +1: the largest-capped row also ends in a forced EOS
                num_beams=num_beams,
                do_sample=False,
                return_timestamps=False,
                **language,
            )
        texts = loaded.processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return Transcripts([text.strip() for text in texts], cap.hit.tolist())

    def stages(self, loaded: LoadedModel) -> list[Stage]:
        return [
            Stage("encoder", "model.encoder.layers", _ATTENTION_GROUPS + _MLP_GROUPS, mask="encoder"),
            Stage("decoder", "model.decoder.layers", _ATTENTION_GROUPS + _CROSS_ATTENTION_GROUPS + _MLP_GROUPS, mask="decoder"),
        ]

    def calibration_batch(self, loaded: LoadedModel, audios, texts) -> CalibrationBatch:
        """Teacher forcing: decoder input = prompt tokens + reference text tokens.

        The prompt is what generation uses (``<|startoftranscript|>``, for multilingual models
        ``<|en|><|transcribe|>``, then ``<|notimestamps|>``); the text gets a leading space, as
        Whisper emits it. The final end-of-text token is a target, never an input, so it is dropped.
        All 1500 encoder frames are real inputs (Whisper is trained on the padded window).
        """
        tokenizer = loaded.processor.tokenizer
        multilingual = getattr(loaded.model.generation_config, "is_multilingual", False)
        tokenizer.set_prefix_tokens(language="en" if multilingual else None, task="transcribe" if multilingual else None,
                                    predict_timestamps=False)
        sequences = [tokenizer(" " + text.strip()).input_ids[:-1] for text in texts]
        ids, mask = right_pad(sequences, loaded.model.generation_config.pad_token_id)
        inputs = self.prepare_inputs(loaded, audios)
        inputs.update(decoder_input_ids=ids.to(loaded.device), decoder_attention_mask=mask.long().to(loaded.device))
        return CalibrationBatch(inputs, {"encoder": None, "decoder": mask.to(loaded.device)})
