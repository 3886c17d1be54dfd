"""The ``fade`` command: a Hydra app over conf/ (``fade --help``, ``fade --cfg job``, ``fade -m ...``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fade.config import register_configs
from fade.errors import FadeError
from fade.process import configure_process

#: conf/ at the repository root (the package is installed editable, see README).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

log = logging.getLogger("fade")
register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from fade.tasks import run_task

    try:
        metrics = run_task(cfg)
    except FadeError as exc:
        # Bad input: one clear line, no traceback. (Bugs still raise with their traceback.)
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(2)
    # Returning the WER lets Hydra sweepers (e.g. Optuna) optimise over runs.
    return metrics.get("wer")


def main() -> None:
    # OpenMP waiting policy and glibc's heap: see fade/process.py (both measured; neither changes results).
    configure_process()
    _app()


if __name__ == "__main__":
    main()
