"""scripts/experiment.py: --help, and the smoke preset end to end in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiment.py"
METHODS = {"base_adapt", "base_prior", "darts", "darts_10x", "snas", "random", "DARTS_V2",
           "BASE_CIFAR", "BASE_IMAGENET"}


def _run(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--preset", "--out", "--data-dir", "--seeds", "--device"):
        assert flag in r.stdout


def test_bad_flag_value_exits_2(tmp_path):
    r = _run("--preset", "smoke", "--seeds", "0", "--out", str(tmp_path))
    assert r.returncode == 2 and "seeds" in r.stderr


def test_smoke_end_to_end(tmp_path):
    r = _run("--preset", "smoke", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    rows = report["rows"]
    targets = {row["target"] for row in rows}
    assert targets == {"motif", "digits"}
    for target in targets:
        assert {row["method"] for row in rows if row["target"] == target} == METHODS
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["search_seconds"] >= 0
        assert row["genotype"]["normal"] and row["search_images"] >= 0
    assert report["meta_training"]["images"] > 0 and report["meta_training"]["seconds"] > 0
    darts = next(r for r in rows if r["method"] == "darts_10x")
    base = next(r for r in rows if r["method"] == "base_adapt")
    assert darts["search_passes"] == 10 * base["search_passes"]
    md = (tmp_path / "results.md").read_text()
    assert "## motif" in md and "## digits" in md and "Claim" in md
    assert (tmp_path / "accuracy_vs_cost.png").stat().st_size > 0
    assert (tmp_path / "heatmap_motif.png").stat().st_size > 0
