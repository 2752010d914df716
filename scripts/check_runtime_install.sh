#!/usr/bin/env bash
# Prove the device install: a fresh venv with only the base package (no torch, no onnx) runs
# `qedge listen --file` on a model exported by the full install, and gets the expected tag.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# the open-set test model: what `qedge train --data esc10` makes, with its listen window (1.29 s)
# and thresholds (the closed-set one tags its silent windows with something else)
echo "==> exporting the trained open-set test model with the full install"
.venv/bin/qedge export tests/fixtures/esc10-qcnn6-openset.qedge --out "$work/model.onnx" --verify-data esc10 \
  --verify-size 4 --json > "$work/export.json"

echo "==> installing the base package alone into a fresh venv"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q .
if "$work/venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "FAILED: the base install pulled in torch"; exit 1
fi

clip=$(ls ../shared/data/esc10/"009 - Rooster"/4-*.ogg | head -n 1)
echo "==> qedge listen --file $clip (runtime-only venv)"
"$work/venv/bin/qedge" listen "$work/model.onnx" --file "$clip" --fast --json --top-k 1 > "$work/listen.jsonl"
"$work/venv/bin/python" - "$work/listen.jsonl" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
summary = lines[-1]["summary"]
tops = collections.Counter(w["tags"][0]["label"] for w in lines if w.get("tags"))
assert summary["windows"] > 0, summary
print(f"runtime-only install: {summary['windows']} windows, top tags {dict(tops)}, "
      f"RTF {summary['real_time_factor']}")
assert tops.most_common(1)[0][0] == "Rooster", tops
PY
echo "runtime-only install OK"
