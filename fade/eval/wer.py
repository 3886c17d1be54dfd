"""Word error rate after Whisper's English normalizer, scored by jiwer.

Both references and hypotheses go through the same ``EnglishTextNormalizer`` (from the
``whisper-normalizer`` package, which ships Whisper's British→American spelling map), the
convention of the Whisper paper and the Open ASR leaderboard: case, punctuation, number
formats and spelling variants do not count as errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import jiwer


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    return " ".join(_normalizer()(text).split())


@dataclass
class UtteranceScore:
    reference_words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


@dataclass
class CorpusScore:
    wer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    words: int
    per_utterance: list[UtteranceScore]


def score(references: Sequence[str], hypotheses: Sequence[str]) -> CorpusScore:
    """Corpus WER (total errors / total reference words) with per-utterance counts.

    An utterance whose normalised reference is empty contributes its hypothesis words as
    insertions (jiwer refuses empty references).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("nothing to score: no utterances")
    refs = [normalize(text) for text in references]
    hyps = [normalize(text) for text in hypotheses]
    scored = [i for i, ref in enumerate(refs) if ref]
    per_utterance = [UtteranceScore(0, 0, 0, len(hyp.split())) for hyp in hyps]
    if scored:
        output = jiwer.process_words([refs[i] for i in scored], [hyps[i] for i in scored])
        for index, alignment in zip(scored, output.alignments):
            counts = {"substitute": 0, "delete": 0, "insert": 0}
            for chunk in alignment:
                if chunk.type in counts:
                    span = chunk.ref_end_idx - chunk.ref_start_idx if chunk.type != "insert" else chunk.hyp_end_idx - chunk.hyp_start_idx
                    counts[chunk.type] += span
            per_utterance[index] = UtteranceScore(
                len(refs[index].split()), counts["substitute"], counts["delete"], counts["insert"]
            )
    words = sum(u.reference_words for u in per_utterance)
    if words == 0:
        raise ValueError("every reference is empty after normalisation; WER is undefined")
    subs = sum(u.substitutions for u in per_utterance)
    dels = sum(u.deletions for u in per_utterance)
    ins = sum(u.insertions for u in per_utterance)
    return CorpusScore((subs + dels + ins) / words, subs, dels, ins, words - subs - dels, words, per_utterance)
