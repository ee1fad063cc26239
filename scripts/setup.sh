#!/usr/bin/env bash
# Create .venv and install panowan into it (editable). `--test` adds the test tools.
#
# torch is installed first, pinned to PANOWAN_TORCH (default 2.13.0), because a bare `torch`
# requirement on a machine without torch pulls the newest CUDA build (several GB). Set
# PANOWAN_TORCH=skip to keep whatever torch the venv already has, or another version to choose it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
python3 -m venv .venv 2>/dev/null || test -x .venv/bin/python
py=.venv/bin/python
if ! "$py" -c "import torch" 2>/dev/null && [[ "${PANOWAN_TORCH:-}" != "skip" ]]; then
  "$py" -m pip install -q "torch==${PANOWAN_TORCH:-2.13.0}"
fi
"$py" -m pip install -q -e ".${extras}"
