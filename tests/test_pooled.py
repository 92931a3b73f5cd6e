"""pyro_base.inference.evaluate.pooled and the several-runs form of scripts/evaluate.py: pooled
means and two-level intervals against hand computations, the seed-and-task pairing of a
comparison, and the command on run directories with existing evaluations (no model is run)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pyro_base.inference.commands.evaluate import cli
from pyro_base.inference.evaluate.pooled import (
    compare_evaluations,
    load_evaluation,
    pool_evaluations,
    restrict,
    two_level_interval,
)
from pyro_base.inference.evaluate.summary import bootstrap_interval

STEPS = [0, 5, 20]
FAMILIES = ["motif", "colour"]


def evaluation(run_seed: int, shift: float, n: int = 4, *, name: str = "run") -> dict:
    """A synthetic evaluation.json: accuracy of task j in family f after step k."""
    tasks = []
    for fi, family in enumerate(FAMILIES):
        for j in range(n):
            base = np.array([0.1, 0.3, 0.5]) + 0.01 * j + 0.1 * fi
            tasks.append({"family": family, "task": f"{family}/{j}", "task_index": j,
                          "accuracy": {"meta": (base + shift).tolist(),
                                       "untrained": base.tolist()}})
    settings = {"run_dir": f"{name}{run_seed}", "steps": STEPS, "arms": ["meta", "untrained"],
                "seed": 0, "task_source": "procedural", "families": FAMILIES,
                "run_seed": run_seed}
    return {"settings": settings, "tasks": tasks, "families": {}, "seconds": 1.0}


def test_two_level_interval_one_run_is_the_task_bootstrap_and_runs_widen_it():
    rng = np.random.default_rng(0)
    one = rng.normal(0.2, 0.1, (30, 2))
    mean, lo, hi = two_level_interval([one], n_boot=4000, seed=1)
    np.testing.assert_allclose(mean, one.mean(0))
    _, lo1, hi1 = bootstrap_interval(one, n_boot=4000, seed=1)
    np.testing.assert_allclose(hi - lo, hi1 - lo1, rtol=0.15)
    # three runs whose means differ by far more than their tasks: the interval spans the runs
    runs = [one[:10] - 0.3, one[10:20], one[20:] + 0.3]
    mean, lo, hi = two_level_interval(runs, n_boot=4000, seed=1)
    np.testing.assert_allclose(mean, np.concatenate(runs).mean(0))
    _, lo_tasks, hi_tasks = bootstrap_interval(np.concatenate(runs), n_boot=4000, seed=1)
    assert np.all(hi - lo > 1.5 * (hi_tasks - lo_tasks))
    assert np.all(lo <= mean) and np.all(mean <= hi)
    with pytest.raises(ValueError, match="at least one"):
        two_level_interval([])


def test_restrict_keeps_the_asked_steps_and_tasks():
    e = restrict(evaluation(0, 0.1), steps=[0, 20], tasks_per_family=2)
    assert e["settings"]["steps"] == [0, 20] and len(e["tasks"]) == 4
    assert e["tasks"][1]["accuracy"]["untrained"] == pytest.approx([0.11, 0.51])
    with pytest.raises(ValueError, match=r"no step counts \[40\]"):
        restrict(evaluation(0, 0.1), steps=[40])


def test_pooled_gain_is_the_mean_over_runs_and_tasks():
    pooled = pool_evaluations([evaluation(0, 0.1), evaluation(1, 0.3, n=2)], n_boot=200)
    gain = pooled["families"]["motif"]["gains"]["meta-untrained"]
    np.testing.assert_allclose(gain["mean"], [(4 * 0.1 + 2 * 0.3) / 6] * 3)
    assert gain["lo"][0] <= 0.1 + 1e-9 and gain["hi"][0] >= 0.3 - 1e-9
    assert pooled["families"]["colour"]["n_tasks"] == [4, 2] and pooled["run_seeds"] == [0, 1]
    other = evaluation(2, 0.0)
    other["settings"]["steps"] = [0, 5, 40]
    with pytest.raises(ValueError, match="differ in steps"):
        pool_evaluations([evaluation(0, 0.1), other])


def test_format_pooled_prints_every_gain_the_arms_have():
    from pyro_base.inference.evaluate.pooled import format_pooled

    runs = []
    for seed, shift in ((0, 0.1), (1, 0.3)):
        e = evaluation(seed, 0.0)
        for t in e["tasks"]:  # the default pipeline's arms: untrained and select
            t["accuracy"] = {"untrained": t["accuracy"]["untrained"],
                             "select": [a + shift for a in t["accuracy"]["untrained"]]}
        e["settings"]["arms"] = ["untrained", "select"]
        runs.append(e)
    text = format_pooled(pool_evaluations(runs, n_boot=200))
    assert "mean gain select over untrained" in text and "meta over untrained" not in text
    assert "| motif | +0.200 [" in text  # (0.1 + 0.3) / 2 over 4 tasks each
    both = format_pooled(pool_evaluations([evaluation(0, 0.1), evaluation(1, 0.1)], n_boot=50))
    assert "mean gain meta over untrained" in both and "| colour | +0.100 [+0.100, +0.100]" in both


def test_comparison_pairs_by_seed_and_task():
    base = [evaluation(0, 0.1), evaluation(1, 0.2)]
    cand = [evaluation(1, 0.5, name="c"), evaluation(0, 0.1, name="c")]  # any order
    diff = compare_evaluations(base, cand, n_boot=200)
    meta = diff["families"]["motif"]["meta"]
    np.testing.assert_allclose(meta["mean"], [(0.0 + 0.3) / 2] * 3)
    np.testing.assert_allclose(diff["families"]["colour"]["gain"]["mean"], [0.15] * 3)
    assert diff["run_seeds"] == [0, 1] and diff["candidate"] == ["c0", "c1"]
    with pytest.raises(ValueError, match="seeds"):
        compare_evaluations(base, [evaluation(0, 0.1), evaluation(2, 0.1)])
    swapped = evaluation(0, 0.1)
    swapped["tasks"][0]["task"] = "motif/other"
    with pytest.raises(ValueError, match="tasks differ"):
        compare_evaluations(base[:1], [swapped])


def make_run_dir(root: Path, name: str, run_seed: int, shift: float) -> Path:
    path = root / name
    (path / "evaluation").mkdir(parents=True)
    data = evaluation(run_seed, shift)
    (path / "evaluation" / "evaluation.json").write_text(json.dumps(data))
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": run_seed}))
    return path


def test_cli_pools_and_compares_reused_evaluations(tmp_path, capsys):
    cand = [make_run_dir(tmp_path, f"c{s}", s, 0.2) for s in (0, 1)]
    base = [make_run_dir(tmp_path, f"b{s}", s, 0.1) for s in (0, 1)]
    out = tmp_path / "cmp"
    argv = [*map(str, cand), "--baseline", *map(str, base), "--reuse", "--tasks-per-family",
            "3", "--steps", "0", "20", "--arms", "meta", "untrained", "--out", str(out)]
    assert cli(argv) == 0
    text = capsys.readouterr().out
    assert "pooled over 2 runs (seeds [0, 1])" in text and "candidate minus baseline" in text
    assert "| motif | +0.200 [+0.200, +0.200] | +0.200 [+0.200, +0.200] |" in text
    diff = json.loads((out / "comparison.json").read_text())
    np.testing.assert_allclose(diff["families"]["colour"]["meta"]["mean"], [0.1, 0.1])
    pooled = json.loads((out / "pooled.json").read_text())
    assert pooled["steps"] == [0, 20] and pooled["families"]["motif"]["n_tasks"] == [3, 3]
    assert load_evaluation(cand[0])["settings"]["run_seed"] == 0


def test_cli_comparison_errors_are_one_line(tmp_path, capsys):
    cand = [make_run_dir(tmp_path, "c0", 0, 0.2)]
    base = [make_run_dir(tmp_path, "b1", 1, 0.1)]
    assert cli([str(cand[0]), "--baseline", str(base[0]), "--reuse", "--tasks-per-family",
                "2", "--steps", "0", "--arms", "meta", "untrained"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "seeds" in err and "\n" not in err
