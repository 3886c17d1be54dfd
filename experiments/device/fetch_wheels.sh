#!/usr/bin/env bash
# Wheels for the packages fade needs that the lent GPU machine's image lacks (or has too old),
# at the versions installed here, into .whl/ at the repo root (git-ignored; 64 MiB travel limit).
# The machine reaches no package index, so they travel with the working tree (`carry: [".whl"]`);
# experiments/device/cuda_checks.sh installs them there. Python 3.12, manylinux x86-64.
#
#   bash experiments/device/fetch_wheels.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$REPO/.whl"
# The image has torch, lightning, numpy, scipy, safetensors, tokenizers, huggingface-hub, pyyaml,
# click, tqdm, typer and pytest (docs: /work/.library/device/KINDS.md); everything else fade imports:
PACKAGES=(transformers hydra-core omegaconf jiwer rapidfuzz soundfile whisper-normalizer more-itertools
          indic-numtowords text2num compressed-tensors loguru pydantic pydantic-core annotated-types
          typing-inspection typing-extensions regex
          # transformers 5.2x needs huggingface-hub 2.x (the image has 1.33), which needs httpx2;
          # soundfile needs cffi's compiled backend, which the image lacks.
          huggingface-hub httpx2 httpcore2 truststore anyio idna h11 click hf-xet tokenizers cffi pycparser)

version_here() { python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

rm -rf "$DEST" && mkdir -p "$DEST"
specs=()
for name in "${PACKAGES[@]}"; do specs+=("$name==$(version_here "$name")"); done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${specs[@]}"
# hydra-core pins antlr4-python3-runtime 4.9.*, published as a source archive only: build its wheel here.
python -m pip wheel -q --no-deps -w "$DEST" "antlr4-python3-runtime==$(version_here antlr4-python3-runtime)"
du -sh "$DEST"
ls "$DEST"
