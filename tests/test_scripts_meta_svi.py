"""scripts/meta_svi.py: --help without data, and a one-step smoke run writing the run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from pyro_base.genotype import Genotype
from pyro_base.inference.posterior.draws import load_posterior

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "meta_svi.py"
ENV = {"OMP_NUM_THREADS": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **ENV}, timeout=300)


def test_help_lists_the_flags():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--config", "--resume", "--steps", "--tasks-per-step", "--inner-lr",
                 "--meta-lr", "--tau-schedule", "--weight-prior", "--mode", "--device"):
        assert flag in r.stdout


def test_one_step_smoke_run_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    r = _run("--preset", "tiny", "--steps", "1", "--tasks-per-step", "2", "--inner-steps", "1",
             "--n-support", "20", "--n-query", "20", "--n-heldout", "2", "--adapt-steps", "1",
             "--num-samples", "2", "--arch-refit-tasks", "2", "--arch-refit-steps", "1",
             "--arch-refit-workers", "1", "--no-progress", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "meta-prior genotype" in r.stdout and "procedural/motif/test/0" in r.stdout
    assert "architecture prior refit" in r.stdout
    assert json.loads((run / "arch_refit.json").read_text())["n_good"] == 2
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["steps"] == 1 and cfg["preset"] == "tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "event" not in r] == [0]
    assert len([r for r in records if r.get("event") == "adapt"]) == 2
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["svi"]["step"] == 1
    Genotype.load(run / "prior_genotype.json")
    assert len(list((run / "genotypes").glob("*.json"))) == 2
    idata = load_posterior(run / "posterior.nc")
    assert "prior" in idata.groups() and "prior" not in idata.posterior["task"].values
    assert len(idata.posterior["task"]) == 2 and "inner_loss" in idata.sample_stats


def test_resume_refuses_changed_settings_and_extends_steps(tmp_path):
    run = tmp_path / "run"
    base = ("--preset", "tiny", "--tasks-per-step", "2", "--inner-steps", "1", "--n-support",
            "20", "--n-query", "20", "--n-heldout", "1", "--adapt-steps", "1", "--num-samples",
            "2", "--posterior-draws", "2", "--arch-refit-tasks", "0", "--no-progress")
    assert _run(*base, "--steps", "1", "--run-dir", str(run)).returncode == 0
    r = _run("--resume", str(run), "--inner-lr", "0.5")
    assert r.returncode == 2
    assert "trained with other settings (inner_lr: 0.03 -> 0.5)" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run("--resume", str(run), "--steps", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 2
    assert torch.load(run / "checkpoint.pt", weights_only=True)["svi"]["step"] == 2
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "event" not in json.loads(line)]
    assert steps == [0, 1]


def test_batched_graph_inner_loop_smoke_run(tmp_path):
    """--batch-tasks --elbo-impl graph: the vmapped static inner loop (eager on CPU)."""
    run = tmp_path / "run"
    r = _run("--preset", "tiny", "--steps", "2", "--tasks-per-step", "3", "--inner-steps", "2",
             "--n-support", "16", "--n-query", "16", "--inner-batch", "8", "--n-heldout", "1",
             "--adapt-steps", "1", "--num-samples", "2", "--posterior-draws", "4",
             "--elbo-impl", "graph", "--batch-tasks", "--arch-refit-tasks", "0", "--no-progress",
             "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "event" not in r]
    assert [s["step"] for s in steps] == [0, 1]
    assert all(s["n_good"] == 3 for s in steps)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["batch_tasks"] is True and cfg["elbo_impl"] == "graph"
    bad = _run("--batch-tasks", "--steps", "1", "--run-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "batch_tasks" in bad.stderr
