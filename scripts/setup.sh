#!/usr/bin/env bash
# Prepare a fresh machine for qedge: system packages, a virtual environment, the project with its
# training and test extras. Idempotent: a second run only checks. Used by main.sh, test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libsndfile1 libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, qedge.nn, onnxruntime, librosa, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.qedge-installed ]; then
  echo "==> installing torch 2.13.0 (CPU) and qedge[train,dev]"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[train,dev]"
  touch .venv/.qedge-installed
fi
