"""The page: its sections, style and script, ``build_dashboard`` and the ``fade-dashboard`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fade.analysis.dashboard.charts import (coefficient_charts, constant_alpha, error_chart, reference_wer,
                                            summarize_layers, wer_chart)
from fade.analysis.dashboard.diff import Side, default_pairs, diff_picker, diff_section, resolve_side
from fade.analysis.dashboard.entries import Entry, group_by, load_entries
from fade.analysis.dashboard.svg import finite, number, percent, text
from fade.errors import DataError, FadeError

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 12px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}nav a{margin-right:14px}.note{color:#666}
svg.plot{display:block;max-width:100%;height:auto;margin:8px 0 16px;border:1px solid #eee}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg.plot{margin:0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.worse td.num:first-child{color:#b00}tr.better td.num:first-child{color:#070}
del{background:#fdd;color:#900}ins{background:#dfd;color:#060;text-decoration:underline}.empty{color:#999}
"""

# Without JavaScript every diff section shows; with it, the picker shows one at a time.
SCRIPT = """
(function(){var pick=document.getElementById('diff-pick');if(!pick)return;
function show(){var v=pick.value;document.querySelectorAll('section.diff').forEach(function(s){
s.style.display=(v==='all'||s.getAttribute('data-pair')===v)?'':'none';});}
pick.addEventListener('change',show);show();})();
"""


def wer_section(entries: Sequence[Entry]) -> str:
    quantized = [e for e in entries if not e.is_fp]
    fp_runs = group_by([e for e in entries if e.is_fp], "model", "dataset")
    charts = [wer_chart(group, reference_wer(group, fp_runs.get((model, dataset), [])))
              for (model, dataset, _), group in group_by(quantized, "model", "dataset", "precision").items()
              if any(e.wer is not None for e in group)]
    body = f'<div class="charts">{"".join(charts)}</div>' if charts else '<p class="note">No quantized run.</p>'
    return ('<section id="wer"><h2>WER by method</h2><p class="note">One chart per model, dataset and precision; a dot '
            "per run (calibration seed), the mean over seeds as a bar with its value, the full-precision WER dashed.</p>"
            f"{body}</section>")


def layer_sections(entries: Sequence[Entry]) -> tuple[str, str]:
    # Per dataset too: two test sets of one configuration would otherwise count as two seeds.
    configurations = group_by([e for e in entries if not e.is_fp], "model", "dataset", "precision", "method").values()
    coefficient_parts, error_parts, global_alphas = [], [], []
    for group in configurations:
        first = group[0]
        alpha = constant_alpha(summarize_layers([e.run for e in group], "alpha")) if first.compensated else None
        if alpha is not None:
            global_alphas.append(f"{text(first.model)} · {text(first.precision)} · {text(first.method)}: α = {number(alpha, 3)}")
        heading = (f"<h3>{text(first.model)} · {text(first.precision)} · {text(first.method)}"
                   + (f" · test set {text(first.dataset)}" if first.dataset else "") + "</h3>")
        charts = coefficient_charts(group)
        if charts:
            coefficient_parts.append(heading + "".join(charts))
        chart = error_chart(group)
        if chart:
            error_parts.append(heading + chart)
    coefficients = "".join(coefficient_parts) or ('<p class="note">No run records per-layer α, V_int or R_calib '
                                                  "(only compensated runs, QEP and FADE, do).</p>")
    if global_alphas:
        coefficients = ('<p class="note" id="global-alpha">One α for every layer (global-α QEP, not charted): '
                        + "; ".join(global_alphas) + ".</p>" + coefficients)
    errors_html = "".join(error_parts) or '<p class="note">No run has per-layer records (layers.jsonl).</p>'
    return (
        '<section id="coefficients"><h2>Compensation coefficients by layer</h2><p class="note">α (the compensation '
        "strength), and for FADE its inputs V_int and R_calib, per quantized Linear in model order; colour = part. "
        "Several seeds: the dot is the mean, the whisker spans min–max (hover for the values).</p>"
        f"{coefficients}</section>",
        '<section id="errors"><h2>Layer error before and after correction</h2><p class="note">Relative error of each '
        "layer's output against the full-precision model's, before (err_uncorrected: GPTQ on the drifted input) and after "
        "(err_final) the compensation; without compensation the two coincide.</p>"
        f"{errors_html}</section>")


def diff_section_all(pairs: Sequence[tuple[Side, Side]]) -> str:
    if not pairs:
        body = '<p class="note">No quantized run with a WER to compare.</p>'
    else:
        body = diff_picker(pairs) + "".join(diff_section(i, a, b) for i, (a, b) in enumerate(pairs))
    return ('<section id="utterances"><h2>Per-utterance differences</h2><p class="note">Utterances whose normalized '
            "hypotheses differ between two runs (default: each model and precision's full-precision output vs its best "
            f"quantized run; <code>--diff RUN_A RUN_B</code> picks two runs).</p>{body}</section>")


def runs_table(entries: Sequence[Entry], folder: Path) -> str:
    rows = []
    for e in entries:
        m = e.run.metrics
        dev = m.get("wer_dev")
        alpha = m.get("alpha_mean") if finite(m.get("alpha_mean")) else m.get("alpha")
        try:
            where = e.run.path.relative_to(folder)
        except ValueError:
            where = e.run.path
        rows.append(f"<tr><td>{text(e.model)}</td><td>{text(e.dataset)}</td><td>{text(e.precision)}</td>"
                    f"<td>{text(e.method)}</td><td class=\"num\">{text('' if e.seed is None else e.seed)}</td>"
                    f'<td class="num">{percent(e.wer)}</td><td class="num">{percent(e.wer_fp)}</td>'
                    f'<td class="num">{percent(dev) if finite(dev) else "–"}</td>'
                    f'<td class="num">{number(alpha, 3) if finite(alpha) else "–"}</td><td>{text(where)}</td></tr>')
    return ('<section id="runs"><h2>Runs</h2><table><thead><tr><th>model</th><th>dataset</th><th>precision</th>'
            "<th>method</th><th>seed</th><th>WER %</th><th>FP WER %</th><th>dev WER %</th><th>mean α</th><th>folder</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


def render(folder: Path, entries: Sequence[Entry], pairs: Sequence[tuple[Side, Side]]) -> str:
    coefficients, layer_errors = layer_sections(entries)
    title = f"fade dashboard: {folder.resolve().name}"
    models = sorted({e.model for e in entries})
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{text(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>'
        f"<h1>{text(title)}</h1><p class=\"note\">{len(entries)} runs of {len(models)} model(s) under "
        f"<code>{text(folder)}</code>. Hover a point for its values.</p>"
        '<nav><a href="#wer">WER</a><a href="#coefficients">α / V_int / R_calib</a><a href="#errors">layer errors</a>'
        '<a href="#utterances">per-utterance diff</a><a href="#runs">runs</a></nav>'
        f"{wer_section(entries)}{coefficients}{layer_errors}{diff_section_all(pairs)}{runs_table(entries, folder)}"
        f"<script>{SCRIPT}</script></body></html>\n")


def build_dashboard(folder: str | Path, output: str | Path | None = None,
                    diff: Sequence[str] | None = None) -> Path:
    """Write the dashboard of the runs under ``folder`` to ``output`` (default
    ``<folder>/dashboard.html``) and return its path.

    ``diff``: two runs (see :func:`resolve_side`) whose per-utterance outputs to compare instead of
    the default full-precision vs best-quantized pairs. Raises :class:`DataError` for a missing
    folder, a folder without finished runs, or a ``diff`` run that cannot be found.
    """
    root = Path(folder)
    entries = load_entries(root)  # DataError: not a folder / no finished runs
    if diff:
        if len(diff) != 2:
            raise DataError(f"--diff takes two runs, got {len(diff)}: {list(diff)}")
        pairs = [(resolve_side(diff[0], root, entries), resolve_side(diff[1], root, entries))]
    else:
        pairs = default_pairs(entries)
    path = Path(output) if output is not None else root / "dashboard.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(root, entries, pairs), encoding="utf-8")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fade-dashboard",
        description="Write one self-contained, offline HTML page (inline SVG charts, no network) of the finished "
                    "runs under a run or sweep folder: WER per method across seeds, α/V_int/R_calib and layer errors "
                    "by layer, per-utterance differences. See docs/dashboard.md.")
    parser.add_argument("folder", help="a run folder (outputs/runs/...) or a sweep folder (outputs/multirun/...)")
    parser.add_argument("-o", "--output", help="the HTML file to write (default: <folder>/dashboard.html)")
    parser.add_argument("--diff", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="compare these two runs' per-utterance outputs (a run folder path or name; RUN:fp for its "
                             "full-precision outputs) instead of each model's FP vs best quantized run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        path = build_dashboard(args.folder, args.output, args.diff)
    except FadeError as exc:
        # Bad input: one clear line, no traceback (as the fade command does).
        print(f"fade-dashboard: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
