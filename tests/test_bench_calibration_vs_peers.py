"""The llm-compressor comparison configures each fade method as it says it does."""

import pytest
from conftest import REPO, import_bench
from hydra import compose, initialize_config_dir

from fade.config import register_configs
from fade.tasks.quantize import alpha_policy, quantizer_settings


@pytest.fixture(scope="module")
def bench():
    return import_bench("calibration_vs_peers")


def _composed(bench, method: str, bits: int):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=bench.fade_overrides(method, "whisper-base", bits, 128))


@pytest.mark.parametrize("bits", [3, 4])
def test_plain_gptq_runs_the_paper_grid(bench, bits):
    cfg = _composed(bench, "fade-gptq", bits)
    settings = quantizer_settings(cfg)
    assert (settings.method, settings.grid.bits, settings.grid.group_size) == ("gptq", bits, 128)
    assert not settings.grid.symmetric and not settings.act_order
    assert alpha_policy(cfg) is None and cfg.calibration.num_samples == 128 and cfg.calibration.seed == 0


def test_recipe_grid_variant_is_symmetric_with_static_act_order(bench):
    settings = quantizer_settings(_composed(bench, "fade-gptq-recipe-grid", 4))
    assert settings.grid.symmetric and settings.act_order and settings.static_groups
    assert (settings.method, settings.grid.bits, settings.grid.group_size) == ("gptq", 4, 128)


def test_qep_uses_the_global_alpha_and_fade_a_per_layer_policy(bench):
    qep, fade = alpha_policy(_composed(bench, "fade-gptq+qep", 3)), alpha_policy(_composed(bench, "fade-fade", 3))
    assert qep is not None and fade is not None and type(qep) is not type(fade)
    assert qep.value == 0.5


def _row(model, method, wall, bits=4):
    return {"model": model, "bits": bits, "method": method, "wall_s": wall, "solve_s": 0.0, "total_wall_s": wall + 5.0}


def test_grid_projection_takes_the_grid_methods_of_tiny_en_only(bench):
    from types import SimpleNamespace

    args = SimpleNamespace(n=128, eval_seconds=593.0)
    summary = [_row("whisper-tiny.en", "fade-gptq", 150.0), _row("whisper-tiny.en", "fade-gptq-recipe-grid", 900.0),
               _row("whisper-tiny.en", "fade-gptq+qep", 350.0), _row("whisper-tiny.en", "fade-fade", 340.0),
               _row("whisper-base", "fade-gptq", 700.0)]
    projection = bench.project_tiny_grid(summary, args, [])
    assert projection["calibration_seconds_per_run"] == {"gptq": 150.0, "qep": 350.0, "fade": 340.0}
    base_only = bench.project_tiny_grid([r for r in summary if r["model"] == "whisper-base"], args, [])
    assert "whisper-tiny.en" in base_only["note"]
