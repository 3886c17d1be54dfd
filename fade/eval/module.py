"""Lightning module that transcribes batches; the Trainer drives it on any device."""

from __future__ import annotations

from typing import Any

import lightning as L

from fade.models.base import LoadedModel, ModelFamily
from fade.models.generation import token_cap


class TranscriptionModule(L.LightningModule):
    """Wraps a loaded model so Lightning can move it to a device and run predict/test loops."""

    def __init__(self, family: ModelFamily, loaded: LoadedModel, *, num_beams: int = 1,
                 max_new_tokens_per_second: float = 10.0, max_new_tokens_floor: int = 16):
        super().__init__()
        self.family = family
        self.loaded = loaded
        self.model = loaded.model  # registered as a submodule: Lightning moves it to the device
        self.num_beams = num_beams
        self.max_new_tokens_per_second = max_new_tokens_per_second
        self.max_new_tokens_floor = max_new_tokens_floor

    def transcribe(self, batch: dict[str, list]) -> list[dict[str, Any]]:
        caps = [token_cap(seconds, self.max_new_tokens_per_second, self.max_new_tokens_floor) for seconds in batch["duration"]]
        inputs = self.family.prepare_inputs(self.loaded, batch["audio"])
        out = self.family.generate(self.loaded, inputs, max_new_tokens=caps, num_beams=self.num_beams)
        return [
            {"id": utt_id, "reference": ref, "hypothesis": hyp, "duration": round(float(seconds), 3), "token_cap": cap, "capped": hit}
            for utt_id, ref, hyp, seconds, cap, hit in zip(batch["id"], batch["text"], out.texts, batch["duration"], caps, out.capped)
        ]

    def predict_step(self, batch: dict[str, list], batch_idx: int) -> list[dict[str, Any]]:
        return self.transcribe(batch)
