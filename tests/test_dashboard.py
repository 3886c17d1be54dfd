"""fade-dashboard: the numbers on the page, the per-utterance diff, the CLI, and the page as
headless Chromium renders it.

The sweep tests use the session fixture ``random_sweep`` (2 random-init models × gptq/fade × 2
calibration seeds, through the real CLI). The Chromium test skips when no Chromium is installed,
unless ``FADE_REQUIRE_CHROMIUM=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fade.analysis.dashboard import diff as dashboard_diff
from fade.analysis.dashboard import build_dashboard, highlight_words, main
from fade.errors import DataError

# --------------------------------------------------------------------------- helpers


class PlotParser(HTMLParser):
    """The ``svg.plot`` charts of a page: each chart's attributes and those of its ``.mark`` elements."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict[str, Any]] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        classes = attributes.get("class", "").split()
        if tag == "svg" and "plot" in classes:
            self.plots.append({"attrs": attributes, "marks": []})
            self._inside = True
        elif self._inside and "mark" in classes:
            self.plots[-1]["marks"].append({"tag": tag, **attributes})

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._inside = False


def plots_of(page: str) -> list[dict[str, Any]]:
    parser = PlotParser()
    parser.feed(page)
    return parser.plots


def find_plots(plots: list[dict[str, Any]], **attrs: str) -> list[dict[str, Any]]:
    """Charts whose attributes match, e.g. ``kind="layer-alpha", model="random-whisper"``."""
    wanted = {("data-" + key.replace("_", "-")): value for key, value in attrs.items()}
    return [p for p in plots if all(p["attrs"].get(key) == value for key, value in wanted.items())]


def sweep_runs(sweep: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(metrics, layer records) of every run of the sweep, read straight from the files."""
    runs = []
    for metrics_path in sorted(sweep.glob("*/metrics.json")):
        layers_path = metrics_path.parent / "layers.jsonl"
        layers = [json.loads(line) for line in layers_path.read_text().splitlines() if line.strip()]
        runs.append((json.loads(metrics_path.read_text()), layers))
    return runs


def write_run(folder: Path, metrics: dict[str, Any], fp: list[dict[str, Any]], quantized: list[dict[str, Any]]) -> Path:
    """A finished run folder as fade writes it (metrics.json, fp/ and quantized/ hypotheses)."""
    for which, records in (("fp", fp), ("quantized", quantized)):
        (folder / which).mkdir(parents=True, exist_ok=True)
        (folder / which / "hypotheses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def utterance(utterance_id: str, reference: str, hypothesis: str, substitutions: int = 0, deletions: int = 0,
              insertions: int = 0) -> dict[str, Any]:
    return {"id": utterance_id, "reference": reference, "hypothesis": hypothesis, "reference_normalized": reference,
            "hypothesis_normalized": hypothesis, "words": len(reference.split()), "substitutions": substitutions,
            "deletions": deletions, "insertions": insertions}


@pytest.fixture
def two_runs(tmp_path) -> Path:
    """Two hand-made runs of one model: differences of known size, and HTML in a hypothesis."""
    reference = {"u1": "the cat sat", "u2": "a b c d", "u3": "same words", "u4": "hi there", "u5": "one two"}
    fp = [utterance("u1", reference["u1"], "the cat sat"), utterance("u2", reference["u2"], "a b c d"),
          utterance("u3", reference["u3"], "same words"), utterance("u4", reference["u4"], "hi there"),
          utterance("u5", reference["u5"], "one too to", substitutions=1, insertions=1)]
    quantized = [utterance("u1", reference["u1"], "the bat sat", substitutions=1),
                 utterance("u2", reference["u2"], "a x y d e", substitutions=2, insertions=1),
                 utterance("u3", reference["u3"], "same words"),
                 utterance("u4", reference["u4"], "<script>alert(1)</script> there", substitutions=1),
                 utterance("u5", reference["u5"], "one two")]
    metrics = {"model": "tiny", "dataset": "toy", "method": "gptq", "quantizer": "gptq", "compensation": "none",
               "bits": 4, "group_size": 128, "calibration_seed": 0, "wer_fp": 0.1, "wer": 0.3}
    sweep = tmp_path / "sweep"
    write_run(sweep / "run_a", metrics, fp, quantized)
    write_run(sweep / "run_b", {**metrics, "method": "rtn", "quantizer": "rtn", "wer": 0.5}, fp, fp)
    return sweep


# --------------------------------------------------------------------------- errors and CLI


def test_missing_or_empty_folder_is_a_data_error(tmp_path, capsys):
    with pytest.raises(DataError, match="is not a folder"):
        build_dashboard(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no finished runs"):
        build_dashboard(tmp_path / "empty")
    assert main([str(tmp_path / "empty")]) == 2
    assert "DataError" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "dashboard.html").exists()


def test_cli_writes_the_page_next_to_the_runs_or_where_asked(two_runs, tmp_path, capsys):
    assert main([str(two_runs)]) == 0
    default = two_runs / "dashboard.html"
    assert capsys.readouterr().out.strip() == str(default)
    assert default.read_text().startswith("<!DOCTYPE html>")
    elsewhere = tmp_path / "pages" / "one.html"
    assert main([str(two_runs / "run_a"), "-o", str(elsewhere)]) == 0  # a single run folder works too
    assert "fade dashboard: run_a" in elsewhere.read_text()
    assert main([str(two_runs), "--diff", "run_a", "nope"]) == 2
    assert "not a finished run" in capsys.readouterr().err


# --------------------------------------------------------------------------- per-utterance diff


def test_highlight_marks_changed_words_and_escapes():
    assert highlight_words("the cat sat", "the bat sat") == ("the <del>cat</del> sat", "the <ins>bat</ins> sat")
    assert highlight_words("a b", "a b c") == ("a b", "a b <ins>c</ins>")
    html_a, html_b = highlight_words("<b>x</b>", "")
    assert html_a == "<del>&lt;b&gt;x&lt;/b&gt;</del>" and "(empty)" in html_b


def test_default_diff_is_fp_vs_best_run_sorted_by_error_difference(two_runs):
    page = build_dashboard(two_runs).read_text()
    # Default pair: full precision vs the lowest-WER run (run_a, 30 % vs run_b's 50 %).
    assert "A: tiny full precision → B: tiny w4g128 gptq seed 0" in page
    rows = re.findall(r'data-difference="(-?\d+)"><td class="num">[^<]*</td><td>([^<]*)</td>', page)
    # |Δ| descending, then B-worse first, then id; u3 is identical and left out.
    assert rows == [("3", "u2"), ("-2", "u5"), ("1", "u1"), ("1", "u4")]
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "4 of 5 shared utterances differ" in page


def test_diff_of_two_named_runs_and_the_row_cap(two_runs, monkeypatch):
    monkeypatch.setattr(dashboard_diff, "MAX_DIFF_ROWS", 2)
    page = build_dashboard(two_runs, two_runs / "x.html", diff=["run_a", str(two_runs / "run_b") + ":fp"]).read_text()
    assert "A: tiny w4g128 gptq seed 0 → B: tiny full precision" in page
    assert len(re.findall(r"data-difference=", page)) == 2
    assert "the 2 with the largest error difference are shown" in page
    with pytest.raises(DataError, match="not a finished run"):
        build_dashboard(two_runs, diff=["run_a", "run_zzz"])


def test_runs_differing_beyond_their_labels_are_not_taken_for_seeds(tmp_path):
    """Same model, method and precision but another calibration size: two series, not four seeds."""
    metrics = {"model": "tiny", "dataset": "toy", "method": "gptq", "quantizer": "gptq", "compensation": "none",
               "bits": 4, "group_size": 128, "wer_fp": 0.1}
    fp = [utterance("u1", "a b", "a b")]
    for samples in (64, 128):
        for seed in (0, 1):
            config = {"calibration": {"num_samples": samples, "seed": seed}, "seed": 0, "runner": {"progress_bar": False}}
            run_metrics = {**metrics, "calibration_seed": seed, "wer": samples / 1000 + seed / 100, "config": config}
            write_run(tmp_path / f"n{samples}_s{seed}", run_metrics, fp, fp)
    (chart,) = find_plots(plots_of(build_dashboard(tmp_path).read_text()), kind="wer")
    methods = sorted(mark["data-method"] for mark in chart["marks"])
    assert methods == ["gptq [calibration.num_samples=128]"] * 2 + ["gptq [calibration.num_samples=64]"] * 2


# --------------------------------------------------------------------------- the sweep's numbers


@pytest.fixture(scope="module")
def sweep_page(random_sweep, tmp_path_factory) -> Path:
    return build_dashboard(random_sweep, tmp_path_factory.mktemp("dashboard") / "dashboard.html")


def test_every_chart_is_well_formed_svg_with_marks(sweep_page):
    page = sweep_page.read_text()
    svgs = re.findall(r'<svg class="plot".*?</svg>', page, flags=re.S)
    assert svgs and len(svgs) == len(plots_of(page))
    for svg in svgs:
        root = ET.fromstring(svg)  # well-formed XML, so it also opens as an .svg file
        assert root.find("{http://www.w3.org/2000/svg}title").text
    for plot in plots_of(page):
        assert plot["marks"], f"{plot['attrs']['data-kind']} chart without marks"
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    assert "https://" not in page and "<link" not in page and "src=" not in page


def test_coefficients_are_the_means_over_seeds(random_sweep, sweep_page):
    plots = plots_of(sweep_page.read_text())
    runs = sweep_runs(random_sweep)
    for model in sorted({metrics["model"] for metrics, _ in runs}):
        fade_runs = [layers for metrics, layers in runs if metrics["model"] == model and metrics["compensation"] == "fade"]
        assert len(fade_runs) == 2
        for key in ("alpha", "v_int", "r_calib"):
            (chart,) = find_plots(plots, kind=f"layer-{key}", model=model, method="gptq+fade")
            values = defaultdict(list)
            for layers in fade_runs:
                for record in layers:
                    if math.isfinite(record[key]):
                        values[record["name"]].append(record[key])
            shown = {mark["data-layer"]: mark for mark in chart["marks"]}
            assert set(shown) == set(values)
            for name, seed_values in values.items():
                assert float(shown[name]["data-value"]) == pytest.approx(sum(seed_values) / len(seed_values), rel=1e-12)
                assert float(shown[name]["data-min"]) == min(seed_values)
                assert float(shown[name]["data-max"]) == max(seed_values)
            # model order: the index on the page is the position in layers.jsonl
            order = [record["name"] for record in fade_runs[0]]
            assert all(int(mark["data-index"]) == order.index(name) for name, mark in shown.items())
            assert {mark["data-part"] for mark in chart["marks"]} == {"encoder", "decoder"}
        # uncompensated GPTQ records α = 0 everywhere: no coefficient chart for it
        assert not find_plots(plots, kind="layer-alpha", model=model, method="gptq")
        (errors,) = find_plots(plots, kind="layer-errors", model=model, method="gptq+fade")
        series = {mark.get("data-series") for mark in errors["marks"]}
        assert series == {"err_uncorrected", "err_final"}


def test_wer_chart_has_one_mark_per_run(random_sweep, sweep_page):
    plots = plots_of(sweep_page.read_text())
    runs = [metrics for metrics, _ in sweep_runs(random_sweep)]
    for model in sorted({metrics["model"] for metrics in runs}):
        (chart,) = find_plots(plots, kind="wer", model=model)
        model_runs = [metrics for metrics in runs if metrics["model"] == model]
        assert len(chart["marks"]) == len(model_runs) == 4
        assert sorted(float(m["data-value"]) for m in chart["marks"]) == sorted(metrics["wer"] for metrics in model_runs)
        assert {m["data-method"] for m in chart["marks"]} == {"gptq", "gptq+fade"}


# --------------------------------------------------------------------------- rendered in Chromium


def chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        message = "Chromium is not installed: apt-get install chromium (needed to render the dashboard)"
        if os.environ.get("FADE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message + "; FADE_REQUIRE_CHROMIUM=1 requires it")
        pytest.skip(message)
    return binary


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               f"--user-data-dir={profile}", "--window-size=1400,3000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def png_colours(path: Path, max_rows: int = 320) -> tuple[int, int, int]:
    """(width, height, distinct colours): the whole image with Pillow, else the top ``max_rows``
    rows decoded here (8-bit RGB/RGBA, non-interlaced: what Chromium writes)."""
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        with Image.open(path) as image:
            colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
            return image.width, image.height, len(colours)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks, header = 8, [], None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    rows = min(height, max_rows)
    raw = zlib.decompressobj().decompress(b"".join(chunks), (stride + 1) * rows)
    previous, colours = bytearray(stride), set()
    for row in range(rows):
        filter_type, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):  # undo the PNG filter (spec section 9.2)
            left = line[i - channels] if i >= channels else 0
            up, upper_left = previous[i], previous[i - channels] if i >= channels else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upper_left)) & 0xFF
        colours.update(bytes(line[i:i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, len(colours)


def test_page_renders_in_headless_chromium(random_sweep, sweep_page, tmp_path):
    binary = chromium()
    url = sweep_page.resolve().as_uri()
    dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", url).stdout
    assert f"<title>fade dashboard: {random_sweep.name}</title>" in dom
    plots = plots_of(dom)
    kinds = {plot["attrs"]["data-kind"] for plot in plots}
    assert {"wer", "layer-alpha", "layer-v_int", "layer-r_calib", "layer-errors"} <= kinds
    assert all(plot["marks"] for plot in plots)
    assert len(find_plots(plots, kind="wer")) == 2  # one per model (one precision)
    # The script ran: with two diff pairs, the picker shows the first and hides the second.
    assert 'id="diff-pick"' in dom
    assert re.search(r'<section class="diff" id="diff-1" data-pair="1" style="display: none;">', dom)

    screenshot = tmp_path / "dashboard.png"
    run_chromium(binary, tmp_path / "profile", f"--screenshot={screenshot}", url)
    assert screenshot.stat().st_size > 20_000
    width, height, colours = png_colours(screenshot)
    assert (width, height) == (1400, 3000)
    assert colours > 10, "the screenshot is (nearly) a single colour"


def test_a_global_alpha_is_named_not_charted(tmp_path):
    """QEP's α is the same for every layer: one line in the note instead of a flat chart per α."""
    fp = [utterance("u1", "a b", "a b")]
    base = {"model": "tiny", "dataset": "toy", "quantizer": "gptq", "bits": 3, "group_size": 128, "wer_fp": 0.0, "wer": 0.5}
    layers = {"qep": [0.25, 0.25], "fade": [0.3, 0.6]}
    for name, alphas in layers.items():
        for seed in (0, 1):
            folder = write_run(tmp_path / "sweep" / f"{name}{seed}", {**base, "method": f"gptq+{name}", "compensation": name,
                                                                       "alpha": 0.25 if name == "qep" else None,
                                                                       "calibration_seed": seed}, fp, fp)
            (folder / "layers.jsonl").write_text("".join(
                json.dumps({"name": f"l{i}", "part": "encoder", "alpha": a + (0.01 * seed if name == "fade" else 0.0),
                            "err_uncorrected": 0.2, "err_final": 0.1}) + "\n" for i, a in enumerate(alphas)))
    assert main([str(tmp_path / "sweep"), "-o", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    plots = plots_of(page)
    assert not find_plots(plots, kind="layer-alpha", method="gptq+qep")
    (fade_alpha,) = find_plots(plots, kind="layer-alpha", method="gptq+fade")
    assert len(fade_alpha["marks"]) == 2
    note = page[page.index('id="global-alpha"'):]
    assert "gptq+qep" in note[:note.index("</p>")] and "α = 0.25" in note[:note.index("</p>")]
    assert "gptq+fade" not in note[:note.index("</p>")]


def test_a_signal_that_is_off_is_not_charted(tmp_path):
    """FADE with V_int off records v_int = 0 (raw NaN) per layer: no chart of zeros; R_calib is charted."""
    fp = [utterance("u1", "a b", "a b")]
    folder = write_run(tmp_path / "sweep" / "direct", {"model": "tiny", "dataset": "toy", "quantizer": "gptq", "bits": 3,
                                                       "group_size": 128, "wer_fp": 0.0, "wer": 0.5, "method": "gptq+fade",
                                                       "compensation": "fade", "calibration_seed": 0}, fp, fp)
    (folder / "layers.jsonl").write_text("".join(
        json.dumps({"name": f"l{i}", "part": "encoder", "alpha": a, "v_int": 0.0, "v_int_raw": float("nan"),
                    "r_calib": a, "r_calib_raw": a}) + "\n" for i, a in enumerate([0.3, 0.8])))
    plots = plots_of(build_dashboard(tmp_path / "sweep").read_text())
    assert not find_plots(plots, kind="layer-v_int")
    assert len(find_plots(plots, kind="layer-r_calib")[0]["marks"]) == 2
    assert len(find_plots(plots, kind="layer-alpha")[0]["marks"]) == 2


def test_method_labels_put_one_setting_per_line():
    """Long ablation labels wrap at their settings, so a slot stays narrow; short ones stay whole."""
    from fade.analysis.dashboard import category_lines

    assert category_lines("gptq") == ["gptq"]
    assert category_lines("gptq+qep(α=0.5)") == ["gptq+qep", "(α=0.5)"]
    assert category_lines("gptq+fade(v_int=None,r_calib=heldout_gain, chosen on dev)") == [
        "gptq+fade", "(v_int=None,", "r_calib=heldout_gain,", "chosen on dev)"]


def test_an_option_added_later_does_not_split_a_configuration(tmp_path):
    # seed 0 ran before compensation.mapping existed; seed 1 has it at its schema default: one configuration
    from fade.analysis.dashboard import load_entries

    for seed, compensation in ((0, {"name": "qep", "alpha": 0.5}), (1, {"name": "qep", "alpha": 0.5, "mapping": "sigmoid"})):
        folder = tmp_path / "sweep" / f"s{seed}"
        folder.mkdir(parents=True)
        metrics = {"model": "m", "dataset": "d", "method": "gptq+qep", "compensation": "qep", "alpha": 0.5, "bits": 3,
                   "group_size": 128, "calibration_seed": seed, "wer": 0.1, "wer_fp": 0.05,
                   "config": {"compensation": compensation, "calibration": {"seed": seed}}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    assert {e.method for e in load_entries(tmp_path / "sweep")} == {"gptq+qep(α=0.5)"}
    # a real difference still splits it
    other = json.loads((tmp_path / "sweep" / "s1" / "metrics.json").read_text())
    other["config"]["compensation"]["mapping"] = "direct"
    (tmp_path / "sweep" / "s1" / "metrics.json").write_text(json.dumps(other))
    assert len({e.method for e in load_entries(tmp_path / "sweep")}) == 2


def test_charts_of_one_configuration_share_the_layer_axis(tmp_path):
    """R_calib is undefined (NaN) on layers with no incoming error: its chart still spans every
    layer, with the encoder/decoder bands where α's chart has them, so the two line up."""
    fp = [utterance("u1", "a b", "a b")]
    folder = write_run(tmp_path / "sweep" / "fade", {"model": "tiny", "dataset": "toy", "quantizer": "gptq", "bits": 3,
                                                     "group_size": 128, "wer_fp": 0.0, "wer": 0.5, "method": "gptq+fade",
                                                     "compensation": "fade", "calibration_seed": 0}, fp, fp)
    parts = ["encoder", "encoder", "encoder", "decoder", "decoder"]
    r_calib = [float("nan"), 0.4, 0.7, 0.2, float("nan")]  # undefined on the first and the last layer
    (folder / "layers.jsonl").write_text("".join(
        json.dumps({"name": f"l{i}", "part": part, "alpha": 0.5 + 0.1 * i, "v_int": 0.1 * i, "r_calib": r,
                    "r_calib_raw": r}) + "\n" for i, (part, r) in enumerate(zip(parts, r_calib))))
    page = build_dashboard(tmp_path / "sweep").read_text()
    svgs = {m.group(1): m.group(0) for m in re.finditer(r'<svg class="plot"[^>]*data-kind="(layer-[\w-]+)".*?</svg>', page,
                                                        flags=re.S)}

    def bands(svg: str) -> list[tuple[str, float, float]]:
        return [(b.get("data-part"), float(b.get("x")), float(b.get("width")))
                for b in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}rect") if b.get("class") == "band"]

    alpha_bands, r_calib_bands = bands(svgs["layer-alpha"]), bands(svgs["layer-r_calib"])
    assert [part for part, _, _ in alpha_bands] == ["encoder", "decoder"]
    assert r_calib_bands == alpha_bands
    assert len(find_plots(plots_of(page), kind="layer-r_calib")[0]["marks"]) == 3  # NaN layers have no mark
