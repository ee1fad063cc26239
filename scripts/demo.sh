#!/usr/bin/env bash
# Install panowan into .venv and run the demo on the embedded default model (CPU is enough, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/panowan demo "$@"
