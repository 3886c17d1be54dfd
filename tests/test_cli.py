"""The Hydra app: composition, schema validation, and an end-to-end run in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fade.cli import CONFIG_DIR
from fade.config import register_configs

REPO = Path(__file__).resolve().parent.parent


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_default_config_quantizes_tiny_en_on_synthetic():
    cfg = _compose([])
    assert (cfg.model.name, cfg.dataset.name, cfg.task) == ("whisper-tiny.en", "synthetic-test", "quantize")
    assert (cfg.quantizer.name, cfg.compensation.name, cfg.bits.w, cfg.bits.group_size) == ("gptq", "qep", 4, 128)
    OmegaConf.resolve(cfg)
    assert cfg.paths.datasets.endswith("shared/datasets")


@pytest.mark.parametrize("override, message", [("model.bogus=1", "bogus"), ("runner.batch_size=many", "batch_size")])
def test_schema_rejects_unknown_keys_and_wrong_types(override, message):
    with pytest.raises(Exception, match=message):
        _compose([override])


def test_every_group_option_composes():
    for group in ("model", "dataset", "calibration", "quantizer", "bits", "compensation", "runner", "experiment"):
        for option in sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml")):
            _compose([f"{group}={option}"])


def test_fade_direct_preset_is_the_explicit_direct_step():
    """compensation=fade_direct composes to the config of the grid's explicit overrides, so the
    aggregate labels and pools runs made either way as one variant."""
    from fade.analysis.runs import fade_variant
    from fade.tasks.resume import result_config

    preset = _compose(["method=fade", "compensation=fade_direct"])
    explicit = _compose(["method=fade", "compensation.v_int=null", "compensation.r_calib=heldout_alpha_full",
                         "compensation.mapping=direct", "compensation.alpha_min=0", "compensation.alpha_max=1"])
    assert result_config(preset) == result_config(explicit)
    variant = fade_variant(result_config(preset)["compensation"])
    assert "mapping=direct" in variant and "r_calib=heldout_alpha_full" in variant and "v_int=None" in variant
    assert fade_variant(result_config(_compose(["method=fade"]))["compensation"]) == ""


def _fade(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "fade", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_end_to_end_run_writes_metrics(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    result = _fade(["model=moonshine_random", "task=evaluate", "dataset=manifest", f"dataset.source.manifest={tiny_manifest}",
                    "runner.progress_bar=false", f"hydra.run.dir={run}"], cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["utterances"] == 4 and "WER %" in result.stdout
    assert (run / ".hydra" / "config.yaml").is_file()


def test_bad_input_exits_with_one_clear_line(tmp_path):
    result = _fade(["model=whisper_random", "dataset=manifest", f"dataset.source.manifest={tmp_path}/none.tsv",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO)
    assert result.returncode == 2
    assert "manifest not found" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("model", ["moonshine_random", "qwen3_asr_random"])
def test_quantize_task_end_to_end_in_process(model, tiny_manifest, tmp_path, monkeypatch):
    """task=quantize on a random model: FP and quantized WER, a record for every block Linear."""
    from fade.models import get_family, load_model
    from fade.tasks import run_task

    monkeypatch.chdir(tmp_path)  # outside a Hydra app the run folder is the current folder
    cfg = _compose([f"model={model}", "dataset=manifest", f"dataset.source.manifest={tiny_manifest}",
                    "calibration=kathleen_calib", f"calibration.source.manifest={tiny_manifest}",
                    "calibration.num_samples=4", "calibration.batch_size=2", "bits=w4", "runner.progress_bar=false"])
    summary = run_task(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["wer"] == summary["wer"] and saved["utterances"] == 4 and saved["method"] == "gptq+qep"
    records = [json.loads(line) for line in (tmp_path / "layers.jsonl").read_text().splitlines()]
    loaded = load_model(cfg.model.family, "random")
    expected = 0
    for stage in get_family(cfg.model.family).stages(loaded):
        module = loaded.model.get_submodule(stage.path)
        blocks = [module] if stage.single else list(module)
        expected += sum(isinstance(m, torch.nn.Linear) for b in blocks for m in b.modules())
    assert len(records) == saved["quantized_linears"] == expected
    assert (tmp_path / "fp" / "hypotheses.jsonl").is_file() and (tmp_path / "quantized" / "metrics.json").is_file()


def test_the_cli_leaves_openmp_threads_passive_unless_told_otherwise(tmp_path):
    """fade sets OMP_WAIT_POLICY before torch loads (checked in a fresh interpreter)."""
    code = ("import os, sys; sys.argv = ['fade', '--help']\n"
            "import fade.cli\n"
            "assert 'torch' not in sys.modules\n"
            "try:\n    fade.cli.main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE", out.stderr[-1000:]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "ACTIVE"
