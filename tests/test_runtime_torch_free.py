"""qedge.runtime and qedge.calib never import torch (design.md §2): a device runs them without it.

A fresh interpreter blocks ``import torch`` (as on a Jetson without it), imports every module of
``qedge.runtime`` and ``qedge.calib`` (pkgutil.walk_packages) plus the torch-free dataset index,
reads a shared recording and computes features offline and streaming; torch must not be loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test (torch-free runtime)")
            return None

    sys.meta_path.insert(0, BlockTorch())

    import qedge.runtime, qedge.calib
    imported, skipped = [], {}
    for pkg in (qedge.runtime, qedge.calib):
        imported.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            try:
                importlib.import_module(info.name)
            except OSError as exc:  # a missing system library (e.g. PortAudio), not torch
                skipped[info.name] = str(exc)
                continue
            imported.append(info.name)

    import numpy as np
    from qedge.data import find_dataset
    from qedge.runtime.audio import load_audio
    from qedge.runtime.features import FeatureConfig, LogMelDeltas

    index = find_dataset(sys.argv[1])
    cfg = FeatureConfig()
    wave = load_audio(index.clips[0].path, cfg.sample_rate)
    ex = LogMelDeltas(cfg)
    offline = ex.compute(wave)
    stream = ex.stream()
    streamed = np.concatenate([stream.push(c) for c in np.array_split(wave, 50)] + [stream.flush()], axis=1)
    print(json.dumps({
        "imported": imported, "skipped": skipped, "shape": list(offline.shape),
        "stream_max_diff": float(np.abs(streamed - offline).max()),
        "torch_loaded": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
    }))
    """
)


def test_runtime_and_calib_import_and_run_without_torch(esc10_root):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(esc10_root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch_loaded"] == []
    assert "qedge.runtime.features" in result["imported"] and "qedge.runtime.audio" in result["imported"]
    assert result["shape"][0] == 4 and result["shape"][2] == 64
    assert result["stream_max_diff"] <= 1e-4
