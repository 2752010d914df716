#!/usr/bin/env bash
# Run the test suite on a fresh machine: installs what is missing (scripts/setup.sh), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
.venv/bin/python -m pytest -q -ra "$@"
