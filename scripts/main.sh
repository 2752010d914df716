#!/usr/bin/env bash
# The main job on the embedded defaults (bundled ESC-10 recordings, CPU): installs what is missing
# (scripts/setup.sh), then train → compress → export fp32/int8 → listen → report (scripts/main_job.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python scripts/main_job.py "$@"
