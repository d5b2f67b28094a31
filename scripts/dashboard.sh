#!/usr/bin/env bash
# Install everything into .venv and start the dashboard on http://localhost:8501 (extra args go to streamlit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements.txt
exec .venv/bin/streamlit run app.py "$@"
