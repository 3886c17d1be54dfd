"""llm-compressor's GPTQ on a Whisper checkpoint folder: the peer in fade's calibration benchmark.

Run it with the python of ``.venv-llmcompressor/`` (see ``setup_llmcompressor.sh``), not fade's.
It imports nothing from fade and nothing outside llm-compressor's own environment.
``experiments/bench/calibration_vs_peers.py`` (the parent) passes it the transformers folder of
the model (fade's offline conversion cache) and the calibration draw (ids, audio paths, texts).
This script reads the audio itself with soundfile, runs ``oneshot``, and writes the quantized
weights as safetensors. The parent then scores WER with fade's runner.

    .venv-llmcompressor/bin/python experiments/bench/peers/llmcompressor_gptq.py \\
        --model-dir ~/.cache/fade/models/whisper-tiny.en-... --calibration calib.json \\
        --bits 4 --out /tmp/q.safetensors --report /tmp/q.json [--as-is] [--grid matched]

Recipe: llm-compressor's Whisper example
(``examples/multimodal_audio/whisper_example.py`` in vllm-project/llm-compressor, the
transformers-v5 version that goes with 0.14), followed step by step:

* load ``WhisperForConditionalGeneration.from_pretrained`` and set
  ``config.forced_decoder_ids = None``;
* build each sample with ``processor(audio=..., sampling_rate=..., text=" " + text,
  add_special_tokens=True)`` and set ``decoder_input_ids = labels``. This is teacher forcing
  on the reference: prefix tokens, text, EOS. Multilingual models first call
  ``set_prefix_tokens(language="en", task="transcribe")``. The example's ``.capitalize()`` is
  left out because kathleen's texts are already cased;
* use the example's collator (input features cast to the model dtype, then
  ``default_data_collator``), ``batch_size=1`` (oneshot's default; the teacher-forced lengths
  differ between samples) and ``max_seq_length=2048``;
* quantize with ``GPTQModifier(targets="Linear", scheme="W{bits}A16", ignore=["proj_out"])``:
  symmetric integer groups of 128 and GPTQ's defaults (block 128, dampening 0.01,
  ``actorder`` static). ``--grid matched`` uses fade's grid instead (asymmetric, no act-order)
  through ``config_groups``;
* use the sequential pipeline with ``sequential_targets=["WhisperEncoderLayer",
  "WhisperDecoderLayer"]``. These are the model's ``_no_split_modules``, which oneshot would
  also choose without being told.

What this script changes to make the example run (``--as-is`` turns the change off and
reproduces the failure). The sequential pipeline traces the model with torch.fx. Before tracing,
llm-compressor's AST auto-wrapper rewrites each ancestor's ``forward``: every ``if`` whose
condition it cannot evaluate from the module alone (from ``self`` and the module's globals, not
from the call's arguments or locals) becomes one opaque ``torch.fx.wrap`` call. With
transformers 5.x, two branches in Whisper's forwards take the encoder layers out of the trace:

1. ``WhisperModel.forward``: ``if encoder_outputs is None: ... self.encoder(...)`` branches on
   an argument, so the whole encoder call becomes one opaque leaf;
2. ``WhisperEncoder.forward``: the layer-drop flag, ``to_drop = False; if self.training: ...;
   if not to_drop: hidden_states = encoder_layer(...)``, tests a local. So each encoder layer
   call would also be wrapped, even after fix 1.

Only the decoder layers are partitioned, which gives 5 subgraphs for the 8 targets of tiny.en
(llm-compressor warns "Expected 8 subgraphs, but only traced 5"). The encoder Linears run only
inside the opaque call, where calibration hooks are disabled, so their observers never see data.
GPTQ then stops at the first encoder layer with "No statistics available. Call observer(value)
first.".

The fix swaps in two traceable forwards, for the duration of ``oneshot`` only: a context manager
sets them as class attributes and puts the originals back afterwards. Both are transformers
5.x's own code with one branch rewritten:

* ``WhisperModel.forward`` calls the encoder unconditionally, because calibration always passes
  ``input_features`` and never ``encoder_outputs``. SpecAugment masking stays behind
  ``if self.training:``, a condition the auto-wrapper evaluates (to False);
* ``WhisperEncoder.forward`` writes layer-drop the way transformers' own ``WhisperDecoder`` does:
  ``if self.training and torch.rand([]) < self.layerdrop: continue``. This is the same
  behaviour in training and eval, and it can be evaluated statically.

Nothing else changes: no layer, attention or Linear forward, no GPTQ or observer code, no
llm-compressor source, and the decoder forward is untouched (it traces as it is). Before
``oneshot``, the script runs one calibration sample through both the original and the swapped
forwards and records the largest logit difference as ``swap_check_max_abs_diff`` (0.0 when the
two agree). The report also records the number of traced subgraphs, a grid check of every
quantized Linear, and GPTQ's round-to-nearest fallbacks.

Timing: wall time (``perf_counter``), CPU time (``process_time``, summed over all threads) and
peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` just before) are measured around
``oneshot`` only. The same three are also measured for the whole process, from its start until
the weights are written.
"""

from __future__ import annotations

import time

_T0_WALL, _T0_CPU = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.metadata as metadata  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqModelOutput  # noqa: E402
from transformers.utils import can_return_tuple  # noqa: E402
from transformers.utils.generic import merge_with_config_defaults  # noqa: E402
from transformers.utils.output_capturing import capture_outputs  # noqa: E402

from rss import reset_peak_rss, status_mib  # noqa: E402  (beside this script; the venv has no fade)

SEQUENTIAL_TARGETS = ["WhisperEncoderLayer", "WhisperDecoderLayer"]
SAMPLE_RATE = 16_000
MAX_SEQUENCE_LENGTH = 2048  # the example's value

CHANGES = [
    "WhisperModel.forward (during oneshot only): the encoder is called unconditionally instead of under "
    "`if encoder_outputs is None:`, which llm-compressor's auto-wrapper turned into one opaque call hiding every "
    "encoder layer; SpecAugment stays under `if self.training:`",
    "WhisperEncoder.forward (during oneshot only): layer-drop written as in transformers' WhisperDecoder "
    "(`if self.training and torch.rand([]) < self.layerdrop: continue`) instead of the `to_drop` flag, whose "
    "`if not to_drop:` made the auto-wrapper wrap each encoder layer call",
]


# --------------------------------------------------------------------------- traceable forwards
# transformers 5.x's WhisperModel.forward and WhisperEncoder.forward, with one branch each rewritten
# (module docstring). llm-compressor recompiles a forward from its source, with the globals of the
# module that defines it (hence the imports at the top: nn, torch, BaseModelOutput, ...), and looks
# for a function named ``forward``: hence one holder class per forward.


class TraceableWhisperModel:
    """Holds the swapped-in ``WhisperModel.forward`` (llm-compressor recompiles a function named ``forward``)."""

    @can_return_tuple
    def forward(
        self,
        input_features=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        past_key_values=None,
        decoder_inputs_embeds=None,
        decoder_position_ids=None,
        use_cache=None,
        **kwargs,
    ):
        # was: `if encoder_outputs is None:` (mask, then encode) / `elif not isinstance(...)`: calibration always
        # passes input_features and never encoder_outputs, so the encoder always runs.
        if self.training:
            input_features = self._mask_input_features(input_features, attention_mask=attention_mask)
        encoder_outputs = self.encoder(
            input_features,
            **kwargs,
        )

        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs[0],
            past_key_values=past_key_values,
            inputs_embeds=decoder_inputs_embeds,
            position_ids=decoder_position_ids,
            use_cache=use_cache,
            **kwargs,
        )

        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            past_key_values=decoder_outputs.past_key_values,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


class TraceableWhisperEncoder:
    """Holds the swapped-in ``WhisperEncoder.forward``."""

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_features,
        attention_mask=None,
        **kwargs,
    ):
        expected_seq_length = self.config.max_source_positions * self.conv1.stride[0] * self.conv2.stride[0]
        if input_features.shape[-1] != expected_seq_length:
            raise ValueError(
                f"Whisper expects the mel input features to be of length {expected_seq_length}, but found {input_features.shape[-1]}. Make sure to pad the input mel features to {expected_seq_length}."
            )

        inputs_embeds = nn.functional.gelu(self.conv1(input_features))
        inputs_embeds = nn.functional.gelu(self.conv2(inputs_embeds))

        inputs_embeds = inputs_embeds.permute(0, 2, 1)
        all_positions = torch.arange(self.embed_positions.num_embeddings, device=inputs_embeds.device)

        hidden_states = inputs_embeds + self.embed_positions(all_positions)
        hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)

        for idx, encoder_layer in enumerate(self.layers):
            # add LayerDrop (see https://huggingface.co/papers/1909.11556 for description)
            # was: `to_drop = False; if self.training: ... to_drop = True; if not to_drop: <layer>`; now as WhisperDecoder
            if self.training and torch.rand([]) < self.layerdrop:
                continue

            hidden_states = encoder_layer(
                hidden_states,
                None,
                **kwargs,
            )

        hidden_states = self.layer_norm(hidden_states)

        return BaseModelOutput(
            last_hidden_state=hidden_states,
        )


@contextlib.contextmanager
def traceable_whisper():
    """Swap the traceable forwards into transformers' Whisper classes, restoring the originals on exit."""
    from transformers.models.whisper import modeling_whisper as mw

    saved = mw.WhisperModel.forward, mw.WhisperEncoder.forward
    mw.WhisperModel.forward = TraceableWhisperModel.forward
    mw.WhisperEncoder.forward = TraceableWhisperEncoder.forward
    try:
        yield
    finally:
        mw.WhisperModel.forward, mw.WhisperEncoder.forward = saved


# --------------------------------------------------------------------------- data


def read_calibration(path: Path) -> list[dict]:
    """The parent's calibration draw: [{"id", "path", "text"}], audio decoded here (16 kHz mono)."""
    rows = json.loads(Path(path).read_text())
    out = []
    for row in rows:
        samples, rate = soundfile.read(row["path"], dtype="float32", always_2d=False)
        if samples.ndim == 2:
            samples = samples.mean(axis=1, dtype=np.float32)
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{row['path']}: {rate} Hz; this worker reads 16 kHz audio only (no resampler here)")
        out.append({"array": samples, "sampling_rate": rate, "text": " " + row["text"].strip()})
    return out


def build_dataset(samples: list[dict], processor, dtype: torch.dtype):
    """The example's preprocessing: processor(audio, text) -> input_features and decoder_input_ids = labels."""
    from datasets import Dataset
    from transformers import default_data_collator

    ds = Dataset.from_list(samples)

    def process(sample):
        inputs = processor(audio=sample["array"], sampling_rate=sample["sampling_rate"], text=sample["text"],
                           add_special_tokens=True, return_tensors="pt")
        inputs["decoder_input_ids"] = inputs["labels"]  # treat labels as calibration prefill
        del inputs["labels"]
        return {key: value[0] for key, value in inputs.items()}  # strip the extra batch dim

    ds = ds.map(process, remove_columns=ds.column_names)

    def data_collator(features):  # the example's patch: processor vs model dtype
        for feature in features:
            feature["input_features"] = torch.tensor(feature["input_features"], dtype=dtype)
        return default_data_collator(features, return_tensors="pt")

    return ds, data_collator


# --------------------------------------------------------------------------- recipe and checks


def build_recipe(bits: int, group_size: int, grid: str):
    from llmcompressor.modifiers.gptq import GPTQModifier

    if grid == "recipe":
        if group_size != 128:
            raise SystemExit("--grid recipe is the W{bits}A16 preset, groups of 128; use --grid matched for other sizes")
        return GPTQModifier(targets="Linear", scheme=f"W{bits}A16", ignore=["proj_out"])
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=bits, type="int", strategy="group", group_size=group_size, symmetric=False,
                               dynamic=False)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    return GPTQModifier(config_groups={"group_0": scheme}, ignore=["proj_out"], actorder=None)


def check_grid(model: torch.nn.Module, bits: int) -> dict:
    """Every quantized Linear's weight must be (q - z) * s with integer q in the signed b-bit range."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    checked, bad, worst = 0, [], 0.0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or not hasattr(module, "weight_scale"):
            continue
        w = module.weight.detach().float()
        s = module.weight_scale.detach().float()
        z = getattr(module, "weight_zero_point", None)
        z = torch.zeros_like(s) if z is None else z.detach().float()
        g_idx = getattr(module, "weight_g_idx", None)
        if g_idx is None or (g_idx < 0).any():
            group = w.shape[1] // s.shape[1]
            g_idx = torch.arange(w.shape[1]) // group
        g_idx = g_idx.long()
        t = w / s[:, g_idx]
        off = float((t - t.round()).abs().max())
        q = t.round() + z[:, g_idx]
        worst = max(worst, off)
        checked += 1
        if off > 1e-2 or q.min() < qmin or q.max() > qmax:
            bad.append(name)
    return {"linears_quantized": checked, "linears_off_grid": bad, "max_grid_residual": round(worst, 6)}


def swap_check(model, batch: dict) -> float:
    """Largest |logit difference| between transformers' forwards and the traceable ones on one sample."""
    with torch.no_grad():
        reference = model(**batch).logits
        with traceable_whisper():
            swapped = model(**batch).logits
    return float((reference - swapped).abs().max())


# --------------------------------------------------------------------------- main


def _versions() -> dict:
    names = ("llmcompressor", "compressed-tensors", "transformers", "torch", "accelerate")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="transformers Whisper folder")
    parser.add_argument("--calibration", type=Path, required=True, help='JSON list of {"id", "path", "text"}')
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--grid", choices=["recipe", "matched"], default="recipe",
                        help="recipe: the example's W{bits}A16 preset (symmetric, act-order static); "
                             "matched: fade's grid (asymmetric, no act-order)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--as-is", action="store_true", help="no traceable forwards: reproduce the failure")
    parser.add_argument("--out", type=Path, help="safetensors of the quantized (dequantized) weights")
    parser.add_argument("--report", type=Path, help="JSON report (also printed as the last stdout line)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from llmcompressor import oneshot
    from llmcompressor.pipelines.sequential import pipeline as sequential_pipeline
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32)
    model.config.forced_decoder_ids = None
    processor = WhisperProcessor.from_pretrained(args.model_dir)
    if getattr(model.generation_config, "is_multilingual", False):
        processor.tokenizer.set_prefix_tokens(language="en", task="transcribe")
    original_keys = list(model.state_dict().keys())

    samples = read_calibration(args.calibration)
    ds, data_collator = build_dataset(samples, processor, model.dtype)
    first = data_collator([dict(ds[0])])
    prefix = processor.tokenizer.convert_ids_to_tokens(first["decoder_input_ids"][0][:4].tolist())
    swap_diff = None if args.as_is else swap_check(model, first)

    # Observation only: count the subgraphs the sequential pipeline traces.
    traced: dict[str, int] = {}
    trace_subgraphs = sequential_pipeline.trace_subgraphs

    def counting_trace_subgraphs(model_, sample_input, sequential_targets, *rest, **kw):
        subgraphs = trace_subgraphs(model_, sample_input, sequential_targets, *rest, **kw)
        traced["subgraphs"] = len(subgraphs)
        return subgraphs

    sequential_pipeline.trace_subgraphs = counting_trace_subgraphs
    targets = sum(type(m).__name__ in SEQUENTIAL_TARGETS for m in model.modules())

    recipe = build_recipe(args.bits, args.group_size, args.grid)
    rss_before = status_mib("VmRSS")
    reset_ok = reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    error = None
    try:
        with contextlib.nullcontext() if args.as_is else traceable_whisper():
            oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=MAX_SEQUENCE_LENGTH,
                    num_calibration_samples=len(samples), data_collator=data_collator,
                    sequential_targets=SEQUENTIAL_TARGETS)
    except Exception as exc:  # --as-is: the failure being reproduced
        error = f"{type(exc).__name__}: {exc}".strip()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_oneshot = status_mib() if reset_ok else None

    report = {
        "method": "llmcompressor-gptq", "grid": args.grid, "as_is": args.as_is, "bits": args.bits,
        "group_size": args.group_size, "utterances": len(samples), "threads": torch.get_num_threads(),
        "batch_size": 1, "decoder_prefix": prefix, "versions": _versions(),
        "sequential_targets": targets, "subgraphs_traced": traced.get("subgraphs"), "subgraphs_expected": targets + 1,
        "swap_check_max_abs_diff": swap_diff, "changes": [] if args.as_is else CHANGES,
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": peak_oneshot, "rss_before_mib": rss_before,
    }
    report["rtn_fallbacks"] = list(getattr(recipe, "_rtn_fallback_module_names", []))
    if error is not None:
        report["error"] = error[-2000:]
    else:
        report.update(check_grid(model, args.bits))
        if args.out is not None:
            from safetensors.torch import save_file

            state = model.state_dict()
            # proj_out is tied to the token embeddings (and ignored by the recipe); the loader re-ties it.
            tensors = {k: state[k].detach().contiguous().clone() for k in original_keys if k != "proj_out.weight"}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(args.out), metadata={"producer": "llmcompressor_gptq.py", "bits": str(args.bits)})
            report["weights"] = str(args.out)
    report["total_wall_s"] = round(time.perf_counter() - _T0_WALL, 2)
    report["total_cpu_s"] = round(time.process_time() - _T0_CPU, 2)
    report["total_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    if error is not None and not args.as_is:
        raise SystemExit(f"oneshot failed: {error[-500:]}")


if __name__ == "__main__":
    main()
