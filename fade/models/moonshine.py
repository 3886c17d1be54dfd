"""Moonshine (Useful Sensors): conv stem over raw 16 kHz audio (no padding to a fixed window),
rotary-attention encoder, decoder with cross-attention and a SwiGLU feed-forward."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import (
    AutoProcessor,
    MoonshineConfig,
    MoonshineForConditionalGeneration,
    PreTrainedTokenizerFast,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

from fade.models.base import CalibrationBatch, LinearGroup, LoadedModel, ModelFamily, Stage, Transcripts, right_pad
from fade.models.generation import PerRowLengthCap
from fade.models.random_tokenizer import byte_vocab


def _random_tokenizer() -> PreTrainedTokenizerFast:
    # Moonshine's real vocabulary puts <unk>, <s>, </s> at ids 0, 1, 2; keep that layout.
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate(specials)}
    vocab.update({symbol: len(specials) + index for symbol, index in byte_vocab().items()})
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>")


_SELF_ATTENTION = (
    LinearGroup(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    LinearGroup(("self_attn.o_proj",)),
)
_CROSS_ATTENTION = (
    LinearGroup(("encoder_attn.q_proj",)),
    LinearGroup(("encoder_attn.k_proj", "encoder_attn.v_proj"), reads_encoder_output=True),
    LinearGroup(("encoder_attn.o_proj",)),
)
# Encoder MLP: fc1 → GELU → fc2. Decoder MLP: fc1 yields both SwiGLU halves → fc2.
_MLP = (LinearGroup(("mlp.fc1",)), LinearGroup(("mlp.fc2",)))

#: Moonshine's conv stem strides (64, 3, 2): one encoder frame per 384 samples.
_ENCODER_STRIDE = 64 * 3 * 2


class MoonshineFamily(ModelFamily):
    name = "moonshine"

    def load_pretrained(self, path_or_id: str, *, dtype: torch.dtype, local_files_only: bool) -> LoadedModel:
        model = MoonshineForConditionalGeneration.from_pretrained(path_or_id, dtype=dtype, local_files_only=local_files_only)
        processor = AutoProcessor.from_pretrained(path_or_id, local_files_only=local_files_only)
        return LoadedModel(self.name, str(path_or_id), model.eval(), processor, revision=str(getattr(model.config, "_commit_hash", None) or path_or_id))

    def build_random(self, *, seed: int, size: str = "tiny") -> LoadedModel:
        widths = {"tiny": (64, 2, 4), "small": (128, 2, 4)}
        if size not in widths:
            raise ValueError(f"unknown random Moonshine size {size!r}; choose one of {sorted(widths)}")
        hidden, layers, heads = widths[size]
        tokenizer = _random_tokenizer()
        config = MoonshineConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            encoder_num_hidden_layers=layers,
            decoder_num_hidden_layers=layers,
            encoder_num_attention_heads=heads,
            decoder_num_attention_heads=heads,
            encoder_num_key_value_heads=heads,
            decoder_num_key_value_heads=heads,
            max_position_embeddings=512,
            bos_token_id=1,
            decoder_start_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
        torch.manual_seed(seed)
        model = MoonshineForConditionalGeneration(config).eval()
        model.generation_config.pad_token_id = 2
        feature_extractor = Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=False, return_attention_mask=True
        )
        processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        return LoadedModel(self.name, f"random-moonshine-{size}", model, processor, revision=f"random-seed{seed}")

    def prepare_inputs(self, loaded: LoadedModel, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        # Moonshine reads raw audio of any length; batch by padding with zeros plus a mask.
        features = loaded.processor.feature_extractor(
            list(audios), sampling_rate=16_000, padding=True, return_attention_mask=True, return_tensors="pt"
        )
        dtype = next(loaded.model.parameters()).dtype
        return {
            "input_values": features.input_values.to(loaded.device, dtype),
            "attention_mask": features.attention_mask.to(loaded.device),
        }

    def generate(self, loaded, inputs, *, max_new_tokens: Sequence[int], num_beams: int = 1) -> Transcripts:
        config = loaded.model.generation_config
        eos = config.eos_token_id if isinstance(config.eos_token_id, int) else config.eos_token_id[0]
        cap = PerRowLengthCap(max_new_tokens, eos_token_id=eos, num_beams=num_beams)
        with torch.inference_mode():
            tokens = loaded.model.generate(
                **inputs, logits_processor=[cap], max_new_tokens=max(max_new_tokens) + 1, num_beams=num_beams, do_sample=False
            )
        texts = loaded.processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return Transcripts([text.strip() for text in texts], cap.hit.tolist())

    def stages(self, loaded: LoadedModel) -> list[Stage]:
        return [
            Stage("encoder", "model.encoder.layers", _SELF_ATTENTION + _MLP, mask="encoder"),
            Stage("decoder", "model.decoder.layers", _SELF_ATTENTION + _CROSS_ATTENTION + _MLP, mask="decoder"),
        ]

    def calibration_batch(self, loaded: LoadedModel, audios, texts) -> CalibrationBatch:
        """Teacher forcing: decoder input = start token + reference text tokens.

        Audio is zero-padded to the longest in the batch; the encoder mask keeps only frames
        computed from real samples, sliced exactly as ``MoonshineEncoder`` slices it.
        """
        tokenizer = loaded.processor.tokenizer
        start = loaded.model.config.decoder_start_token_id
        sequences = [[start] + tokenizer(text.strip(), add_special_tokens=False).input_ids for text in texts]
        ids, mask = right_pad(sequences, loaded.model.generation_config.pad_token_id or loaded.model.config.eos_token_id)
        inputs = self.prepare_inputs(loaded, audios)
        audio_mask = inputs["attention_mask"]
        frames = int(loaded.model._get_feat_extract_output_lengths(audio_mask.shape[-1]))
        encoder_mask = audio_mask[..., ::_ENCODER_STRIDE][..., :frames].bool()
        inputs.update(decoder_input_ids=ids.to(loaded.device), decoder_attention_mask=mask.long().to(loaded.device))
        return CalibrationBatch(inputs, {"encoder": encoder_mask, "decoder": mask.to(loaded.device)})
