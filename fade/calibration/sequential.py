"""Sequential dual-stream calibration: quantize block by block, group by group, in forward order.

Two copies of the model run side by side on the same calibration batches:

- the full-precision stream (X): the original model, never modified;
- the quantized stream (X̂): a copy whose Linears are replaced by their quantized weights
  as the loop reaches them, so every later layer sees the error of all earlier ones.

For each stage (encoder blocks, [projector], decoder blocks), the inputs of the stage's
first block are caught by running each model up to it. Each block is then run on those
cached inputs: for each group of Linears sharing an input, both streams run the block up to
that group (a hook stops the forward there), the statistics Ĥ = Σx̂x̂ᵀ, C = Σ(x − x̂)x̂ᵀ and
H = Σxxᵀ are accumulated batch by batch, and the group's Linears are corrected and
quantized. Then both streams run the whole block to produce the next block's inputs.

Memory: the cached hidden states of the calibration set for both streams (one tensor per
batch and stream, plus the encoder outputs the decoder's cross-attention reads), one batch
of activations, and the statistics of one group. Statistics are never built from stacked tokens.
Replay adds, per stream, the frozen attention outputs of the block in progress and, until the
last stage has caught its inputs, the last-block outputs of the finished stages. At the peak
(a block's outputs being built) that is three hidden-size tensors per utterance and stream
(experiments/bench/scaling.py measures the slope).

Cross-attention key/value projections read the encoder output, which is the same for every
decoder block: their statistics are computed once per stage and reused.

Frozen sub-modules are not re-run. Within a block, every group's partial forward starts again from
the block input; a direct child of the block whose Linears are all quantized already (the
attention module once its q/k/v/out projections are done) gives the same output on every later
call for that batch, so its output is kept (one hidden-size tensor per batch and stream, dropped
when the block is done) and replayed instead of recomputing the attention. The first time such an
output is needed it is not recomputed either: the attention module ends with its output projection,
whose input was caught at that projection's own turn, so the output is that projection applied to
the kept input (checked bit for bit against a full run on the first batch of every block). The
result is bit for bit the same as recomputing everything (tested); ``cache_frozen_outputs=False``
turns replay off, ``attention_shortcut=False`` only the last step.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from fade.calibration.layer import AlphaPolicy, LayerStatistics, QuantizedWeight, QuantizerSettings, process_linear
from fade.data.utterance import Utterance
from fade.errors import QuantizationError
from fade.models.base import CalibrationBatch, LinearGroup, LoadedModel, ModelFamily, Stage
from fade.quant import HessianAccumulator, QEPStatistics, check_group_fits

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by a hook once it has what it needs, so the rest of the forward is skipped."""


def _call_until(module: torch.nn.Module, target: torch.nn.Module, run) -> tuple[tuple, dict]:
    """Run ``run()`` and return the (args, kwargs) ``target`` is called with, stopping there."""
    caught: dict[str, Any] = {}

    def hook(_module, args, kwargs):
        caught["args"], caught["kwargs"] = args, kwargs
        raise _StopForward

    handle = target.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "args" not in caught:
        raise RuntimeError(f"{type(target).__name__} was never called while running {type(module).__name__}")
    return caught["args"], caught["kwargs"]


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def _output(result) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


@dataclass
class _Inputs:
    """The cached call of a block for one batch: positional and keyword arguments."""

    args: tuple
    kwargs: dict

    def advance(self, hidden: torch.Tensor) -> "_Inputs":
        if self.args:
            return _Inputs((hidden,) + tuple(self.args[1:]), self.kwargs)
        key = next(iter(self.kwargs))
        return _Inputs(self.args, {**self.kwargs, key: hidden})


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


class _FrozenOutputs:
    """Replays the outputs of a block's frozen children (see the module docstring).

    ``linears_of_child`` maps each direct child of the block to the names (relative to the block)
    of the planned Linears inside it, in forward order; a child is frozen once all of them are in
    ``done``. Children with no planned Linear (norms, activations) are cheap and left alone.

    The first output of a frozen child is not always computed by running it: an attention module
    ends with its output projection, so its output is that Linear applied to the input caught at
    the Linear's own turn (``remember_input``), and the attention core need not run a second time.
    Whether a child really returns its last Linear's output (alone, or first in a tuple of Nones)
    is checked bit for bit on the first batch that has both; a child that fails the check is
    simply run, as before.
    """

    def __init__(self, block: torch.nn.Module, linears_of_child: dict[str, list[str]], num_batches: int):
        self.block = block
        self.linears_of_child = linears_of_child
        self.outputs: dict[str, list[Any]] = {name: [None] * num_batches for name in linears_of_child}
        self.last_linear = {child: names[-1] for child, names in linears_of_child.items()}
        self.last_inputs: dict[str, list[torch.Tensor | None]] = {name: [None] * num_batches for name in linears_of_child}
        #: child -> position of the Linear's output in the child's output (-1: the output itself);
        #: None until checked, False when the child's output is something else.
        self.shortcut: dict[str, int | bool | None] = {name: None for name in linears_of_child}
        self.shortcut_calls = 0

    def frozen(self, done: set[str]) -> list[str]:
        return [child for child, names in self.linears_of_child.items() if all(n in done for n in names)]

    def remember_input(self, linear_name: str, batch: int, x: torch.Tensor) -> None:
        """Keep the input of a child's last Linear, caught at that Linear's turn (see the class docstring)."""
        child = linear_name.split(".")[0]
        if self.last_linear.get(child) == linear_name and self.shortcut[child] is not False:
            self.last_inputs[child][batch] = x

    def _last_linear_output(self, child: str, batch: int) -> torch.Tensor:
        x = self.last_inputs[child][batch]
        self.last_inputs[child][batch] = None
        return self.block.get_submodule(self.last_linear[child])(x)

    @staticmethod
    def _position(output, expected: torch.Tensor) -> int | bool:
        if isinstance(output, torch.Tensor):
            return -1 if torch.equal(output, expected) else False
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor) and all(o is None for o in output[1:]):
            return len(output) if torch.equal(output[0], expected) else False
        return False

    def _check_shortcut(self, child: str, batch: int) -> None:
        if self.shortcut[child] is None and self.last_inputs[child][batch] is not None:
            self.shortcut[child] = self._position(self.outputs[child][batch], self._last_linear_output(child, batch))
            if self.shortcut[child] is False:
                log.info("%s does not return its %s output as is: it is run instead", child, self.last_linear[child])
                self.last_inputs[child] = [None] * len(self.last_inputs[child])
        self.last_inputs[child][batch] = None

    def release(self, batch: int) -> None:
        """Forget what was kept for ``batch``: the block is done with it."""
        for child in self.linears_of_child:
            self.outputs[child][batch] = None
            self.last_inputs[child][batch] = None

    def call(self, done: set[str], batch: int, run):
        """Run ``run()`` with frozen children replayed (or recorded, the first time)."""
        handles, patched, recorded = [], [], []
        for child_name in self.frozen(done):
            child = self.block.get_submodule(child_name)
            if "forward" in child.__dict__:
                continue  # someone else patched this instance (e.g. an offloading hook): leave it
            position = self.shortcut[child_name]
            if self.outputs[child_name][batch] is None and position not in (None, False) \
                    and self.last_inputs[child_name][batch] is not None:
                y = self._last_linear_output(child_name, batch)
                self.outputs[child_name][batch] = y if position == -1 else (y,) + (None,) * (position - 1)
                self.shortcut_calls += 1
            cached = self.outputs[child_name][batch]
            if cached is None:
                def keep(_module, _args, output, child_name=child_name):
                    self.outputs[child_name][batch] = _clone(output)
                handles.append(child.register_forward_hook(keep))
                recorded.append(child_name)
            else:
                child.forward = lambda *args, _cached=cached, **kwargs: _clone(_cached)
                patched.append(child)
        try:
            return run()
        finally:
            for handle in handles:
                handle.remove()
            for child in patched:
                del child.forward
            for child_name in recorded:
                if self.outputs[child_name][batch] is not None:
                    self._check_shortcut(child_name, batch)


@dataclass
class CalibrationResult:
    model: torch.nn.Module
    records: list[dict[str, Any]]
    #: Quantized codes/scales per Linear name (for the packed export).
    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _resolve_blocks(model: torch.nn.Module, stage: Stage) -> list[torch.nn.Module]:
    module = model.get_submodule(stage.path)
    return [module] if stage.single else list(module)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, f"*{p}") for p in patterns)


class SequentialCalibrator:
    """Runs the dual-stream loop for one model. See the module docstring for the algorithm."""

    def __init__(self, family: ModelFamily, loaded: LoadedModel, settings: QuantizerSettings, *,
                 policy: AlphaPolicy | None = None, qep_damp: float = 0.01, exclude: Sequence[str] = (),
                 compensation_exclude: Sequence[str] = (), batch_size: int = 8, track_fp: bool = True,
                 record_uncorrected: bool = True, stats_dtype: torch.dtype = torch.float64,
                 stats_product_dtype: torch.dtype | None = None, cache_frozen_outputs: bool = True,
                 attention_shortcut: bool = True):
        self.family = family
        self.loaded = loaded
        self.settings = settings
        self.policy = policy
        self.qep_damp = qep_damp
        self.exclude = list(exclude)
        self.compensation_exclude = list(compensation_exclude)
        self.batch_size = batch_size
        # The full-precision stream is needed for QEP/FADE and for errors measured against the FP output.
        self.track_fp = track_fp or policy is not None
        self.record_uncorrected = record_uncorrected
        self.stats_dtype = stats_dtype
        self.stats_product_dtype = stats_product_dtype or stats_dtype
        #: Keep two halves of the statistics when the α policy scores the correction held out.
        self.split_statistics = bool(getattr(policy, "r_needs_split", False))
        # forward = forward_q + forward_fp (the quantized and the full-precision stream)
        self.timers: dict[str, float] = {"forward": 0.0, "forward_q": 0.0, "forward_fp": 0.0, "statistics": 0.0, "solve": 0.0}
        self.cache_frozen_outputs = cache_frozen_outputs
        #: Build a frozen attention output from its output Linear alone (see _FrozenOutputs); False is
        #: the benchmarks' baseline. Exact either way.
        self.attention_shortcut = attention_shortcut and cache_frozen_outputs
        #: Names (relative to the current block) of the Linears quantized so far in that block.
        self._done: set[str] = set()
        self._frozen: dict[str, _FrozenOutputs] = {}  # per stream, for the current block
        self.replayed_stages = 0  # stage-input catches that replayed finished stages (for tests)
        self.shortcut_calls = 0  # frozen attention outputs computed from their output Linear alone (for tests)

    # -- planning -------------------------------------------------------------------------

    def plan(self, model: torch.nn.Module) -> list[tuple[Stage, int, torch.nn.Module, LinearGroup, str, torch.nn.Linear]]:
        """Every quantizable Linear in order, with checks that settings fit and patterns match."""
        plan = []
        for stage in self.family.stages(self.loaded):
            for index, block in enumerate(_resolve_blocks(model, stage)):
                prefix = stage.path if stage.single else f"{stage.path}.{index}"
                for group in stage.groups:
                    for name in group.names:
                        linear = block.get_submodule(name)
                        if not isinstance(linear, torch.nn.Linear):
                            raise QuantizationError(f"{prefix}.{name} is a {type(linear).__name__}, not a Linear")
                        plan.append((stage, index, block, group, f"{prefix}.{name}", linear))
        names = [p[4] for p in plan]
        for patterns, what in ((self.exclude, "quantizer.exclude"), (self.compensation_exclude, "compensation.exclude")):
            for pattern in patterns:
                if not any(_matches(n, [pattern]) for n in names):
                    raise QuantizationError(
                        f"{what} pattern {pattern!r} matches no quantizable Linear; examples of names: {names[:3]} ... {names[-2:]}"
                    )
        for _, _, _, _, name, linear in plan:
            if not _matches(name, self.exclude):
                check_group_fits(self.settings.grid, linear.in_features, name)
        return plan

    # -- the loop --------------------------------------------------------------------------

    def _batches(self, utterances: Sequence[Utterance]) -> list[CalibrationBatch]:
        # Similar lengths together keep padding (and wasted compute) small.
        audio = {u.id: u.load() for u in utterances}
        ordered = sorted(utterances, key=lambda u: (-len(audio[u.id]), u.id))
        batches = []
        for start in range(0, len(ordered), self.batch_size):
            chunk = ordered[start : start + self.batch_size]
            batches.append(self.family.calibration_batch(self.loaded, [audio[u.id] for u in chunk], [u.text for u in chunk]))
        return batches

    def _add_forward_time(self, stream: str, start: float) -> None:
        seconds = time.perf_counter() - start
        self.timers["forward"] += seconds
        self.timers[f"forward_{stream}"] += seconds

    def _catch_stage_inputs(self, stream: str, model: torch.nn.Module, stage: Stage, batches: list[CalibrationBatch],
                            replay: Sequence[tuple[Stage, list[Any]]] = ()) -> list[_Inputs]:
        """Run ``model`` up to the stage's first block, batch by batch, and keep that block's inputs.

        ``replay`` holds, for each finished stage, the raw output of its last block per batch. Those
        stages are frozen, so their blocks are patched to hand back that output instead of running
        (the encoder is not run again to reach the decoder); anything between blocks, such as the
        encoder's final norm, still runs. Should a model not fit this (a stage whose blocks run more
        than once per forward), the stage inputs are caught again by a full forward.
        """
        first = _resolve_blocks(model, stage)[0]
        start = time.perf_counter()
        try:
            caught = self._catch_with_replay(model, first, batches, replay if self.cache_frozen_outputs else ())
            self.replayed_stages += bool(replay and self.cache_frozen_outputs)
        except Exception as exc:  # noqa: BLE001 - any failure of the shortcut falls back to the plain forward
            log.warning("replaying finished stages failed (%s: %s); running the full forward instead", type(exc).__name__, exc)
            caught = self._catch_with_replay(model, first, batches, ())
        self._add_forward_time(stream, start)
        return caught

    @staticmethod
    def _catch_with_replay(model, first, batches, replay) -> list[_Inputs]:
        current = {"batch": 0}
        patched = []
        try:
            for done_stage, outputs in replay:
                for block in _resolve_blocks(model, done_stage):
                    if "forward" in block.__dict__:
                        raise RuntimeError(f"{type(block).__name__}.forward is already patched")
                    block.forward = lambda *args, _outputs=outputs, **kwargs: _clone(_outputs[current["batch"]])
                    patched.append(block)
            caught = []
            for index, batch in enumerate(batches):
                current["batch"] = index
                caught.append(_Inputs(*_call_until(model, first, lambda b=batch: model(**b.model_inputs, use_cache=False))))
            return caught
        finally:
            for block in patched:
                del block.forward

    def _run_block(self, stream: str, block: torch.nn.Module, batch: int, run):
        frozen = self._frozen.get(stream)
        if frozen is None or frozen.block is not block:
            return run()
        return frozen.call(self._done, batch, run)

    def _group_input(self, stream: str, block: torch.nn.Module, linear: torch.nn.Module, inputs: _Inputs, batch: int) -> torch.Tensor:
        start = time.perf_counter()
        args, _ = self._run_block(stream, block, batch, lambda: _call_until(block, linear, lambda: block(*inputs.args, **inputs.kwargs)))
        self._add_forward_time(stream, start)
        return args[0]

    def _advance(self, stream: str, block: torch.nn.Module, inputs: list[_Inputs]) -> tuple[list[_Inputs], list[Any]]:
        """Run the finished block on every batch: the next block's inputs, and the raw outputs.

        Batch by batch, each batch's input and its kept frozen outputs are dropped as soon as its
        output exists, so the stream holds about one copy of the hidden states here instead of
        three (input, output, kept attention output: 295 MB each for tiny.en's 128 utterances).
        """
        start = time.perf_counter()
        frozen = self._frozen.get(stream)
        raw_outputs = []
        for b in range(len(inputs)):
            x = inputs[b]
            raw = self._run_block(stream, block, b, lambda x=x: block(*x.args, **x.kwargs))
            raw_outputs.append(raw)
            inputs[b] = x.advance(_output(raw))
            del x
            if frozen is not None and frozen.block is block:
                frozen.release(b)
        self._add_forward_time(stream, start)
        return inputs, raw_outputs

    def _start_block(self, stage: Stage, blocks: dict[str, torch.nn.Module], num_batches: int) -> None:
        """Reset the per-block state: nothing quantized yet, no frozen outputs kept."""
        self._done = set()
        self._frozen = {}
        if not self.cache_frozen_outputs:
            return
        planned = [n for group in stage.groups for n in group.names]
        for stream, block in blocks.items():
            linears_of_child: dict[str, list[str]] = {}
            for name in planned:
                child = name.split(".")[0]
                if child != name:  # a Linear that is itself a direct child has nothing to skip
                    linears_of_child.setdefault(child, []).append(name)
            self._frozen[stream] = _FrozenOutputs(block, linears_of_child, num_batches)

    def _statistics(self, stage: Stage, group: LinearGroup, fp_block, q_block, fp_inputs, q_inputs,
                    batches: list[CalibrationBatch]) -> LayerStatistics:
        """Accumulate one group's statistics over all batches.

        With ``split_statistics`` (a held-out R_calib), even and odd batches go to two halves
        A and B; the pooled statistics are their sum, so the correction itself is unchanged.
        """
        first = group.names[0]
        halves: list[list] = [[None, None], [None, None]]  # [half][q-stats, fp-hessian]
        for b, batch in enumerate(batches):
            x_q = self._group_input("q", q_block, q_block.get_submodule(first), q_inputs[b], b)
            x_fp = self._group_input("fp", fp_block, fp_block.get_submodule(first), fp_inputs[b], b) if self.track_fp else None
            for stream, x in (("q", x_q), ("fp", x_fp)) if self.attention_shortcut else ():
                if stream in self._frozen and x is not None:
                    self._frozen[stream].remember_input(first, b, x)
            mask = batch.masks.get("encoder" if group.reads_encoder_output else stage.mask)
            if mask is not None and tuple(mask.shape) != tuple(x_q.shape[:-1]):
                mask = None if mask.all() else mask  # e.g. a stage whose hidden states are packed
                if mask is not None:
                    raise RuntimeError(f"mask {tuple(mask.shape)} does not fit input {tuple(x_q.shape)} of {first}")
            start = time.perf_counter()
            half = halves[b % 2 if self.split_statistics else 0]
            if half[0] is None:
                kinds = dict(dtype=self.stats_dtype, product_dtype=self.stats_product_dtype)
                in_features = x_q.shape[-1]
                half[0] = QEPStatistics(in_features, **kinds) if self.track_fp else HessianAccumulator(in_features, **kinds)
                half[1] = HessianAccumulator(in_features, **kinds) if self.track_fp else None
            if self.track_fp:
                half[0].add(x_fp, x_q, mask)
                half[1].add(x_fp, mask)
            else:
                half[0].add(x_q, mask)
            self.timers["statistics"] += time.perf_counter() - start

        def as_layer_statistics(half) -> LayerStatistics:
            stats_q, stats_fp = half
            if self.track_fp:
                return LayerStatistics(stats_q.hessian_q, stats_q.cross, stats_fp.hessian, stats_q.num_tokens)
            return LayerStatistics(stats_q.hessian, None, None, stats_q.num_tokens)

        if self.split_statistics:
            if halves[1][0] is None:
                raise QuantizationError("a held-out R_calib needs at least two calibration batches; "
                                        "raise calibration.num_samples or lower calibration.batch_size")
            from fade.diagnostics.reliability import SplitStatistics

            return SplitStatistics(as_layer_statistics(halves[0]), as_layer_statistics(halves[1])).pooled()
        return as_layer_statistics(halves[0])

    def _round_to_nearest_only(self) -> CalibrationResult:
        """RTN without compensation or FP tracking needs no calibration data at all."""
        from fade.quant import rtn_quantize

        records, quantized = [], {}
        start = time.perf_counter()
        model = self.loaded.model
        with torch.inference_mode():
            for stage, index, _block, group, name, linear in self.plan(model):
                if _matches(name, self.exclude):
                    continue
                r = rtn_quantize(linear.weight.detach().float(), self.settings.grid, layer_name=name)
                linear.weight.data.copy_(r.weight_q.to(linear.weight.dtype))
                quantized[name] = QuantizedWeight(r.weight_q, r.codes, r.scale, r.zero, None, None)
                records.append({"name": name, "part": stage.part, "block": index, "group": "+".join(group.names),
                                "out_features": linear.out_features, "in_features": linear.in_features,
                                "bits": self.settings.grid.bits, "group_size": self.settings.grid.group_size,
                                "method": "rtn", "tokens": 0, "alpha": 0.0})
        self.timers["solve"] = self.timers["total"] = time.perf_counter() - start
        return CalibrationResult(model, records, quantized, {k: round(v, 3) for k, v in self.timers.items()})

    def run(self, utterances: Sequence[Utterance]) -> CalibrationResult:
        if self.settings.method == "rtn" and self.policy is None and not self.track_fp:
            return self._round_to_nearest_only()
        fp_model = self.loaded.model
        q_model = copy.deepcopy(fp_model) if self.track_fp else fp_model
        plan = self.plan(q_model)
        stages = self.family.stages(self.loaded)
        if self.policy is not None:
            self.policy.prepare({name: linear.weight.detach() for *_, name, linear in plan if not _matches(name, self.exclude)},
                                {"grid": self.settings.grid, "stages": stages})
        batches = self._batches(utterances)
        records: list[dict[str, Any]] = []
        quantized: dict[str, QuantizedWeight] = {}
        loop_start = time.perf_counter()
        finished: dict[str, list[tuple[Stage, list[Any]]]] = {"q": [], "fp": []}  # last-block outputs per stage
        with torch.inference_mode():
            for stage in stages:
                fp_blocks, q_blocks = _resolve_blocks(fp_model, stage), _resolve_blocks(q_model, stage)
                q_inputs = self._catch_stage_inputs("q", q_model, stage, batches, finished["q"])
                # With track_fp the quantized model is a copy; without it both names are one model.
                fp_inputs = self._catch_stage_inputs("fp", fp_model, stage, batches, finished["fp"]) if self.track_fp else q_inputs
                if stage is stages[-1]:
                    finished = {"q": [], "fp": []}  # no later stage will replay them: free the memory
                shared_stats: dict[tuple[str, ...], LayerStatistics] = {}
                for index, (fp_block, q_block) in enumerate(zip(fp_blocks, q_blocks)):
                    prefix = stage.path if stage.single else f"{stage.path}.{index}"
                    self._start_block(stage, {"q": q_block, **({"fp": fp_block} if self.track_fp else {})}, len(batches))
                    for group in stage.groups:
                        names = [n for n in group.names if not _matches(f"{prefix}.{n}", self.exclude)]
                        if not names:
                            continue
                        if group.reads_encoder_output and group.names in shared_stats:
                            stats = shared_stats[group.names]
                        else:
                            stats = self._statistics(stage, group, fp_block, q_block, fp_inputs, q_inputs, batches)
                            if group.reads_encoder_output:
                                shared_stats[group.names] = stats
                        for name in names:
                            full_name = f"{prefix}.{name}"
                            linear = q_block.get_submodule(name)
                            start = time.perf_counter()
                            policy = None if _matches(full_name, self.compensation_exclude) else self.policy
                            result, record = process_linear(full_name, linear.weight.detach().clone(), stats, self.settings,
                                                            policy=policy, qep_damp=self.qep_damp,
                                                            record_uncorrected=self.record_uncorrected)
                            self.timers["solve"] += time.perf_counter() - start
                            linear.weight.data.copy_(result.weight_q.to(linear.weight.dtype))
                            quantized[full_name] = result
                            self._done.add(name)
                            records.append({
                                "name": full_name, "part": stage.part, "block": index, "group": "+".join(group.names),
                                "out_features": linear.out_features, "in_features": linear.in_features,
                                "bits": self.settings.grid.bits, "group_size": self.settings.grid.group_size,
                                "method": self.settings.method, "tokens": stats.num_tokens, **record,
                            })
                    # Both streams move on to the next block's inputs.
                    q_raw = fp_raw = None  # the previous block's outputs are this block's inputs: let them go
                    q_inputs, q_raw = self._advance("q", q_block, q_inputs)
                    if self.track_fp:
                        fp_inputs, fp_raw = self._advance("fp", fp_block, fp_inputs)
                    else:
                        fp_inputs = q_inputs
                    self.shortcut_calls += sum(f.shortcut_calls for f in self._frozen.values())
                    self._frozen = {}  # the block is done: free its kept outputs
                    log.info("calibrated %s (%d/%d)", prefix, index + 1, len(q_blocks))
                # The outputs of the stage's last block stand in for the whole stage when later stages catch their inputs.
                finished["q"].append((stage, q_raw))
                if self.track_fp:
                    finished["fp"].append((stage, fp_raw))
        self.timers["total"] = time.perf_counter() - loop_start
        return CalibrationResult(q_model, records, quantized, {k: round(v, 3) for k, v in self.timers.items()})
