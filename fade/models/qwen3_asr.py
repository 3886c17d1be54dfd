"""Qwen3-ASR family adapter, on transformers' built-in ``qwen3_asr`` code (transformers >= 5.x).

What transformers provides (``transformers.models.qwen3_asr``):

* ``Qwen3ASRConfig`` (``audio_config``: ``Qwen3ASREncoderConfig``; ``text_config``: a ``Qwen3Config``) and
  ``Qwen3ASRForConditionalGeneration``: ``model.audio_tower`` (``Qwen3ASREncoder``: 3 stride-2 Conv2d over
  100-frame mel chunks -> ``conv_out`` Linear -> Whisper-style pre-LN transformer layers with windowed attention
  -> ``ln_post``), ``model.multi_modal_projector`` (``linear_1`` -> GELU -> ``linear_2`` to the LM width),
  ``model.language_model`` (a ``Qwen3Model``) and ``lm_head`` (tied by default). A decoder-only LM: the projected
  audio frames replace the ``<|audio_pad|>`` placeholder embeddings in the prompt (``config.audio_token_id``),
  and ``generate`` drops the audio features after the prefill step.
* ``Qwen3ASRProcessor`` = ``Qwen3ASRFeatureExtractor`` (128-bin log-mel, 16 kHz, hop 160, mel axis right-padded
  to a multiple of ``2 * n_window`` = 100 frames; clips shorter than 0.5 s zero-padded) + a ``Qwen2Tokenizer``
  (byte-level BPE) whose named extra special tokens ``audio_token`` / ``audio_bos_token`` /
  ``audio_eos_token`` are ``<|audio_pad|>`` / ``<|audio_start|>`` / ``<|audio_end|>``. The processor expands
  each ``<|audio_pad|>`` of the prompt into as many placeholders as the encoder yields frames (13 per full
  100-frame chunk plus the remainder's post-conv length) and pads the text on the LEFT by default.
* ``processor.apply_transcription_request(audio, language=...)`` renders the checkpoint's chat template::

      <|im_start|>system\\n{context}<|im_end|>\\n
      <|im_start|>user\\n<|audio_start|><|audio_pad|>...<|audio_end|><|im_end|>\\n
      <|im_start|>assistant\\n[language English<asr_text>]

  When a language is forced, the assistant turn is prefilled with ``language <Name><asr_text>`` (full English
  name, e.g. ``English``) and the model generates only the transcription; otherwise the model itself emits
  ``language <Name><asr_text><transcription>`` (``language None<asr_text>`` for silence). ``<asr_text>`` is an
  added but NOT special token, so it survives ``skip_special_tokens=True``; ``<|im_end|>`` ends the turn.

Hub checkpoints: the transformers-format weights are the ``-hf`` repos (``Qwen/Qwen3-ASR-0.6B-hf``,
``Qwen/Qwen3-ASR-1.7B-hf``). The plain ``Qwen/Qwen3-ASR-0.6B`` / ``-1.7B`` repos hold the original ``qwen_asr``
package layout (``thinker_config`` ...), which transformers' class cannot load; ``load_pretrained`` maps those
two ids to their ``-hf`` twins and refuses a local folder in the original layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList

from fade.models.generation import PerRowLengthCap
from fade.models.base import CalibrationBatch, LinearGroup, LoadedModel, ModelFamily, Stage, Transcripts, right_pad

SAMPLING_RATE = 16_000

#: Original-layout hub ids -> their transformers-format twins.
_HF_TWINS = {
    "Qwen/Qwen3-ASR-0.6B": "Qwen/Qwen3-ASR-0.6B-hf",
    "Qwen/Qwen3-ASR-1.7B": "Qwen/Qwen3-ASR-1.7B-hf",
}

_ASR_TEXT = "<asr_text>"

# Chat template equivalent to the one shipped with the ``-hf`` checkpoints: the system turn holds the system
# text (empty by default), the user turn only the audio block(s), then an assistant turn whose text (the forced
# language prefill) is continued by generation (``continue_final_message=True`` cuts the closing ``<|im_end|>``).
_CHAT_TEMPLATE = (
    "{%- set sys = namespace(text='') -%}"
    "{%- set aud = namespace(text='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.content is string -%}"
    "{%- if m.role == 'system' -%}{%- set sys.text = sys.text + m.content -%}{%- endif -%}"
    "{%- else -%}"
    "{%- for c in m.content -%}"
    "{%- if m.role == 'system' and c.type == 'text' -%}{%- set sys.text = sys.text + c.text -%}"
    "{%- elif c.type == 'audio' or 'audio' in c or 'audio_url' in c -%}"
    "{%- set aud.text = aud.text + '<|audio_start|><|audio_pad|><|audio_end|>' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_start|>system\\n' + sys.text + '<|im_end|>\\n' -}}"
    "{{- '<|im_start|>user\\n' + aud.text + '<|im_end|>\\n' -}}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set asst = namespace(text='') -%}"
    "{%- if m.content is string -%}{%- set asst.text = m.content -%}"
    "{%- else -%}{%- for c in m.content -%}"
    "{%- if c.type == 'text' -%}{%- set asst.text = asst.text + c.text -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' + asst.text + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_SIZES: dict[str, dict[str, int]] = {
    # audio: layers, d_model, heads, ffn, conv channels; lm: layers, hidden, heads, kv heads, head_dim, ffn
    "tiny": dict(a_layers=2, a_dim=64, a_heads=4, a_ffn=128, a_conv=8,
                 t_layers=2, t_dim=64, t_heads=4, t_kv=2, t_head_dim=16, t_ffn=128),
    "small": dict(a_layers=4, a_dim=128, a_heads=4, a_ffn=256, a_conv=16,
                  t_layers=4, t_dim=128, t_heads=4, t_kv=2, t_head_dim=32, t_ffn=256),
}  # fmt: skip


#: Init std of random models. With the usual 0.02, a tiny model with tied embeddings just repeats the last
#: prompt token whatever the audio; 0.3 makes its greedy output depend on the audio (more useful in tests).
_RANDOM_INIT_STD = 0.3


def _byte_level_tokenizer():
    """A Qwen2Tokenizer (the class real checkpoints use) over the 256 byte-level symbols, no merges."""
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>",
        "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>", "<timestamp>",
    ]  # fmt: skip
    byte_to_symbol = bytes_to_unicode()
    vocab = {byte_to_symbol[b]: b for b in range(256)}
    for tok in specials + [_ASR_TEXT]:
        vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
        model_max_length=1 << 16,
    )
    tokenizer.add_special_tokens({"extra_special_tokens": specials[1:]}, replace_extra_special_tokens=False)
    # As in the real tokenizer, <asr_text> is an added token that is NOT special (kept by skip_special_tokens).
    tokenizer.add_tokens([AddedToken(_ASR_TEXT, special=False, normalized=False)])
    for tok in specials + [_ASR_TEXT]:
        assert tokenizer.convert_tokens_to_ids(tok) == vocab[tok], tok
    return tokenizer


def _strip_language_prefix(text: str) -> str:
    """Return the transcription part of a decoded Qwen3-ASR output.

    Output formats: with the language forced (our prompt) the model generates the transcription only; in
    auto-detection mode it generates ``language <Name><asr_text><transcription>`` (``language None<asr_text>``
    for no speech). We keep what follows the first ``<asr_text>``; a bare ``language <Name>`` line without the
    marker (a truncated prefix) yields ``""``. No repetition clean-up is done (unlike
    ``processor.extract_transcription``), so degenerate repetitions stay visible to the metrics.
    """
    if _ASR_TEXT in text:
        return text.split(_ASR_TEXT, 1)[1].strip()
    if re.fullmatch(r"\s*language\s+\S*\s*", text):
        return ""
    return text.strip()


def _file_fingerprint(path: str, h: "hashlib._Hash", full_limit: int = 8 << 20, n_samples: int = 16) -> None:
    """Feed a file into ``h``: whole if small, else its size plus evenly spaced 64 KiB samples (fast on GBs)."""
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= full_limit:
            h.update(f.read())
            return
        block = 64 << 10
        for k in range(n_samples):
            f.seek((size - block) * k // (n_samples - 1))
            h.update(f.read(block))


def _revision(path_or_id: str) -> str | None:
    """Commit hash of a hub snapshot (read from its cache path), or a content fingerprint of a local folder."""
    if os.path.isdir(path_or_id):
        h = hashlib.sha256()
        for name in sorted(os.listdir(path_or_id)):
            full = os.path.join(path_or_id, name)
            if os.path.isfile(full) and name.endswith((".json", ".jinja", ".safetensors", ".bin", ".txt")):
                h.update(name.encode())
                _file_fingerprint(full, h)
        return "dir-" + h.hexdigest()[:16]
    try:
        from transformers.utils import cached_file

        path = cached_file(path_or_id, "config.json", local_files_only=True)
    except Exception:
        return None
    match = re.search(r"snapshots[/\\]([0-9a-f]{40})", str(path or ""))
    return match.group(1) if match else None


class Qwen3ASRFamily(ModelFamily):
    """Qwen3-ASR (AuT audio encoder + projector + Qwen3 LM) via ``Qwen3ASRForConditionalGeneration``.

    ``language`` is forced in the prompt (full name or ISO code, as the processor accepts; ``None`` lets the
    model detect it and emit the ``language X<asr_text>`` prefix, which ``generate`` strips). ``context`` is the
    optional system-prompt text (hotwords); the real pipeline leaves it empty.
    """

    name = "qwen3_asr"

    def __init__(self, language: str | None = "English", context: str | None = None):
        self.language = language
        self.context = context
        #: From the last ``generate_ids`` call: per utterance, whether it was still producing text at its cap.
        self.last_capped: list[bool] = []

    # ------------------------------------------------------------------ loading
    def load_pretrained(self, path_or_id: str, *, dtype: torch.dtype, local_files_only: bool) -> LoadedModel:
        from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration

        source = _HF_TWINS.get(path_or_id.rstrip("/"), path_or_id)
        config_path = os.path.join(source, "config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                raw = json.load(f)
            if "thinker_config" in raw:
                raise ValueError(
                    f"{path_or_id} holds the original qwen_asr layout (thinker_config); transformers'"
                    " Qwen3ASRForConditionalGeneration needs the converted '-hf' checkpoint"
                    " (e.g. Qwen/Qwen3-ASR-0.6B-hf)."
                )
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
        model = Qwen3ASRForConditionalGeneration.from_pretrained(
            source, dtype=dtype, local_files_only=local_files_only
        )
        model.eval()
        revision = _revision(source) or source
        info: dict[str, Any] = {
            "source": source,
            "dtype": str(dtype),
            "n_params": sum(p.numel() for p in model.parameters()),
            "language": self.language,
        }
        if source != path_or_id:
            info["requested"] = path_or_id
        return LoadedModel(
            family=self.name, name=source, model=model, processor=processor, revision=revision, info=info
        )

    def build_random(self, *, seed: int, size: str = "tiny") -> LoadedModel:
        from transformers import (
            Qwen3ASRConfig,
            Qwen3ASRFeatureExtractor,
            Qwen3ASRForConditionalGeneration,
            Qwen3ASRProcessor,
        )

        if size not in _SIZES:
            raise ValueError(f"unknown size {size!r}; choose from {sorted(_SIZES)}")
        s = _SIZES[size]
        tokenizer = _byte_level_tokenizer()
        # Default feature extractor (128 mel bins, n_window=50) as in the real checkpoints.
        processor = Qwen3ASRProcessor(
            feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tokenizer, chat_template=_CHAT_TEMPLATE
        )
        ids = tokenizer.convert_tokens_to_ids
        eos_ids = [ids("<|endoftext|>"), ids("<|im_end|>")]
        config = Qwen3ASRConfig(
            audio_config={
                "model_type": "qwen3_asr_encoder",
                "num_mel_bins": processor.feature_extractor.feature_size,
                "encoder_layers": s["a_layers"],
                "encoder_attention_heads": s["a_heads"],
                "encoder_ffn_dim": s["a_ffn"],
                "d_model": s["a_dim"],
                "downsample_hidden_size": s["a_conv"],
                "output_dim": s["t_dim"],
                "n_window": processor.feature_extractor.n_window,
                "initializer_range": _RANDOM_INIT_STD,
            },
            text_config={
                "model_type": "qwen3",
                "vocab_size": len(tokenizer),
                "hidden_size": s["t_dim"],
                "intermediate_size": s["t_ffn"],
                "num_hidden_layers": s["t_layers"],
                "num_attention_heads": s["t_heads"],
                "num_key_value_heads": s["t_kv"],
                "head_dim": s["t_head_dim"],
                "max_position_embeddings": 4096,
                "tie_word_embeddings": True,
                "pad_token_id": ids("<|endoftext|>"),
                "eos_token_id": eos_ids,
                "initializer_range": _RANDOM_INIT_STD,
            },
            audio_token_id=ids("<|audio_pad|>"),
            timestamp_token_id=ids("<timestamp>"),
            pad_token_id=ids("<|endoftext|>"),
            eos_token_id=eos_ids,
            initializer_range=_RANDOM_INIT_STD,
            tie_word_embeddings=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen3ASRForConditionalGeneration(config)
        model.eval()
        model.generation_config.eos_token_id = eos_ids
        model.generation_config.pad_token_id = ids("<|endoftext|>")
        info = {
            "source": "random",
            "size": size,
            "seed": seed,
            "dtype": str(next(model.parameters()).dtype),
            "n_params": sum(p.numel() for p in model.parameters()),
            "language": self.language,
        }
        return LoadedModel(
            family=self.name,
            name=f"qwen3_asr-random-{size}",
            model=model,
            processor=processor,
            revision=f"random-{size}-seed{seed}",
            info=info,
        )

    # ------------------------------------------------------------------ inference
    def prepare_inputs(self, loaded: LoadedModel, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        if len(audios) == 0:
            raise ValueError("no audio")
        audio = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
        batch = loaded.processor.apply_transcription_request(
            audio,
            language=self.language,
            prompt=self.context,
            processor_kwargs={
                "text_kwargs": {"padding": True, "padding_side": "left"},
                "audio_kwargs": {"sampling_rate": SAMPLING_RATE, "padding": True},
            },
        )
        # Batch invariance: the feature extractor pads the *waveforms* of a batch to the longest one, so the
        # padded mel frames of a shorter clip hold log-mel of silence (about -1), while the same clip alone has
        # its last encoder chunk padded with 0.0 in the mel domain (as in the original qwen_asr encoder, which
        # slices each clip's valid frames and zero-pads the chunk). The encoder convs see those padded frames at
        # the end of the last partial chunk and the windowed attention spreads the difference, so a clip's
        # transcript would depend on its batch-mates. Zeroing the masked frames makes batched == one-by-one.
        mask = batch["input_features_mask"]
        batch["input_features"] = batch["input_features"].masked_fill(~mask.bool()[:, None, :], 0.0)
        keep = ("input_ids", "attention_mask", "input_features", "input_features_mask")
        model = loaded.model
        device = loaded.device
        float_dtype = next(model.parameters()).dtype
        out: dict[str, torch.Tensor] = {}
        for key in keep:
            t = batch[key]
            if not isinstance(t, torch.Tensor):
                t = torch.as_tensor(np.asarray(t))
            out[key] = t.to(device=device, dtype=float_dtype if t.is_floating_point() else t.dtype)
        return out

    def generate(
        self,
        loaded: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: Sequence[int],
        num_beams: int = 1,
    ) -> Transcripts:
        """Greedy (default) or beam-search transcripts: only the new text, special tokens dropped, any
        ``language X<asr_text>`` prefix removed; ``capped[i]`` is True when utterance i hit its token cap."""
        ids, capped = self._generate(loaded, inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
        texts = loaded.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return Transcripts([_strip_language_prefix(t) for t in texts], capped)

    def generate_ids(
        self,
        loaded: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: Sequence[int],
        num_beams: int = 1,
    ) -> torch.Tensor:
        """The newly generated ids ``(batch, n_new)`` (greedy or beam search), EOS included, padded after it.

        Row ``i`` holds at most ``max_new_tokens[i]`` tokens before its EOS; ``n_new <= max(max_new_tokens) + 1``.
        ``self.last_capped`` tells which rows hit their cap.
        """
        ids, self.last_capped = self._generate(loaded, inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
        return ids

    @torch.inference_mode()
    def _generate(
        self,
        loaded: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: Sequence[int],
        num_beams: int,
    ) -> tuple[torch.Tensor, list[bool]]:
        caps = [int(c) for c in max_new_tokens]
        batch_size = inputs["input_ids"].shape[0]
        if len(caps) != batch_size:
            raise ValueError(f"{len(caps)} caps for a batch of {batch_size}")
        prompt_length = inputs["input_ids"].shape[1]
        gen_config = loaded.model.generation_config
        eos = gen_config.eos_token_id
        if eos is None:
            eos = loaded.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        eos_list = [eos] if isinstance(eos, int) else list(eos)
        # Force <|im_end|> (the end of the assistant turn) when it is among the EOS ids.
        im_end = loaded.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if im_end in eos_list:
            eos_list = [im_end] + [e for e in eos_list if e != im_end]
        cap = PerRowLengthCap(caps, eos_list, num_beams=num_beams, prompt_length=prompt_length)
        pad = gen_config.pad_token_id
        if pad is None:
            pad = loaded.processor.tokenizer.pad_token_id
        out = loaded.model.generate(
            **inputs,
            # One step past the largest cap, so every capped row (largest included) ends with a forced EOS and
            # is recorded in ``last_capped``: row i yields at most caps[i] text tokens.
            max_new_tokens=max(caps) + 1,
            num_beams=num_beams,
            do_sample=False,
            logits_processor=LogitsProcessorList([cap]),
            eos_token_id=eos_list,
            pad_token_id=pad,
        )
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        return sequences[:, prompt_length:], [bool(h) for h in cap.hit.tolist()]

    # ------------------------------------------------------------------ structure
    def describe_blocks(self, loaded: LoadedModel) -> dict[str, Any]:
        """Module paths (relative to ``loaded.model``) for block-wise quantization.

        Returns a dict with:

        * ``audio_layers`` / ``lm_layers``: path of the ``ModuleList`` of audio-encoder / LM decoder layers,
          with ``n_audio_layers`` / ``n_lm_layers``;
        * ``audio_layer_groups`` / ``lm_layer_groups``: the Linear names inside one layer (relative to the
          layer), grouped by shared input, in forward order;
        * ``projector``: path of the audio->LM projector, ``projector_groups`` its Linears (full paths), one
          group each (``linear_1`` -> GELU -> ``linear_2``);
        * ``other_linears``: Linears outside those blocks (audio ``conv_out`` after the conv stack, ``lm_head``,
          tied to the input embeddings).
        """
        model = loaded.model
        modules = dict(model.named_modules())
        audio_layers = "model.audio_tower.layers"
        lm_layers = "model.language_model.layers"
        projector = "model.multi_modal_projector"
        for path in (audio_layers, lm_layers, projector):
            if path not in modules:
                raise KeyError(f"{path} not found in {type(model).__name__}")

        audio_rules = [
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.out_proj",),
            ("fc1",),
            ("fc2",),
        ]
        lm_rules = [
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.o_proj",),
            ("mlp.gate_proj", "mlp.up_proj"),
            ("mlp.down_proj",),
        ]
        audio_groups = _groups_for(modules[audio_layers][0], audio_rules, audio_layers + ".0")
        lm_groups = _groups_for(modules[lm_layers][0], lm_rules, lm_layers + ".0")
        proj_linears = [
            name for name, m in modules[projector].named_modules() if isinstance(m, torch.nn.Linear)
        ]
        projector_groups = [[f"{projector}.{name}"] for name in proj_linears]

        other = {}
        for key, path in (("audio_conv_out", "model.audio_tower.conv_out"), ("lm_head", "lm_head")):
            if isinstance(modules.get(path), torch.nn.Linear):
                other[key] = path
        return {
            "audio_layers": audio_layers,
            "n_audio_layers": len(modules[audio_layers]),
            "audio_layer_groups": audio_groups,
            "projector": projector,
            "projector_groups": projector_groups,
            "lm_layers": lm_layers,
            "n_lm_layers": len(modules[lm_layers]),
            "lm_layer_groups": lm_groups,
            "other_linears": other,
        }

    # ------------------------------------------------------------------ quantization
    def stages(self, loaded: LoadedModel) -> list[Stage]:
        """Audio-encoder blocks, then the projector (one stage of its own), then the LM's blocks."""
        blocks = self.describe_blocks(loaded)
        projector = blocks["projector"]
        return [
            Stage("encoder", blocks["audio_layers"], tuple(LinearGroup(tuple(g)) for g in blocks["audio_layer_groups"]), mask="encoder"),
            Stage("projector", projector,
                  tuple(LinearGroup((name[len(projector) + 1:],)) for (name,) in blocks["projector_groups"]),
                  mask="encoder", single=True),
            Stage("decoder", blocks["lm_layers"], tuple(LinearGroup(tuple(g)) for g in blocks["lm_layer_groups"]), mask="decoder"),
        ]

    def calibration_batch(self, loaded: LoadedModel, audios, texts) -> CalibrationBatch:
        """Teacher forcing: the transcription prompt (English forced, ending in ``<asr_text>``) followed
        by the reference text tokens, right-padded so rotary positions count from 0 in every row.

        The audio tower's hidden states hold only frames of real chunks, so its mask is None.
        """
        inputs = self.prepare_inputs(loaded, audios)
        tokenizer = loaded.processor.tokenizer
        rows = []
        for ids, keep, text in zip(inputs["input_ids"], inputs["attention_mask"].bool(), texts):
            prompt = ids[keep].tolist()
            rows.append(prompt + tokenizer(text.strip(), add_special_tokens=False).input_ids)
        input_ids, mask = right_pad(rows, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        inputs.update(input_ids=input_ids.to(loaded.device), attention_mask=mask.long().to(loaded.device))
        return CalibrationBatch(inputs, {"encoder": None, "decoder": mask.to(loaded.device)})


def _groups_for(layer: torch.nn.Module, rules: list[tuple[str, ...]], where: str) -> list[list[str]]:
    """Check a layer's Linears against the expected grouping; every Linear must be in exactly one group."""
    linears = [name for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    groups = [[n for n in rule if n in linears] for rule in rules]
    groups = [g for g in groups if g]
    covered = [n for g in groups for n in g]
    missing = sorted(set(linears) - set(covered))
    if missing:
        raise ValueError(f"Linears in {where} not covered by the grouping rules: {missing}")
    return groups
