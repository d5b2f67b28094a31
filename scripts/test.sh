#!/usr/bin/env bash
# Install everything (Python packages into .venv, Debian's Chromium) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements-dev.txt
bash scripts/install_browser.sh
exec .venv/bin/python -m pytest "$@"
