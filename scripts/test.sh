#!/usr/bin/env bash
# Install panowan with its test tools into .venv, check ruff (lint + format), and run the CPU test suite.
# The report test renders report.html in headless Chromium when /usr/bin/chromium exists
# (Debian: `apt-get install chromium`); without it that one test is skipped and reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# lint and format first (settings in pyproject.toml): a style failure stops CI before the long suite
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
