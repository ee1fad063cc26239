#!/usr/bin/env bash
# Install panowan with its test tools into .venv and run the CPU test suite.
# The report test renders report.html in headless Chromium when /usr/bin/chromium exists
# (Debian: `apt-get install chromium`); without it that one test is skipped and reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
