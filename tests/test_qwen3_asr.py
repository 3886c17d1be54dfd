"""Qwen3-ASR adapter on a tiny random model: fast, CPU only, no network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fade.models.base import Transcripts
from fade.models.qwen3_asr import PerRowLengthCap, Qwen3ASRFamily, _strip_language_prefix


@pytest.fixture(scope="module")
def family() -> Qwen3ASRFamily:
    return Qwen3ASRFamily()


@pytest.fixture(scope="module")
def loaded(family):
    return family.build_random(seed=0)


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    # 1.3 s and 2.6 s: neither a multiple of the encoder's 1 s chunk, different lengths.
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (20_800, 41_600)]


def _eos_ids(loaded) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    return set([eos] if isinstance(eos, int) else eos)


def _n_text_tokens(row: torch.Tensor, eos: set[int]) -> int:
    """New tokens before the first EOS (the cap counts those)."""
    n = 0
    for tok in row.tolist():
        if tok in eos:
            break
        n += 1
    return n


def test_build_random_is_deterministic(family):
    state = torch.random.get_rng_state()
    a = family.build_random(seed=7)
    b = family.build_random(seed=7)
    c = family.build_random(seed=8)
    assert torch.equal(state, torch.random.get_rng_state()), "build_random must not disturb the global RNG"
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert a.revision == b.revision != c.revision
    assert a.family == "qwen3_asr"
    assert not a.model.training


def test_prepare_inputs_prompt_and_padding(family, loaded, audios):
    inputs = family.prepare_inputs(loaded, audios)
    assert set(inputs) == {"input_ids", "attention_mask", "input_features", "input_features_mask"}
    assert all(t.device == loaded.device for t in inputs.values())
    tok = loaded.processor.tokenizer
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape[0] == 2
    # Left padding: every row ends at the last column; the shorter clip has fewer audio placeholders.
    assert bool(mask[:, -1].all())
    assert mask[0, 0] == 0 and mask[1, 0] == 1
    audio_id = loaded.model.config.audio_token_id
    n_audio = (ids == audio_id).sum(dim=1).tolist()
    assert n_audio[0] < n_audio[1]
    # The model's own rule: 13 encoder frames per 100-frame chunk plus the remainder's post-conv length.
    frames = inputs["input_features_mask"].sum(dim=1).tolist()
    assert n_audio == [(f // 100) * 13 + ((f % 100) + 7) // 8 for f in frames]
    for row, m in zip(ids, mask):
        text = tok.decode(row[m.bool()])
        assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|>")
        assert text.endswith("<|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\nlanguage English<asr_text>")
    # Padded mel frames are zeroed (batch invariance).
    feats, fmask = inputs["input_features"], inputs["input_features_mask"]
    assert float(feats.masked_select(~fmask.bool()[:, None, :]).abs().sum()) == 0.0


def test_generate_two_lengths_deterministic(family, loaded, audios):
    inputs = family.prepare_inputs(loaded, audios)
    out1 = family.generate(loaded, inputs, max_new_tokens=[8, 8])
    out2 = family.generate(loaded, family.prepare_inputs(loaded, audios), max_new_tokens=[8, 8])
    assert isinstance(out1, Transcripts)
    assert len(out1.texts) == 2 and all(isinstance(s, str) for s in out1.texts)
    assert len(out1.capped) == 2 and all(isinstance(c, bool) for c in out1.capped)
    assert out1 == out2
    # A fresh model from the same seed gives the same transcripts.
    other = family.build_random(seed=0)
    assert family.generate(other, family.prepare_inputs(other, audios), max_new_tokens=[8, 8]) == out1
    # Greedy ids are audio dependent on this random model (the test is not vacuous).
    ids = family.generate_ids(loaded, inputs, max_new_tokens=[8, 8])
    assert not torch.equal(ids[0], ids[1])


def test_batched_equals_one_by_one(family, loaded, audios):
    batched = family.generate_ids(loaded, family.prepare_inputs(loaded, audios), max_new_tokens=[6, 6])
    eos = _eos_ids(loaded)
    for i, audio in enumerate(audios):
        single = family.generate_ids(loaded, family.prepare_inputs(loaded, [audio]), max_new_tokens=[6])
        n = _n_text_tokens(single[0], eos)
        assert batched[i, :n].tolist() == single[0, :n].tolist()


@pytest.mark.parametrize("num_beams", [1, 2])
def test_per_row_caps(family, loaded, audios, num_beams):
    inputs = family.prepare_inputs(loaded, audios)
    ids = family.generate_ids(loaded, inputs, max_new_tokens=[1, 5], num_beams=num_beams)
    eos = _eos_ids(loaded)
    assert ids.shape[1] <= 6
    assert _n_text_tokens(ids[0], eos) <= 1
    assert _n_text_tokens(ids[1], eos) <= 5
    if num_beams == 1:
        # Unconstrained, row 0 would have gone on (so the cap did the stopping).
        free = family.generate_ids(loaded, inputs, max_new_tokens=[5, 5])
        assert _n_text_tokens(free[0], eos) > 1
        assert family.last_capped == [True, True]
        capped = family.generate_ids(loaded, inputs, max_new_tokens=[1, 5])
        assert capped[0, 0] == free[0, 0] and int(capped[0, 1]) in eos
        assert capped[1].tolist() == free[1].tolist()
    out = family.generate(loaded, inputs, max_new_tokens=[0, 3], num_beams=num_beams)
    assert out.texts[0] == "" and out.capped[0]


def test_per_row_length_cap_unit():
    eos = 3
    proc = PerRowLengthCap([0, 2], eos_token_id=eos, num_beams=2)
    scores = torch.zeros(4, 6)
    prompt = torch.ones(4, 5, dtype=torch.long)
    out = proc(prompt, scores.clone())  # first call: 0 generated, utterance 0 (rows 0-1) is at its cap
    assert out[:2].argmax(dim=1).tolist() == [eos, eos] and torch.isinf(out[:2]).sum() == 2 * 5
    assert torch.equal(out[2:], scores[2:])
    two = torch.cat([prompt, torch.full((4, 2), 1)], dim=1)
    out = proc(two, scores.clone())
    assert out.argmax(dim=1).tolist() == [eos] * 4
    assert proc.hit.tolist() == [True, True]
    # Several EOS ids: the first is forced, any of them marks a finished row (not counted as capped).
    proc = PerRowLengthCap([1, 1], eos_token_id=[4, 5])
    ended = torch.tensor([[9, 9, 5], [9, 9, 2]])
    out = proc(ended[:, :2], torch.zeros(2, 6))
    out = proc(ended, torch.zeros(2, 6))
    assert out.argmax(dim=1).tolist() == [4, 4]
    assert proc.hit.tolist() == [False, True]


def test_strip_language_prefix():
    assert _strip_language_prefix("language English<asr_text> hello world") == "hello world"
    assert _strip_language_prefix(" hello world ") == "hello world"
    assert _strip_language_prefix("language None<asr_text>") == ""
    assert _strip_language_prefix("language English") == ""
    assert _strip_language_prefix("a<asr_text>b<asr_text>c") == "b<asr_text>c"


def test_describe_blocks(family, loaded):
    blocks = family.describe_blocks(loaded)
    modules = dict(loaded.model.named_modules())
    for key in ("audio_layers", "lm_layers"):
        layers = modules[blocks[key]]
        assert isinstance(layers, torch.nn.ModuleList)
        groups = blocks["audio_layer_groups" if key == "audio_layers" else "lm_layer_groups"]
        assert len(layers) == blocks["n_" + key]
        for layer in layers:
            sub = dict(layer.named_modules())
            linears = {n for n, m in sub.items() if isinstance(m, torch.nn.Linear)}
            named = [n for g in groups for n in g]
            assert sorted(named) == sorted(linears), "each Linear in exactly one group"
            assert len(named) == len(set(named))
    assert blocks["lm_layer_groups"] == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]
    assert blocks["audio_layer_groups"] == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.out_proj"],
        ["fc1"],
        ["fc2"],
    ]
    projector = modules[blocks["projector"]]
    proj_linears = {f"{blocks['projector']}.{n}" for n, m in projector.named_modules() if isinstance(m, torch.nn.Linear)}
    assert sorted(n for g in blocks["projector_groups"] for n in g) == sorted(proj_linears)
    for path in blocks["other_linears"].values():
        assert isinstance(modules[path], torch.nn.Linear)
    # Every Linear of the model is somewhere in the description.
    described = set(proj_linears) | set(blocks["other_linears"].values())
    for key, gkey in (("audio_layers", "audio_layer_groups"), ("lm_layers", "lm_layer_groups")):
        for i in range(blocks["n_" + key]):
            described |= {f"{blocks[key]}.{i}.{n}" for g in blocks[gkey] for n in g}
    all_linears = {n for n, m in modules.items() if isinstance(m, torch.nn.Linear)}
    assert all_linears == described


def test_load_pretrained_from_local_folder(family, loaded, audios, tmp_path):
    loaded.model.save_pretrained(tmp_path)
    loaded.processor.save_pretrained(tmp_path)
    again = family.load_pretrained(str(tmp_path), dtype=torch.float32, local_files_only=True)
    assert again.revision.startswith("dir-")
    assert again.revision == family.load_pretrained(str(tmp_path), dtype=torch.float32, local_files_only=True).revision
    a = family.generate_ids(loaded, family.prepare_inputs(loaded, audios), max_new_tokens=[6, 6])
    b = family.generate_ids(again, family.prepare_inputs(again, audios), max_new_tokens=[6, 6])
    assert torch.equal(a, b)


def test_load_pretrained_refuses_original_layout(family, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_asr", "thinker_config": {}}))
    with pytest.raises(ValueError, match="-hf"):
        family.load_pretrained(str(tmp_path), dtype=torch.float32, local_files_only=True)
