#!/usr/bin/env bash
# Build the llm-compressor peer's own virtual environment, .venv-llmcompressor/ at the repo root.
#
# llm-compressor is an optional *benchmark* dependency of fade, never a runtime one: it pins
# transformers below the version fade needs, so it lives in a venv of its own and is driven
# by experiments/bench/calibration_vs_peers.py through peers/llmcompressor_gptq.py.
#
#   bash experiments/bench/peers/setup_llmcompressor.sh            # llmcompressor 0.14.*
#   LLMC_VERSION=0.13.0 bash experiments/bench/peers/setup_llmcompressor.sh
#
# torch is installed FIRST and pinned for every later step: the CPU build 2.13.0 (the one fade
# uses here). Letting pip resolve another torch would download a CUDA build (gigabytes).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="${VENV:-$REPO/.venv-llmcompressor}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
LLMC_VERSION="${LLMC_VERSION:-0.14.*}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --upgrade pip wheel >/dev/null

"${PIP[@]}" install "torch==$TORCH_VERSION"
want_torch="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"

# Keep pip from swapping torch while it resolves llm-compressor's pins.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$want_torch" >"$constraints"
if [[ -n "${PIP_CONSTRAINT:-}" ]]; then cat "$PIP_CONSTRAINT" >>"$constraints"; fi
for c in /etc/xdg/pip/constraints.txt; do [[ -f "$c" ]] && grep -v '^torch\b' "$c" >>"$constraints" || true; done

# transformers: whatever llm-compressor's own pin accepts (pip picks the newest it allows).
"${PIP[@]}" install -c "$constraints" "llmcompressor==$LLMC_VERSION" soundfile numpy jiwer safetensors

got_torch="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
if [[ "$got_torch" != "$want_torch" ]]; then
    echo "error: pip replaced torch $want_torch with $got_torch" >&2
    exit 1
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "llmcompressor", "compressed-tensors", "transformers", "accelerate", "soundfile", "numpy", "jiwer"):
    try:
        print(f"{name:20s}{md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:20s}(not installed)")
PY
echo "llm-compressor venv ready: $VENV"
