"""``scripts/bench.py`` runs one tiny configuration on CPU, refuses a missing CUDA device, and
its ``--help`` needs no GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_script_runs_tiny_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--config", "tiny", "--repeats",
         "1", "--warmup", "0", "--device", "cpu", "--batch", "8", "--inner-steps", "2",
         "--tasks-per-step", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| config | batch | relaxation | variant | img/s | vs ref |" in proc.stdout
    # concrete: ref, pyro, pyro_stock, functional, graph, batched, batched_graph,
    # pyro_workers; straight_through: ref, pyro, pyro_stock, functional, pyro_workers
    assert proc.stdout.count("| tiny | 8 |") == 13
    rows = json.loads(out.read_text())["rows"]
    concrete = rows[0]
    assert concrete["variants"] == ["ref", "pyro", "pyro_stock", "functional", "graph",
                                    "batched", "batched_graph", "pyro_workers"]
    # the optimized paths give the Pyro path's losses on the same seed (float rounding)
    assert set(concrete["max_loss_diff"]) == set(concrete["variants"]) - {"ref"}
    assert max(concrete["max_loss_diff"].values()) < 1e-5
    assert all(concrete[f"{v}_img_s"] > 0 for v in concrete["variants"])
    # the step's tasks in 2 processes: the same losses and W to the last bit
    for row in rows:
        assert row["workers"] == 2 and row["pyro_workers_speedup"] > 0
        assert row["max_loss_diff"]["pyro_workers"] == 0.0
        assert row["pyro_workers_max_w_diff"] == 0.0


def test_bench_without_cuda_refuses_device_cuda_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device",
                           "cuda"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --device: device='cuda' but CUDA is not "
                                   "available; use 'cpu' or 'auto'")


def test_bench_help_needs_no_gpu():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0
    assert "--tasks-per-step" in proc.stdout

