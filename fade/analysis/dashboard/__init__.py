"""``fade-dashboard``: one self-contained, offline HTML page of a run or sweep folder.

    fade-dashboard outputs/multirun/<sweep>                      # -> <sweep>/dashboard.html
    fade-dashboard outputs/runs/<run> -o run.html
    fade-dashboard outputs/multirun/<sweep> --diff RUN_A RUN_B   # per-utterance diff of two runs

The page holds, for the runs found by :func:`fade.analysis.runs.find_runs`:

1. WER per method for each model, dataset and precision: a dot per calibration seed, the mean
   over seeds and the full-precision WER as a reference line;
2. α, V_int and R_calib per layer (model order, encoder and decoder coloured), one chart per
   (model, precision, method) that records them: the mean over seeds with min–max whiskers;
3. the per-layer error against the full-precision output before (``err_uncorrected``) and after
   (``err_final``) correction;
4. per-utterance differences between two runs, with word-level highlighting;
5. a table of the runs.

Everything is drawn here as inline SVG: no CDN, no script or style from elsewhere, no network,
so the file can be mailed, archived next to the results, or opened on an offline machine. A few
lines of inline JavaScript pick the diff to show; without JavaScript every diff is shown.
Every chart is ``<svg class="plot" data-kind=...>``; its data points carry ``class="mark"`` and
their exact value in ``data-value`` (tests and scrapers read the numbers back from there).

Modules: ``entries`` (runs and their labels), ``svg`` (scales, axes, legends), ``charts``
(layer and WER charts), ``diff`` (per-utterance differences), ``page`` (the page and the command).
"""

from fade.analysis.dashboard.charts import category_lines
from fade.analysis.dashboard.diff import highlight_words
from fade.analysis.dashboard.entries import load_entries
from fade.analysis.dashboard.page import build_dashboard, main

__all__ = ["build_dashboard", "category_lines", "highlight_words", "load_entries", "main"]
