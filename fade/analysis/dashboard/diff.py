"""Per-utterance differences between two runs (or a run and its full-precision model), with the
words that differ highlighted."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fade.analysis.dashboard.entries import Entry, group_by, load_entries
from fade.analysis.dashboard.svg import percent, text
from fade.errors import DataError

#: The per-utterance tables stop here: the page stays small even for a 10,000-utterance test set.
MAX_DIFF_ROWS = 200


@dataclass(frozen=True)
class Side:
    """One side of a diff: a run's full-precision or quantized hypotheses."""

    entry: Entry
    which: str  # "fp" or "quantized"

    def label(self) -> str:
        if self.which == "fp" or self.entry.is_fp:
            return f"{self.entry.model} full precision"
        return self.entry.label()

    def utterances(self) -> dict[str, dict[str, Any]]:
        return self.entry.run.utterances(self.which)


@dataclass(frozen=True)
class DiffRow:
    id: str
    reference: str
    words: int
    errors_a: int
    errors_b: int
    hypothesis_a: str
    hypothesis_b: str

    @property
    def difference(self) -> int:
        return self.errors_b - self.errors_a


def errors(record: dict[str, Any]) -> int:
    return int(record.get("substitutions", 0)) + int(record.get("deletions", 0)) + int(record.get("insertions", 0))


def diff_rows(a: Side, b: Side) -> tuple[list[DiffRow], int]:
    """Utterances whose normalized hypotheses differ, largest error difference first (then B
    worse before B better, then by id), and how many utterances the two sides share."""
    left, right = a.utterances(), b.utterances()
    shared = [key for key in left if key in right]
    rows = []
    for key in shared:
        ra, rb = left[key], right[key]
        hypothesis_a, hypothesis_b = str(ra.get("hypothesis_normalized", "")), str(rb.get("hypothesis_normalized", ""))
        if hypothesis_a != hypothesis_b:
            rows.append(DiffRow(str(key), str(ra.get("reference_normalized", "")), int(ra.get("words", 0)),
                                errors(ra), errors(rb), hypothesis_a, hypothesis_b))
    rows.sort(key=lambda r: (-abs(r.difference), -r.difference, r.id))
    return rows, len(shared)


def highlight_words(a: str, b: str) -> tuple[str, str]:
    """Both hypotheses as HTML, words only in A in ``<del>``, words only in B in ``<ins>``."""
    words_a, words_b = a.split(), b.split()
    out_a, out_b = [], []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=words_a, b=words_b, autojunk=False).get_opcodes():
        chunk_a, chunk_b = text(" ".join(words_a[a0:a1])), text(" ".join(words_b[b0:b1]))
        if op == "equal":
            out_a.append(chunk_a)
            out_b.append(chunk_b)
            continue
        if chunk_a:
            out_a.append(f"<del>{chunk_a}</del>")
        if chunk_b:
            out_b.append(f"<ins>{chunk_b}</ins>")
    return " ".join(out_a) or '<span class="empty">(empty)</span>', " ".join(out_b) or '<span class="empty">(empty)</span>'


def default_pairs(entries: Sequence[Entry]) -> list[tuple[Side, Side]]:
    """For each (model, dataset, precision): full precision vs the quantized run with the lowest WER."""
    pairs = []
    for group in group_by([e for e in entries if not e.is_fp], "model", "dataset", "precision").values():
        scored = [e for e in group if e.wer is not None]
        if scored:
            best = min(scored, key=lambda e: e.wer)
            pairs.append((Side(best, "fp"), Side(best, "quantized")))
    return pairs


def resolve_side(spec: str, folder: Path, entries: Sequence[Entry]) -> Side:
    """A ``--diff`` argument: a run folder (a path, or relative to the dashboard's folder, or a
    run folder's name), its quantized hypotheses; ``RUN:fp`` for the run's full-precision ones."""
    which = "quantized"
    if spec.endswith(":fp") and not Path(spec).exists():
        spec, which = spec[: -len(":fp")], "fp"
    by_path = {e.run.path.resolve(): e for e in entries}
    for candidate in (Path(spec), folder / spec):
        if candidate.exists() and candidate.resolve() in by_path:
            return Side(by_path[candidate.resolve()], which)
    named = [e for e in entries if e.run.path.name == spec]
    if len(named) == 1:
        return Side(named[0], which)
    if len(named) > 1:
        raise DataError(f"--diff {spec!r} names {len(named)} runs under {folder}; pass its path instead")
    if Path(spec).exists():  # a finished run outside the dashboard's folder
        outside = load_entries(Path(spec))
        if len(outside) == 1:
            return Side(outside[0], which)
    raise DataError(f"--diff {spec!r} is not a finished run under {folder} (a run folder holds metrics.json); "
                    f"pass a run folder path or name, optionally with ':fp' for its full-precision hypotheses")


def diff_section(position: int, a: Side, b: Side) -> str:
    title = f"A: {a.label()} → B: {b.label()}"
    try:
        rows, shared = diff_rows(a, b)
    except DataError as exc:  # the per-utterance files were deleted: say so, keep the rest of the page
        return (f'<section class="diff" id="diff-{position}" data-pair="{position}"><h3>{text(title)}</h3>'
                f'<p class="note">{text(exc)}</p></section>')
    wer_a = a.entry.wer_fp if a.which == "fp" else a.entry.wer
    wer_b = b.entry.wer_fp if b.which == "fp" else b.entry.wer
    out = [f'<section class="diff" id="diff-{position}" data-pair="{position}"><h3>{text(title)}</h3>',
           f"<p>WER A {percent(wer_a)} %, B {percent(wer_b)} %. {len(rows)} of {shared} shared utterances differ "
           f"after normalization"
           + (f"; the {MAX_DIFF_ROWS} with the largest error difference are shown" if len(rows) > MAX_DIFF_ROWS else "")
           + ". Δ = errors(B) − errors(A): positive means B is worse. "
             "<del>struck</del>: words only in A; <ins>underlined</ins>: words only in B.</p>"]
    if not rows:
        out.append('<p class="note">No utterance differs.</p></section>')
        return "".join(out)
    out.append('<table class="diff-table"><thead><tr><th>Δ errors</th><th>id</th><th>reference (normalized)</th>'
               "<th>A</th><th>B</th><th>errors A / B</th></tr></thead><tbody>")
    for row in rows[:MAX_DIFF_ROWS]:
        html_a, html_b = highlight_words(row.hypothesis_a, row.hypothesis_b)
        tone = "worse" if row.difference > 0 else "better" if row.difference < 0 else "same"
        out.append(f'<tr class="{tone}" data-difference="{row.difference}"><td class="num">{row.difference:+d}</td>'
                   f"<td>{text(row.id)}</td><td>{text(row.reference)}</td><td>{html_a}</td><td>{html_b}</td>"
                   f'<td class="num">{row.errors_a} / {row.errors_b} of {row.words}</td></tr>')
    out.append("</tbody></table></section>")
    return "".join(out)


def diff_picker(pairs: Sequence[tuple[Side, Side]]) -> str:
    if len(pairs) < 2:
        return ""
    options = "".join(f'<option value="{i}">{text(a.label())} → {text(b.label())}</option>'
                      for i, (a, b) in enumerate(pairs))
    return (f'<p class="picker"><label for="diff-pick">Show diff: </label><select id="diff-pick">{options}'
            f'<option value="all">all pairs</option></select></p>')
