"""Data-parallel training: two CPU processes (gloo) launched by torchrun train the same model;
both ranks end with identical weights and only rank 0 writes the model file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    from qedge.train import train_model

    data, out, report = sys.argv[1], sys.argv[2], sys.argv[3]
    model, meta = train_model(data, arch="qcnn6", width=0.125, epochs=2, batch_size=4, clip_seconds=0.5,
                              features={"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 32,
                                        "fmin": 20.0, "fmax": 4000.0},
                              out=out, device="cpu", progress=False)
    import torch.distributed as dist
    state = {k: v.tolist() for k, v in model.state_dict().items()}
    with open(os.path.join(report, f"rank{dist.get_rank()}.json"), "w") as fh:
        json.dump({"world": dist.get_world_size(), "state": state,
                   "world_in_meta": meta["history"][-1]["world_size"]}, fh)
    dist.destroy_process_group()
    """
)


def test_two_gloo_ranks_hold_identical_weights_and_rank0_writes_once(fsdd_root, tmp_path):
    data = tmp_path / "digits"
    for d in ("3", "4"):
        (data / d).mkdir(parents=True)
        for f in sorted((fsdd_root / "recordings").glob(f"{d}_theo_*.wav"))[:10]:
            os.symlink(f, data / d / f.name)
    out_dir, report = tmp_path / "out", tmp_path / "report"
    out_dir.mkdir(), report.mkdir()
    script = tmp_path / "ddp_job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "QEDGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(data), str(out_dir / "m.qedge"), str(report)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["world_in_meta"] == 2 for r in ranks)
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key in ranks[0]["state"]:
        assert ranks[0]["state"][key] == ranks[1]["state"][key], key
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.qedge"]  # one file, resume state cleaned
    import qedge

    model, meta = qedge.load(out_dir / "m.qedge")
    for key, value in model.state_dict().items():
        assert torch.equal(value, torch.tensor(ranks[0]["state"][key], dtype=value.dtype)), key
