import jiwer
import pytest

from fade.eval.wer import normalize, score


def test_normalizer_is_whispers_english_one():
    assert normalize("Mr. Smith's COLOUR, isn't it?") == "mister smith is color is not it"


def test_score_matches_jiwer_on_normalised_text():
    refs = ["The cat sat on the mat.", "Hello, World!", "a b c d"]
    hyps = ["the cat sat on a mat", "hello", "a x c d e"]
    result = score(refs, hyps)
    direct = jiwer.process_words([normalize(r) for r in refs], [normalize(h) for h in hyps])
    assert result.wer == pytest.approx(direct.wer)
    assert (result.substitutions, result.deletions, result.insertions) == (direct.substitutions, direct.deletions, direct.insertions)
    assert [u.errors for u in result.per_utterance] == [1, 1, 2]
    assert sum(u.errors for u in result.per_utterance) / result.words == pytest.approx(result.wer)


def test_empty_reference_counts_insertions_and_all_empty_is_an_error():
    result = score(["hello", ""], ["hello", "two words"])
    assert result.insertions == 2 and result.words == 1 and result.wer == 2.0
    with pytest.raises(ValueError, match="empty"):
        score([""], ["x"])
