"""Generation helpers shared by all families: per-utterance token caps.

Quantized models can loop ("the the the ..."). Every utterance gets a cap on new tokens that
grows with its audio length, so a looping hypothesis costs bounded time and shows up in the
metrics (``capped_utterances``) instead of silently taking minutes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import LogitsProcessor


def token_cap(seconds: float, tokens_per_second: float, floor: int) -> int:
    """``ceil(tokens_per_second · seconds) + floor``: generous for real speech, bounded for loops."""
    return int(math.ceil(tokens_per_second * seconds)) + int(floor)


class PerRowLengthCap(LogitsProcessor):
    """Force end-of-sequence for row ``i`` once it has generated ``caps[i]`` new tokens.

    ``generate`` only takes one ``max_new_tokens`` for the batch; this gives each utterance its
    own. Rows are ``batch × num_beams`` during beam search, so row ``r`` belongs to utterance
    ``r // num_beams``. The prompt length is taken from the first call (a fresh instance per
    ``generate`` call).
    """

    def __init__(self, caps: Sequence[int], eos_token_id: int, num_beams: int = 1):
        self.caps = torch.as_tensor(list(caps), dtype=torch.long)
        self.eos_token_id = int(eos_token_id)
        self.num_beams = num_beams
        self.prompt_length: int | None = None
        #: True for utterances that reached their cap (reported as ``capped_utterances``).
        self.hit = torch.zeros(len(self.caps), dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        generated = input_ids.shape[1] - self.prompt_length
        caps = self.caps.to(scores.device).repeat_interleave(self.num_beams)[: scores.shape[0]]
        at_cap = generated >= caps
        if bool(at_cap.any()):
            # A row that already ended keeps getting EOS/pad from generate itself; only rows still
            # producing text count as capped.
            still_running = input_ids[:, -1] != self.eos_token_id if generated > 0 else torch.ones_like(at_cap)
            newly = (at_cap & still_running).view(-1, self.num_beams).any(dim=1).cpu()
            self.hit |= newly[: len(self.hit)]
            scores = scores.clone()
            scores[at_cap] = -float("inf")
            scores[at_cap, self.eos_token_id] = 0.0
        return scores
