"""The plain transformers loop fade's runner is checked against: one utterance at a time.

This is what a user would write without fade: processor → ``model.generate`` → decode, batch
size one, the same token cap. The runner must give identical hypotheses (tested, and checked
again by ``experiments/bench/eval_throughput.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fade.models.base import LoadedModel
from fade.models.generation import token_cap


def whisper_generate_loop(loaded: LoadedModel, audios: Sequence[np.ndarray], *, tokens_per_second: float = 10.0,
                          floor: int = 16) -> list[str]:
    processor, model = loaded.processor, loaded.model
    language = {"language": "en", "task": "transcribe"} if getattr(model.generation_config, "is_multilingual", False) else {}
    texts = []
    with torch.inference_mode():
        for audio in audios:
            features = processor(audio, sampling_rate=16_000, return_tensors="pt").input_features.to(loaded.device)
            cap = token_cap(len(audio) / 16_000, tokens_per_second, floor)
            tokens = model.generate(features, max_new_tokens=cap, do_sample=False, **language)
            texts.append(processor.batch_decode(tokens, skip_special_tokens=True)[0].strip())
    return texts
