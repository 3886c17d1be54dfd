"""Building blocks every task shares: devices, models, data modules and the run folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fade.data.datamodule import SpeechDataModule
from fade.errors import ConfigError
from fade.eval.runner import resolve_device
from fade.models import LoadedModel, get_family, load_model
from fade.process import set_tf32

log = logging.getLogger(__name__)


def run_dir() -> Path:
    """The Hydra run folder (outputs/...), or the current folder outside a Hydra app."""
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def sweep_copies(out: Path, relative: str) -> list[Path]:
    """``relative`` in the other job folders of this run's sweep (none outside ``fade -m``)."""
    from hydra.types import RunMode

    try:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return []
    except ValueError:
        return []
    return sorted(folder / relative for folder in out.parent.iterdir() if folder.is_dir() and folder != out)


def setup_torch(cfg: DictConfig) -> torch.device:
    if cfg.runner.threads:
        torch.set_num_threads(int(cfg.runner.threads))
    torch.manual_seed(cfg.seed)
    set_tf32(cfg.runner.tf32)  # off unless asked: GPU statistics in IEEE float32, as on the CPU
    # transformers' generation warnings (attention masks for Whisper's fixed window, deprecations)
    # are noise for this app; fade logs its own settings in metrics.json.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return resolve_device(cfg.runner.device)


def build_model(cfg: DictConfig, device: torch.device) -> LoadedModel:
    m = cfg.model
    loaded = load_model(m.family, m.source, m.path, dtype=m.dtype, revision=m.revision, seed=m.seed, size=m.size, device=device)
    loaded.name = m.name  # reports use the config's short name, not a cache path
    return loaded


def instantiate_source(node: DictConfig, where: str) -> Any:
    """Instantiate a ``_target_`` node, turning a bad key into an error that names it."""
    try:
        return hydra.utils.instantiate(node)
    except Exception as exc:  # Hydra wraps the TypeError of an unexpected keyword
        cause = exc.__cause__ or exc
        raise ConfigError(f"cannot build {where} from {OmegaConf.to_container(node)}: {cause}") from exc


def build_datamodule(cfg: DictConfig) -> SpeechDataModule:
    source = instantiate_source(cfg.dataset.source, "dataset.source")
    return SpeechDataModule(source, batch_size=cfg.runner.batch_size, num_workers=cfg.runner.num_workers, limit=cfg.dataset.limit)


def family_of(cfg: DictConfig):
    return get_family(cfg.model.family)
