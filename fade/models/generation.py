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
    """Forces EOS for row ``i`` once it has generated ``caps[i]`` new tokens (per-utterance ``max_new_tokens``).

    Run ``generate`` with ``max_new_tokens=max(caps) + 1`` and this processor: utterance ``i`` then yields at
    most ``caps[i]`` tokens followed by a forced end token (with ``max(caps)`` the row(s) with the largest cap
    stop at the length limit instead, as plain ``max_new_tokens`` does, and are not recorded in ``hit``). ``prompt_length`` is the number of ids already in the sequence when
    generation starts (the padded prompt of a decoder-only LM, the forced decoder prompt of an encoder-decoder);
    left as ``None`` it is taken from the first call, so use a fresh instance per ``generate`` call. With beam
    search the rows are ``batch * num_beams`` in utterance-major order: row ``r`` is utterance
    ``r // num_beams``. ``hit[i]`` records whether utterance ``i`` was still producing text at its cap. With
    several EOS ids the first is forced; any of them marks a row as already finished.
    """

    def __init__(
        self,
        caps: Sequence[int],
        eos_token_id: int | Sequence[int],
        num_beams: int = 1,
        prompt_length: int | None = None,
    ):
        if any(int(c) < 0 for c in caps):
            raise ValueError(f"caps must be >= 0, got {list(caps)}")
        self.caps = torch.tensor([int(c) for c in caps], dtype=torch.long)
        eos = [eos_token_id] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]
        if not eos:
            raise ValueError("eos_token_id is empty")
        #: The forced end token (the first one given); all of them mark a row as finished.
        self.eos_token_id = eos[0]
        self.eos_token_ids = torch.tensor(eos, dtype=torch.long)
        self.num_beams = int(num_beams)
        self.prompt_length = None if prompt_length is None else int(prompt_length)
        self.hit = torch.zeros(len(self.caps), dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        n_rows = scores.shape[0]
        if n_rows != len(self.caps) * self.num_beams:
            raise ValueError(f"{n_rows} rows for {len(self.caps)} caps x {self.num_beams} beams")
        generated = input_ids.shape[1] - self.prompt_length
        caps = self.caps.to(scores.device).repeat_interleave(self.num_beams)
        at_cap = caps <= generated
        if not bool(at_cap.any()):
            return scores
        # A row that already ended (an EOS among its new tokens, pads after it) is not "capped".
        new_ids = input_ids[:, self.prompt_length :]
        running = ~torch.isin(new_ids, self.eos_token_ids.to(new_ids.device)).any(dim=1)
        self.hit |= (at_cap & running).view(-1, self.num_beams).any(dim=1).cpu()
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.eos_token_id] = 0.0
        return torch.where(at_cap[:, None], forced, scores)
