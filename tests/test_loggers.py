"""Loggers: W&B offline runs read back from their transaction log, CSV files read back exactly.

Nothing here reaches the network: W&B runs offline, every W&B folder points into pytest's temp
folder, and any socket to a non-local address fails the test.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from fade.loggers import CSVLogger, NullLogger, WandbLogger
from fade.loggers.common import run_name, sweep_group
from fade.loggers.csv_logger import read_layers_csv
from fade.loggers.wandb_offline import find_run_files, load_offline_run

CONFIG = {
    "model": {"family": "whisper", "name": "whisper-tiny.en", "source": "random"},
    "dataset": {"name": "synthetic-test", "limit": None},
    "calibration": {"name": "synthetic", "num_samples": 8, "seed": 0},
    "quantizer": {"name": "gptq", "percdamp": 0.01, "exclude": []},
    "bits": {"w": 4, "group_size": 128, "symmetric": False},
    "compensation": {"name": "qep", "alpha": 0.5, "damp": 0.01},
    "runner": {"batch_size": 4, "progress_bar": False, "threads": None},
    "task": "quantize",
    "seed": 0,
    "tags": ["unit-test"],
}


def _config(**seeds):
    config = json.loads(json.dumps(CONFIG))
    config["seed"] = seeds.get("seed", 0)
    config["calibration"]["seed"] = seeds.get("calibration_seed", 0)
    return config


def _records():
    records = []
    for part, blocks in (("encoder", (0, 1)), ("decoder", (0, 1))):
        for block in blocks:
            k = len(records)
            records.append({
                "name": f"model.{part}.layers.{block}.fc1", "part": part, "block": block, "group": "mlp",
                "out_features": 1536, "in_features": 384, "bits": 4, "group_size": 128, "method": "gptq+qep",
                "tokens": 1200 + k, "alpha": 0.125 * (k + 1), "delta_norm_ratio": 0.01 * (k + 1),
                "err_input_only": 0.3 + k, "err_final": 0.1 * (k + 1), "err_local": 0.05 * (k + 1),
                "err_uncorrected": 0.2 * (k + 1), "seconds": 0.5, "v_int": 1.5 + k, "r_calib": 0.25 * k,
                "s": None if k == 3 else 0.75,
            })
    return records


#: run.finish() returns before wandb-core closes the .wandb file: readers wait for its exit record.
WAIT = 20.0

SUMMARY = {"model": "whisper-tiny.en", "dataset": "synthetic-test", "method": "gptq+qep", "bits": 4, "group_size": 128,
           "wer_fp": 0.125, "wer": 0.1875, "wer_delta": 0.0625, "calibration_seed": 0, "seed": 0,
           "calibration_seconds": 3.5, "eval_seconds": 1.25, "calibration_breakdown_seconds": {"stats": 1.0, "solve": 2.5}}


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """W&B confined to a temp folder, offline, quiet, no stats/code/git; torn down afterwards."""
    root = tmp_path_factory.mktemp("wandb-home")
    patch = pytest.MonkeyPatch()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": root, "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true",
                       "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off", "WANDB_X_DISABLE_STATS": "true",
                       "WANDB__DISABLE_STATS": "true", "WANDB_X_DISABLE_META": "true", "WANDB_ERROR_REPORTING": "false",
                       "WANDB_DATA_DIR": root / "data", "WANDB_CACHE_DIR": root / "cache",
                       "WANDB_CONFIG_DIR": root / "config", "WANDB_ARTIFACT_DIR": root / "artifacts"}.items():
        patch.setenv(key, str(value))
    patch.delenv("WANDB_API_KEY", raising=False)
    patch.delenv("WANDB_BASE_URL", raising=False)

    real_connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(sock, address)

    patch.setattr(socket.socket, "connect", local_only)
    yield root
    import psutil
    import wandb

    wandb.teardown()  # stops this process's wandb-core service
    patch.undo()
    leftovers = [p for p in psutil.Process().children(recursive=True) if "wandb" in " ".join(p.cmdline()).lower()]
    for process in leftovers:
        process.wait(timeout=10)  # teardown signals it; give it a moment, then it must be gone
    assert not [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _logger(folder, **kwargs):
    return WandbLogger(mode="offline", dir=str(folder), settings={"x_save_requirements": False}, strict=True, **kwargs)


def test_group_is_shared_across_seeds_and_split_by_configuration():
    base, other_seed = _config(), _config(seed=3, calibration_seed=2)
    assert sweep_group(base) == sweep_group(other_seed)
    assert run_name(base) != run_name(other_seed) and "cs2-s3" in run_name(other_seed)
    changed = _config()
    changed["compensation"]["alpha"] = 0.25
    assert sweep_group(changed) != sweep_group(base) and "a0.25" in sweep_group(changed)
    knob = _config()
    knob["quantizer"]["percdamp"] = 0.1  # not in the readable prefix, but in the hash
    assert sweep_group(knob) != sweep_group(base)
    noise = _config()
    noise["runner"]["progress_bar"] = True
    noise["tags"] = ["other"]
    assert sweep_group(noise) == sweep_group(base)
    assert sweep_group(base).startswith("whisper-tiny.en-gptq+qep-w4g128-a0.5-synthetic-test-synthetic8-")


def test_wandb_offline_run_records_table_charts_and_summary(wandb_env, tmp_path):
    records = _records()
    logger = _logger(tmp_path, tags=["extra"])
    logger.log_config(_config())
    logger.log_layers(records)
    logger.log_metrics(SUMMARY)
    logger.finish()
    logger.finish()  # idempotent

    (path,) = find_run_files(tmp_path / "wandb")
    assert path.parent.name.startswith("offline-run-") and path.name.startswith("run-")
    assert logger.run_folder == path.parent
    run = load_offline_run(tmp_path / "wandb", wait=WAIT)
    assert run.project == "fade" and run.job_type == "quantize"
    assert run.group == sweep_group(_config()) and run.name == run_name(_config())
    assert {"extra", "unit-test", "whisper-tiny.en", "gptq+qep", "w4g128"} <= set(run.tags)
    assert run.config["compensation"]["alpha"] == 0.5 and run.config["bits"]["w"] == 4
    assert run.exit_code == 0

    # The per-layer table: every record key a column, one row per layer, values exact.
    table = run.table("layers/table")
    assert table["columns"][0] == "index" and set(table["columns"]) == {"index", *records[0]}
    rows = run.table_records("layers/table")
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["alpha"] for r in rows] == [0.125, 0.25, 0.375, 0.5]
    assert [r["part"] for r in rows] == ["encoder", "encoder", "decoder", "decoder"]
    assert [{k: v for k, v in r.items() if k != "index"} for r in rows] == records

    # Charts: α/v_int/r_calib by layer (one series per part), α bars per part, errors before/after.
    visualize = run.config["_wandb"]["visualize"]
    for key in ("alpha_by_layer", "v_int_by_layer", "r_calib_by_layer", "alpha_encoder", "alpha_decoder", "error_by_layer"):
        assert f"layers/{key}" in visualize, sorted(visualize)
    assert visualize["layers/alpha_encoder"]["panel_config"]["panelDefId"] == "wandb/bar/v0"
    alpha_series = run.table_records("layers/alpha_by_layer_table")
    assert {(r["lineKey"], r["step"], r["lineVal"]) for r in alpha_series} == {
        ("encoder", 0, 0.125), ("encoder", 1, 0.25), ("decoder", 2, 0.375), ("decoder", 3, 0.5)}
    errors = run.table_records("layers/error_by_layer_table")
    assert {r["lineKey"] for r in errors} == {"err_input_only", "err_uncorrected", "err_final", "err_local"}
    assert [r["lineVal"] for r in errors if r["lineKey"] == "err_final"] == [r["err_final"] for r in records]
    assert [r["alpha"] for r in run.table_records("layers/alpha_decoder_table")] == [0.375, 0.5]

    # The summary: both WERs and everything else logged by log_metrics.
    assert run.summary["wer_fp"] == 0.125 and run.summary["wer"] == 0.1875 and run.summary["wer_delta"] == 0.0625
    assert run.summary["calibration_breakdown_seconds"] == {"stats": 1.0, "solve": 2.5}
    assert run.summary["layers/count"] == 4
    assert run.table_records("summary/wer") == [{"precision": "fp", "wer": 0.125}, {"precision": "quantized", "wer": 0.1875}]


@pytest.fixture
def hydra_job():
    """Make HydraConfig look like a multirun job's (as inside ``fade -m ...``); reset afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from fade.cli import CONFIG_DIR
    from fade.config import register_configs

    register_configs()

    def start(overrides, num, output_dir):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.job.num = num
            cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=False)

    yield start
    HydraConfig.instance().cfg = None


def test_wandb_seed_sweep_in_one_process(wandb_env, tmp_path, hydra_job):
    """A basic-launcher multirun: jobs share the process; a job that crashed leaves its run open."""
    for seed in (0, 1):
        config = hydra_job(["logger=wandb", f"calibration.seed={seed}"], seed, tmp_path / f"job{seed}")
        logger = WandbLogger(settings={"x_save_requirements": False}, strict=True)  # dir: the Hydra job's folder
        assert logger.dir == tmp_path / f"job{seed}"
        logger.log_config(config)
        logger.log_layers(_records()[:1])
        logger.log_metrics({**SUMMARY, "calibration_seed": seed})
        logger.finish()
    runs = [load_offline_run(tmp_path / f"job{seed}", wait=WAIT) for seed in (0, 1)]
    assert runs[0].group == runs[1].group and runs[0].run_id != runs[1].run_id
    assert [r.name.rsplit("-", 2)[1:] for r in runs] == [["cs0", "s0"], ["cs1", "s0"]]
    assert [r.config["hydra"]["overrides"][-1] for r in runs] == ["calibration.seed=0", "calibration.seed=1"]
    assert [r.config["hydra"]["job_num"] for r in runs] == [0, 1]

    crashed = _logger(tmp_path / "crashed")
    crashed.log_config(_config(calibration_seed=2))  # ...and the job raises before finish()
    nxt = _logger(tmp_path / "next")
    nxt.log_config(_config(calibration_seed=3))
    assert crashed.run is None  # closed by the next job, marked failed
    nxt.finish()
    assert load_offline_run(tmp_path / "crashed", wait=WAIT).exit_code == 1
    assert load_offline_run(tmp_path / "next", wait=WAIT).exit_code == 0


def test_logging_failure_is_a_warning_unless_strict(wandb_env, tmp_path, caplog):
    logger = WandbLogger(mode="offline", dir=str(tmp_path), settings={"x_save_requirements": False})
    logger.log_config(_config())

    def broken(*_, **__):
        raise RuntimeError("disk full")

    logger.run.log = broken
    logger.log_layers(_records())  # warns, does not raise: the quantized run must survive its logger
    assert "could not log the per-layer records" in caplog.text
    logger.strict = True
    with pytest.raises(RuntimeError, match="disk full"):
        logger.log_layers(_records())
    logger.finish()
    assert load_offline_run(tmp_path, wait=WAIT).exit_code == 0


def test_hydra_logger_options_instantiate(wandb_env, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from fade.cli import CONFIG_DIR
    from fade.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        made = {option: instantiate(compose(config_name="config", overrides=[f"logger={option}", f"logger.dir={tmp_path}"]
                                            if option != "none" else ["logger=none"]).logger)
                for option in ("none", "csv", "wandb")}
        cfg = compose(config_name="config", overrides=["logger=wandb"])
    assert isinstance(made["none"], NullLogger) and isinstance(made["csv"], CSVLogger)
    wandb_logger = made["wandb"]
    assert isinstance(wandb_logger, WandbLogger) and wandb_logger.mode == "offline" and wandb_logger.project == "fade"
    assert wandb_logger.dir == tmp_path and isinstance(wandb_logger.ignore_keys, list)
    assert OmegaConf.select(cfg, "logger.mode") == "offline"
    assert wandb_logger.run is None  # nothing opens before log_config


def test_mode_auto_follows_credentials(monkeypatch, tmp_path):
    from fade.loggers.wandb_logger import resolve_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("offline") == "offline" and resolve_mode("online") == "online"
    with pytest.raises(ValueError, match="mode"):
        resolve_mode("sometimes")


def test_csv_logger_files_round_trip(tmp_path):
    records = _records()
    records[0]["extra"] = [1, 2]  # a list survives as JSON text
    logger = CSVLogger(dir=str(tmp_path))
    logger.log_config(_config())
    logger.log_layers(records[:2])
    logger.log_layers(records[2:])  # repeated calls accumulate
    logger.log_metrics(SUMMARY)
    logger.finish()

    folder = tmp_path / "logs"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "layers.csv", "layers.jsonl", "summary.json"]
    assert yaml.safe_load((folder / "config.yaml").read_text()) == _config()
    assert [json.loads(line) for line in (folder / "layers.jsonl").read_text().splitlines()] == records
    from_csv = read_layers_csv(folder / "layers.csv")
    # Keys a record lacked come back as None; everything else exactly.
    assert from_csv == [{k: r.get(k) for k in from_csv[0]} for r in records]
    assert set(from_csv[0]) == {*records[0]}
    assert json.loads((folder / "summary.json").read_text()) == SUMMARY
    assert not list(Path(folder).glob(".*.tmp"))
