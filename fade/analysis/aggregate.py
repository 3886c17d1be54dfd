"""``fade-aggregate <sweep folder>...``: every finished run of a sweep, collected into tables.

Writes, under ``<first folder>/aggregate/`` (or ``--out``):
- ``summary.{md,csv,tex}``: per model, dataset, precision and method: the calibration seeds, WER mean ± std
  (sample std over seeds), min and max, the difference to full precision, and the dev WER where runs
  scored a dev split. For QEP with several global α values two extra rows name the α chosen by the
  lowest mean dev WER (a fair baseline) and by the lowest mean test WER (an oracle: it looks at the
  test set), both over the calibration seeds every α ran (named in the label when fewer than the
  chosen α's), and a third row the α chosen on each seed's own dev split (what one calibration
  run tuned on its held-out utterances ships). Likewise, when several FADE variants (the signal ablations) scored a dev split, two
  rows name the variant chosen on dev and, as an oracle, the one chosen on test;
- ``comparisons.{md,csv,tex}``: paired comparisons on the seeds two methods share (paired t-test and
  Wilcoxon signed-rank over seeds; the ratio of their spreads over seeds with the Pitman–Morgan test) and a paired bootstrap over test utterances for the WER difference
  with its 95 % interval (fade/analysis/stats.py); where a comparison ran on several platforms, one
  more row pools them, pairing runs within each platform and seed (``pooled_comparisons``);
- ``replicates.{md,csv,tex}``: where one method ran the same seeds on two platforms, how much of its
  run-to-run spread is floating-point detail and how much the calibration draw (``replicate_split``).

Every summary row belongs to one platform (CPU model, vector kernels, threads, GPU; the ``platform``
record of each metrics.json), and runs are paired or chosen among only within one platform. Two CPUs
round the same calibration differently from the first layer on, and at 3 bits that moves a run's
WER as much as a change of calibration seed, so pairing a seed's runs across machines would compare
floating-point detail along with the methods. The FADE grid keeps one sweep folder per platform
(conf/experiment/fade_grid.yaml); a parent folder aggregates them side by side, and the pooled
comparison rows add the platforms' paired differences up.

RTN uses no calibration data, so its one run stands for every seed (its spread is zero by construction).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fade.analysis.runs import Run, find_runs
from fade.analysis.stats import paired_bootstrap, paired_seed_test, paired_spread_test, replicate_split
from fade.cache import atomic_write_text, csv_text
from fade.errors import DataError

log = logging.getLogger(__name__)

#: The method FADE's claims are tested against, and the baselines it is compared with.
FADE_METHOD = "gptq+fade"


@dataclass
class MethodRuns:
    """The runs of one method on one model, dataset and precision: one per calibration seed."""

    model: str
    dataset: str
    precision: str
    platform: str  # platform_label of the runs' platform record
    method: str
    runs: dict[int, Run] = field(default_factory=dict)  # by calibration seed
    seed_free: bool = False  # RTN: the same result for every seed
    label: str | None = None  # a derived row (α chosen on dev / on test) shows its own name

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What rows must share to be compared: model, dataset, precision and platform."""
        return self.model, self.dataset, self.precision, self.platform

    @property
    def name(self) -> str:
        return self.label or self.method

    def wers(self) -> np.ndarray:
        return np.array([run.metrics["wer"] for _, run in sorted(self.runs.items())])

    def dev_wers(self) -> np.ndarray | None:
        values = [run.metrics.get("wer_dev") for _, run in sorted(self.runs.items())]
        return None if any(v is None for v in values) else np.array(values, dtype=float)

    def loops(self) -> str:
        """Utterances that hit their token cap, summed over seeds: ``test/dev`` (``test`` without a dev split).

        A looping utterance adds tens of insertions, so on a 100-utterance dev split two loops can
        outweigh every other difference between two methods.
        """
        runs = [run for _, run in sorted(self.runs.items())]
        test = sum(int(run.metrics.get("capped_utterances") or 0) for run in runs)
        dev = [run.capped_dev for run in runs]
        return f"{test}" if any(d is None for d in dev) else f"{test}/{sum(dev)}"

    def at_seed(self, seed: int) -> Run | None:
        if self.seed_free:
            return next(iter(self.runs.values()))
        return self.runs.get(seed)

    @property
    def alpha(self) -> float | None:
        run = next(iter(self.runs.values()))
        return run.metrics.get("alpha") if run.metrics.get("compensation") == "qep" else None


def group_runs(runs: Iterable[Run]) -> list[MethodRuns]:
    groups: dict[tuple, MethodRuns] = {}
    for run in runs:
        if "method" not in run.metrics:
            continue  # an evaluate run: its WER is the FP reference of the quantize runs
        m = run.metrics
        key = (run.model, str(m.get("dataset")), run.precision, run.platform, run.method)
        group = groups.setdefault(key, MethodRuns(*key, seed_free=m.get("quantizer") == "rtn"))
        seed = int(run.seed or 0)
        if seed in group.runs:
            raise DataError(f"two runs of {key} with calibration seed {seed}: {group.runs[seed].path} and {run.path}; "
                            f"aggregate one sweep at a time or move one away")
        group.runs[seed] = run
    return sorted(groups.values(), key=lambda g: (g.key, _method_order(g.method)))


def _method_order(method: str) -> tuple:
    order = ["rtn", "gptq", "gptq+qep", "gptq+fade"]
    base = method.split("(")[0]
    return (order.index(base) if base in order else len(order), method)


def _scored_seeds(candidates: Sequence[MethodRuns], key: str) -> list[int]:
    """The calibration seeds on which every candidate ran and scored ``key`` (``wer`` or ``wer_dev``)."""
    return sorted(set.intersection(*(
        {seed for seed, run in g.runs.items() if run.metrics.get(key) is not None} for g in candidates)))


def _choose(candidates: Sequence[MethodRuns], key: str) -> tuple[MethodRuns, list[int]] | None:
    """The candidate with the lowest mean ``key`` (``wer`` or ``wer_dev``) over the calibration seeds that
    every candidate ran and scored, and those seeds; None if they share none. Means over different
    seeds would compare draws, not methods (a sweep in progress has more seeds of some candidates)."""
    seeds = _scored_seeds(candidates, key)
    if not seeds:
        return None
    chosen = min(candidates, key=lambda g: float(np.mean([g.runs[s].metrics[key] for s in seeds])))
    return chosen, seeds


def _chosen_label(method: str, setting: str, how: str, seeds: list[int], chosen: MethodRuns) -> str:
    """``gptq+qep(α=0.75, chosen on dev)``; the seeds are named when the choice saw fewer than the row shows."""
    on = "" if seeds == sorted(chosen.runs) else f", seed{'s' if len(seeds) > 1 else ''} {' '.join(map(str, seeds))}"
    return f"{method}({setting}, {how}{on})"


def _chosen_rows(key: tuple, candidates: Sequence[MethodRuns], method: str, setting) -> list[MethodRuns]:
    """The dev-chosen and the oracle row among ``candidates``; ``setting(group)`` names what was chosen."""
    rows = []
    for metric, how in (("wer_dev", "chosen on dev"), ("wer", "oracle: chosen on test")):
        scored = [g for g in candidates if any(run.metrics.get(metric) is not None for run in g.runs.values())]
        choice = _choose(scored, metric) if len(scored) >= 2 else None
        if choice is not None:
            chosen, seeds = choice
            label = _chosen_label(method, setting(chosen), how, seeds, chosen)
            rows.append(MethodRuns(*key, chosen.method, chosen.runs, seed_free=chosen.seed_free, label=label))
    return rows


def _alpha_groups(groups: Sequence[MethodRuns]) -> dict[tuple, list[MethodRuns]]:
    """The global-α QEP groups by model/dataset/precision/platform, where there are two α or more."""
    by_key: dict[tuple, list[MethodRuns]] = defaultdict(list)
    for group in groups:
        if group.alpha is not None:
            by_key[group.key].append(group)
    return {key: candidates for key, candidates in by_key.items() if len(candidates) >= 2}


def chosen_alpha_rows(groups: Sequence[MethodRuns]) -> list[MethodRuns]:
    """For each model/dataset/precision with several QEP α: the α picked on dev and the one picked on test."""
    return [row for key, candidates in _alpha_groups(groups).items()
            for row in _chosen_rows(key, candidates, "gptq+qep", lambda g: f"α={g.alpha:g}")]


def per_seed_alpha_rows(groups: Sequence[MethodRuns]) -> list[MethodRuns]:
    """For each model/dataset/precision with several QEP α scored on dev: on every calibration seed that
    all of them ran and scored, the run of the α with the lowest dev WER *of that seed*.

    This is the baseline as a user meets it: one calibration draw, a global α tuned on that draw's
    own held-out split, that model shipped. The row chosen on the mean dev WER over seeds
    (``chosen_alpha_rows``) sees five dev splits at once, which no single calibration has; this
    row's spread over seeds includes the dev split's own noise, so it is the fair reference for
    FADE's claim of a lower run-to-run variance. Ties go to the α nearest QEP's 0.5, then the smaller.
    """
    rows = []
    for key, candidates in _alpha_groups(groups).items():
        seeds = _scored_seeds(candidates, "wer_dev")
        if not seeds:
            continue
        picked = {seed: min(candidates, key=lambda g: (g.runs[seed].metrics["wer_dev"], abs(g.alpha - 0.5), g.alpha))
                  for seed in seeds}
        label = f"gptq+qep(α chosen on dev per seed: {' '.join(f'{picked[s].alpha:g}' for s in seeds)})"
        rows.append(MethodRuns(*key, "gptq+qep", {seed: g.runs[seed] for seed, g in picked.items()}, label=label))
    return rows


def chosen_fade_rows(groups: Sequence[MethodRuns]) -> list[MethodRuns]:
    """For each model/dataset/precision with several FADE variants scored on dev (the signal ablations):
    the variant picked by the lowest mean dev WER, and, labelled as an oracle, the one picked on test."""
    by_key: dict[tuple, list[MethodRuns]] = defaultdict(list)
    for group in groups:
        if _is_fade(group) and group.dev_wers() is not None:
            by_key[group.key].append(group)
    return [row for key, candidates in by_key.items() if len(candidates) >= 2
            for row in _chosen_rows(key, candidates, FADE_METHOD,
                                    lambda g: g.method[len(FADE_METHOD):].strip("()") or "defaults")]


def fp_wer(group: MethodRuns) -> float:
    values = {round(run.metrics["wer_fp"], 12) for run in group.runs.values()}
    if len(values) != 1:
        raise DataError(f"the runs of {group.key} disagree on the full-precision WER ({sorted(values)}): "
                        f"they were not evaluated on the same data or settings")
    return values.pop()


def summary_rows(groups: Sequence[MethodRuns]) -> list[dict[str, Any]]:
    rows = []
    seen_fp = set()
    for group in groups:
        if group.key not in seen_fp:
            seen_fp.add(group.key)
            rows.append({"model": group.model, "dataset": group.dataset, "precision": "fp", "method": "full precision",
                         "seeds": "", "n": 1, "wer_mean": fp_wer(group), "wer_std": None, "wer_min": fp_wer(group),
                         "wer_max": fp_wer(group), "delta_fp": 0.0, "wer_dev_mean": None, "loops": None,
                         "platform": group.platform})
        wers = group.wers()
        dev = group.dev_wers()
        rows.append({
            "model": group.model, "dataset": group.dataset, "precision": group.precision, "method": group.name,
            "seeds": "any" if group.seed_free else " ".join(str(s) for s in sorted(group.runs)), "n": len(wers),
            "wer_mean": float(wers.mean()), "wer_std": float(wers.std(ddof=1)) if len(wers) > 1 else None,
            "wer_min": float(wers.min()), "wer_max": float(wers.max()),
            "delta_fp": float(wers.mean() - fp_wer(group)),
            "wer_dev_mean": float(dev.mean()) if dev is not None else None, "loops": group.loops(),
            "platform": group.platform,
        })
    return rows


def _errors_matrix(runs: Sequence[Run], ids: Sequence[str]) -> np.ndarray:
    matrix = np.empty((len(runs), len(ids)))
    for row, run in enumerate(runs):
        utterances = run.utterances("quantized")
        missing = [i for i in ids if i not in utterances]
        if missing:
            raise DataError(f"{run.path} lacks utterances {missing[:3]}...: runs were scored on different sets")
        matrix[row] = [utterances[i]["substitutions"] + utterances[i]["deletions"] + utterances[i]["insertions"] for i in ids]
    return matrix


def _shared_seeds(a: MethodRuns, b: MethodRuns) -> list[int]:
    """The calibration seeds both ran (RTN's one run pairs with every seed of the other)."""
    seeds_a = set(a.runs) if not a.seed_free else None
    seeds_b = set(b.runs) if not b.seed_free else None
    if seeds_a is None and seeds_b is None:
        return [0]
    return sorted((seeds_a or seeds_b) & (seeds_b or seeds_a))


def _compare_units(a_runs: Sequence[Run], b_runs: Sequence[Run], *, resamples: int,
                   seed_free: bool = False) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The paired statistics of runs ``a_runs[i]`` against ``b_runs[i]`` (differences a − b, in WER),
    and the two WER vectors they were computed from. ``seed_free``: one side is RTN, whose one run
    stands for every seed, so it has no spread over seeds to test."""
    wer_a = np.array([run.metrics["wer"] for run in a_runs])
    wer_b = np.array([run.metrics["wer"] for run in b_runs])
    seed_test = paired_seed_test(wer_a, wer_b)
    spread_test = None if seed_free else paired_spread_test(wer_a, wer_b)
    reference = b_runs[0].utterances("quantized")
    ids = sorted(reference)
    words = np.array([reference[i]["words"] for i in ids])
    interval = paired_bootstrap(_errors_matrix(a_runs, ids), _errors_matrix(b_runs, ids), words, resamples=resamples)
    return {"n": len(a_runs), "mean_difference": seed_test.mean_difference, "a_better_on": int((wer_a < wer_b).sum()),
            "t_pvalue": seed_test.t_pvalue, "wilcoxon_pvalue": seed_test.wilcoxon_pvalue,
            "std_ratio": None if spread_test is None else spread_test.std_ratio,
            "spread_pvalue": None if spread_test is None else spread_test.pvalue,
            "bootstrap_difference": interval.difference, "ci_low": interval.low, "ci_high": interval.high}, wer_a, wer_b


def compare(a: MethodRuns, b: MethodRuns, *, resamples: int = 10_000) -> dict[str, Any] | None:
    """Paired comparison of ``a`` against ``b`` on the seeds they share (differences are a − b, in WER)."""
    if a.key != b.key:
        raise ValueError(f"{a.name} and {b.name} belong to different models, data, precisions or platforms")
    seeds = _shared_seeds(a, b)
    if not seeds:
        return None
    units, wer_a, wer_b = _compare_units([a.at_seed(s) for s in seeds], [b.at_seed(s) for s in seeds], resamples=resamples,
                                         seed_free=a.seed_free or b.seed_free)
    std_a = None if len(seeds) < 2 else 0.0 if a.seed_free else float(wer_a.std(ddof=1))
    std_b = None if len(seeds) < 2 else 0.0 if b.seed_free else float(wer_b.std(ddof=1))
    return {"model": a.model, "dataset": a.dataset, "precision": a.precision, "platform": a.platform, "a": a.name,
            "b": b.name, "seeds": " ".join(map(str, seeds)), **units, "std_a": std_a, "std_b": std_b}


def pooled_comparisons(pairs: Sequence[tuple[MethodRuns, MethodRuns]], *, resamples: int = 10_000) -> list[dict[str, Any]]:
    """The comparisons that ran on two platforms or more, pooled: one paired unit per platform and seed.

    Both runs of a unit come from one platform and one calibration draw, so each difference is
    like for like; the units of one seed on two platforms share the draw but not the rounding,
    which at 3 bits moves a run as much as a new seed does (``replicates``: correlation near or
    below zero), so the units are close to independent replicates, and pooling them is how sweeps
    made on several machines add up. Where the draw explains much of the spread (a high
    ``draw_share``) the units of one seed are correlated and the pooled p-values are optimistic.
    The std columns are over units, so they mix the platforms' offsets into the spread.
    """
    by_comparison: dict[tuple, list[tuple[MethodRuns, MethodRuns]]] = defaultdict(list)
    for a, b in pairs:
        by_comparison[(a.model, a.dataset, a.precision, a.name, b.name)].append((a, b))
    rows = []
    for (model, dataset, precision, name_a, name_b), members in by_comparison.items():
        paired = sorted(((a, b, seeds) for a, b in members if (seeds := _shared_seeds(a, b))), key=lambda m: m[0].platform)
        if len({a.platform for a, _, _ in paired}) < 2:
            continue
        units, wer_a, wer_b = _compare_units([a.at_seed(s) for a, _, seeds in paired for s in seeds],
                                             [b.at_seed(s) for _, b, seeds in paired for s in seeds], resamples=resamples,
                                             seed_free=paired[0][0].seed_free or paired[0][1].seed_free)
        rows.append({"model": model, "dataset": dataset, "precision": precision,
                     "platform": f"pooled over {len(paired)} platforms", "a": name_a, "b": name_b,
                     "seeds": " | ".join(" ".join(map(str, seeds)) for _, _, seeds in paired), **units,
                     "std_a": None if paired[0][0].seed_free else float(wer_a.std(ddof=1)),
                     "std_b": None if paired[0][1].seed_free else float(wer_b.std(ddof=1))})
    return rows


def _is_fade(group: MethodRuns) -> bool:
    return group.method.startswith(FADE_METHOD)


def default_pairs(groups: Sequence[MethodRuns]) -> list[tuple[MethodRuns, MethodRuns]]:
    """FADE (default signals) against every non-FADE method; each FADE ablation variant against FADE
    defaults and QEP(α=0.5); QEP(α=0.5) against GPTQ and GPTQ against RTN."""
    pairs = []
    by_key: dict[tuple, list[MethodRuns]] = defaultdict(list)
    for group in groups:
        by_key[group.key].append(group)
    for members in by_key.values():
        named = {g.name: g for g in members}
        fades = [g for g in members if _is_fade(g)]
        default = named.get(FADE_METHOD)
        if default is not None:
            pairs += [(default, other) for other in members if not _is_fade(other)]
        for variant in fades:
            if variant is not default:
                pairs += [(variant, other) for other in (default, named.get("gptq+qep(α=0.5)")) if other is not None]
        for a, b in (("gptq+qep(α=0.5)", "gptq"), ("gptq", "rtn")):
            if a in named and b in named:
                pairs.append((named[a], named[b]))
        if not fades and len(members) == 2:
            pairs.append((members[1], members[0]))
    return pairs


def chosen_pairs(groups: Sequence[MethodRuns], alpha_rows: Sequence[MethodRuns],
                 fade_rows: Sequence[MethodRuns]) -> list[tuple[MethodRuns, MethodRuns]]:
    """FADE (defaults) against the chosen global α; the chosen FADE signal against QEP(α=0.5), GPTQ and
    the chosen global α."""
    pairs = []
    for row in alpha_rows:
        pairs += [(g, row) for g in groups if g.key == row.key and g.method == FADE_METHOD]
    for row in fade_rows:
        pairs += [(row, g) for g in groups if g.key == row.key and g.name in ("gptq+qep(α=0.5)", "gptq")]
        pairs += [(row, a) for a in alpha_rows if a.key == row.key]
    return pairs


def replicate_rows(groups: Sequence[MethodRuns]) -> list[dict[str, Any]]:
    """One row per method and pair of platforms that share two calibration seeds or more."""
    by_method: dict[tuple, list[MethodRuns]] = defaultdict(list)
    for group in groups:
        if not group.seed_free:
            by_method[(group.model, group.dataset, group.precision, group.name)].append(group)
    rows = []
    for (model, dataset, precision, method), members in by_method.items():
        members = sorted(members, key=lambda g: g.platform)
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                seeds = sorted(set(a.runs) & set(b.runs))
                if len(seeds) < 2:
                    continue
                split = replicate_split(np.array([a.runs[s].metrics["wer"] for s in seeds]),
                                        np.array([b.runs[s].metrics["wer"] for s in seeds]))
                rows.append({"model": model, "dataset": dataset, "precision": precision, "method": method,
                             "platform_a": a.platform, "platform_b": b.platform, "seeds": " ".join(map(str, seeds)),
                             "n": split.seeds, "numerical_std": split.numerical_std, "run_std": split.run_std,
                             "draw_share": split.draw_share, "correlation": split.correlation})
    return rows


def _unique(pairs: Sequence[tuple[MethodRuns, MethodRuns]]) -> list[tuple[MethodRuns, MethodRuns]]:
    """Each (model, a, b) comparison once, in first-seen order."""
    unique: dict[tuple, tuple[MethodRuns, MethodRuns]] = {}
    for a, b in pairs:
        unique.setdefault((a.key, a.name, b.name), (a, b))
    return list(unique.values())


# --- writing -------------------------------------------------------------------------------------

SUMMARY_COLUMNS = [("model", "model"), ("dataset", "dataset"), ("precision", "bits"), ("method", "method"),
                   ("seeds", "seeds"), ("wer_mean", "WER % mean"), ("wer_std", "± std"), ("wer_min", "min"),
                   ("wer_max", "max"), ("delta_fp", "Δ FP"), ("wer_dev_mean", "dev WER %"),
                   ("loops", "capped test/dev"), ("platform", "platform")]
COMPARISON_COLUMNS = [("model", "model"), ("precision", "bits"), ("platform", "platform"), ("a", "a"), ("b", "b"), ("n", "seeds"),
                      ("mean_difference", "Δ WER % (a − b)"), ("a_better_on", "a better on"), ("t_pvalue", "paired t p"),
                      ("wilcoxon_pvalue", "Wilcoxon p"), ("std_a", "std a"), ("std_b", "std b"),
                      ("std_ratio", "std a / b"), ("spread_pvalue", "Pitman–Morgan p"), ("ci_low", "bootstrap 95 % low"), ("ci_high", "high")]
REPLICATE_COLUMNS = [("model", "model"), ("precision", "bits"), ("method", "method"), ("platform_a", "platform a"),
                     ("platform_b", "platform b"), ("n", "seeds"), ("numerical_std", "std from rounding"),
                     ("run_std", "std over seeds"), ("draw_share", "share of variance from the draw"),
                     ("correlation", "correlation a–b")]
_PERCENT = {"wer_mean", "wer_std", "wer_min", "wer_max", "delta_fp", "wer_dev_mean", "mean_difference", "std_a", "std_b",
            "ci_low", "ci_high", "bootstrap_difference", "numerical_std", "run_std"}


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in _PERCENT:
        return f"{100 * value:+.2f}" if key in ("delta_fp", "mean_difference", "ci_low", "ci_high") else f"{100 * value:.2f}"
    if key.endswith("pvalue"):
        return f"{value:.3f}"
    if key in ("draw_share", "correlation", "std_ratio"):
        return f"{value:.2f}"
    return str(value)


def to_markdown(rows: Sequence[dict[str, Any]], columns) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(key, row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("α", r"$\alpha$"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("−", "--")):
        text = text.replace(char, escaped)
    return text


def to_latex(rows: Sequence[dict[str, Any]], columns) -> str:
    header = " & ".join(_latex_escape(title) for _, title in columns) + r" \\"
    body = [" & ".join(_latex_escape(_cell(key, row.get(key))) for key, _ in columns) + r" \\" for row in rows]
    return "\n".join([r"\begin{tabular}{" + "l" * 4 + "r" * (len(columns) - 4) + "}", r"\toprule", header, r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}"]) + "\n"


def platforms(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Run names by the platform that made them (``unknown`` for runs written before fade recorded it).

    Low-bit WERs move by tenths of a point with floating-point detail (fade/process.py), so runs
    from several platforms are not compared like for like.
    """
    found: dict[str, list[str]] = {}
    for run in runs:
        found.setdefault(run.platform, []).append(run.name)
    return found


def aggregate(folders: Sequence[str | Path], out: str | Path | None = None, *, resamples: int = 10_000) -> dict[str, Any]:
    runs = [run for folder in folders for run in find_runs(folder)]
    made_on = platforms(runs)
    if len(made_on) > 1:
        log.warning("these runs were made on %d platforms; each gets its own rows, and methods are compared "
                    "within one platform (pooled rows add the platforms' paired differences up): %s", len(made_on),
                    "; ".join(f"{label} ({len(names)} runs)" for label, names in made_on.items()))
    groups = group_runs(runs)
    if not groups:
        raise DataError(f"no quantize runs under {', '.join(map(str, folders))}: nothing to aggregate")
    alpha_rows, fade_rows = [*chosen_alpha_rows(groups), *per_seed_alpha_rows(groups)], chosen_fade_rows(groups)
    chosen = [*alpha_rows, *fade_rows]
    summary = summary_rows(sorted([*groups, *chosen], key=lambda g: (g.key, _method_order(g.method), g.label or "")))
    pairs = _unique(default_pairs(groups) + chosen_pairs(groups, alpha_rows, fade_rows))
    comparisons = [c for a, b in pairs if (c := compare(a, b, resamples=resamples)) is not None]
    comparisons += pooled_comparisons(pairs, resamples=resamples)
    replicates = replicate_rows(groups)
    out_dir = Path(out) if out else Path(folders[0]) / "aggregate"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, rows, columns in (("summary", summary, SUMMARY_COLUMNS), ("comparisons", comparisons, COMPARISON_COLUMNS),
                                ("replicates", replicates, REPLICATE_COLUMNS)):
        atomic_write_text(out_dir / f"{stem}.md", to_markdown(rows, columns))
        atomic_write_text(out_dir / f"{stem}.csv", csv_text(rows))
        atomic_write_text(out_dir / f"{stem}.tex", to_latex(rows, columns))
    return {"summary": summary, "comparisons": comparisons, "replicates": replicates, "out": out_dir, "runs": len(runs), "platforms": made_on}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fade-aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="sweep folders (outputs/multirun/...) or run folders")
    parser.add_argument("--out", help="where the tables go (default: <first folder>/aggregate)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    args = parser.parse_args(argv)
    try:
        result = aggregate(args.folders, args.out, resamples=args.resamples)
    except DataError as exc:
        print(f"fade-aggregate: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(result["summary"], SUMMARY_COLUMNS))
    print(to_markdown(result["comparisons"], COMPARISON_COLUMNS))
    if result["replicates"]:
        print(to_markdown(result["replicates"], REPLICATE_COLUMNS))
    print(f"{result['runs']} runs → {result['out']}/summary.{{md,csv,tex}}, comparisons.{{md,csv,tex}}, replicates.{{md,csv,tex}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
