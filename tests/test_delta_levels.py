"""pyro_base.inference.vi.delta_levels and scripts/agreement.py: the seed / task / family
cosines against an additive model with known variances, the contributions against a real
meta-step's, and the command's file and errors (tiny preset, a run made here)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_base.checkpoint import save_checkpoint
from pyro_base.inference.commands.agreement import cli
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_meta_svi,
    build_model,
    build_space,
    build_tasks,
)
from pyro_base.inference.run.runlog import CHECKPOINT, CONFIG
from pyro_base.inference.vi.delta_levels import KINDS, delta_levels, task_deltas
from pyro_base.inference.vi.diagnostics import step_agreement

ROOT = Path(__file__).resolve().parents[1]
CFG = MetaConfig(preset="tiny", families=["motif", "colour"], n_support=16, n_query=16,
                 steps=2, tasks_per_step=2, inner_steps=2, inner_batch=8, num_samples=2,
                 n_heldout=1, adapt_steps=1, seed=3, meta_workers=1)


def additive(n_fam: int, n_task: int, n_seed: int, m: int, var: dict[str, float], seed: int = 0,
             ) -> list[list[torch.Tensor]]:
    """``d = g + f_family + t_task + e_seed``, independent N(0, var / m) coordinates."""
    gen = torch.Generator().manual_seed(seed)

    def draw(v: float) -> torch.Tensor:
        return torch.randn(m, generator=gen, dtype=torch.float64) * math.sqrt(v / m)

    g = draw(var["G"])
    out = []
    for _ in range(n_fam):
        f = draw(var["F"])
        for _ in range(n_task):
            t = draw(var["T"])
            out.append([g + f + t + draw(var["E"]) for _ in range(n_seed)])
    return out


def test_levels_recover_the_additive_models_variance_shares():
    var = {"G": 0.1, "F": 0.2, "T": 0.3, "E": 0.4}
    m = 20000
    rows = additive(3, 6, 4, m, var)
    noise = additive(3, 6, 4, m, {"G": 0.0, "F": 0.0, "T": 0.0, "E": 1.0}, seed=1)
    deltas = [[{"x": d, "y": torch.cat([d, e])} for d, e in zip(r, q, strict=True)]
              for r, q in zip(rows, noise, strict=True)]
    families = [f for f in "abc" for _ in range(6)]
    groups = {"x": ("x", None), "structured": ("y", [slice(0, m)]),
              "noise": ("y", [slice(m, 2 * m)])}
    out = delta_levels(deltas, families, groups, n_boot=300)
    expected = {"seed": 0.6, "task": 0.3, "family": 0.1}  # (G+F+T), (G+F), G over V = 1
    for group in ("x", "structured"):
        for k in KINDS:
            v = out[group][k]
            assert v["cos"] == pytest.approx(expected[k], abs=0.03)
            assert v["lo"] <= v["cos"] <= v["hi"]
        assert out[group]["rho"] == pytest.approx(0.3 / 3 + 0.1 * 2 / 3, abs=0.03)
        assert out[group]["tasks_for_2x_noise"] == pytest.approx(
            1 + 3 / out[group]["rho"])
    assert out["x"] == out["structured"]  # the slice selects exactly the structured part
    for k in KINDS:
        assert abs(out["noise"][k]["cos"]) < 0.03
    # the family interval is wider than the seed one: 3 families, against 18 tasks
    widths = {k: out["x"][k]["hi"] - out["x"][k]["lo"] for k in KINDS}
    assert widths["family"] > widths["seed"] > 0


def test_one_family_has_no_family_pairs_and_bad_inputs_are_refused():
    rows = additive(1, 3, 2, 500, {"G": 0.5, "F": 0.0, "T": 0.0, "E": 0.5})
    deltas = [[{"x": d} for d in r] for r in rows]
    out = delta_levels(deltas, ["a"] * 3, {"x": ("x", None)}, n_boot=50)
    assert math.isnan(out["x"]["family"]["cos"])
    assert out["x"]["rho"] == out["x"]["task"]["cos"] > 0.3
    with pytest.raises(ValueError, match="2 tasks of one family"):
        delta_levels(deltas[:1], ["a"], {"x": ("x", None)})
    with pytest.raises(ValueError, match="3 tasks of deltas but 2 families"):
        delta_levels(deltas, ["a", "a"], {"x": ("x", None)})
    with pytest.raises(ValueError, match="seeds must be >= 2"):
        task_deltas(None, None, [], seeds=1, tau=1.0)


def test_task_deltas_are_what_a_meta_step_adds_and_leave_W_alone():
    space = build_space(CFG)
    model = build_model(CFG, space)
    guide = build_guide(CFG, model)
    svi = build_meta_svi(CFG, model, guide)
    tasks = [build_tasks(CFG, space).task(f, 0, "train") for f in ("motif", "colour")]
    before = {k: v.clone() for k, v in model.W.state_dict().items()}
    deltas = task_deltas(model, guide, tasks, seeds=2, tau=float(svi.temperature(1)),
                         seed=CFG.seed, arch_update=CFG.arch_update,
                         weight_update=CFG.weight_update)
    after = model.W.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    svi.step_count = 1  # meta-step 1 seeds task c by (seed, 1, c): deltas[c][1]
    logged = svi.step(tasks)["agreement"]
    mine = step_agreement([deltas[0][1], deltas[1][1]], svi._groups)
    assert logged.keys() == mine.keys() and "mu_features" in logged
    for g in logged:
        for k in ("cos", "ratio"):
            assert mine[g][k] == pytest.approx(logged[g][k], rel=1e-6, abs=1e-9)
    # another seed gives another contribution
    assert not torch.equal(deltas[0][0]["mu"], deltas[0][1]["mu"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("agreement") / "run"
    space = build_space(CFG)
    model = build_model(CFG, space)
    svi = build_meta_svi(CFG, model, build_guide(CFG, model))
    svi.run(build_tasks(CFG, space), CFG.steps, progress=False)
    path.mkdir(parents=True)
    CFG.to_yaml(path / CONFIG)
    save_checkpoint(path / CHECKPOINT, {"svi": svi.state_dict(), "config": CFG.to_dict()},
                    space=space)
    return path


def test_command_writes_both_starts_and_prints_the_table(run_dir, capsys):
    assert cli([str(run_dir), "--tasks-per-family", "2", "--seeds", "2", "--n-boot", "50",
                "--no-progress"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((run_dir / "agreement" / "agreement.json").read_text())
    assert data["settings"]["families"] == ["motif", "colour"]
    assert data["settings"]["tasks_per_family"] == 2 and data["seconds"] > 0
    assert "path" not in data  # where it was written is not part of the result
    for start in ("initial", "final"):
        groups = data[start]["groups"]
        assert {"mu_features", "mu_head", "log_sigma"} <= set(groups)
        for v in groups.values():
            for k in KINDS:
                assert -1 <= v[k]["cos"] <= 1
        assert f"| {start} | mu_features |" in printed
    assert data["initial"]["temperature"] == pytest.approx(CFG.tau_start)
    # the final W is meta-training's: its contributions differ from W_0's
    assert data["initial"]["groups"]["mu_features"] != data["final"]["groups"]["mu_features"]


def test_command_in_worker_processes_gives_the_same_result(run_dir, tmp_path, capsys):
    args = [str(run_dir), "--tasks-per-family", "2", "--seeds", "2", "--n-boot", "50",
            "--starts", "final", "--no-progress"]
    assert cli([*args, "--out", str(tmp_path / "one")]) == 0
    assert cli([*args, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = (json.loads((tmp_path / d / "agreement.json").read_text())
                for d in ("one", "two"))
    assert two["settings"]["workers"] == 2 and one["settings"]["workers"] == 1
    assert one["final"] == two["final"]  # float for float
    capsys.readouterr()
    assert cli([*args, "--workers", "0"]) == 2
    assert "workers must be >= 1" in capsys.readouterr().err


def test_command_refuses_bad_input_by_name(run_dir, tmp_path, capsys):
    assert cli([str(tmp_path / "none")]) == 2
    assert "lacks ['config.yaml', 'checkpoint.pt']" in capsys.readouterr().err
    assert cli([str(run_dir), "--tasks-per-family", "1"]) == 2
    assert "tasks_per_family must be >= 2" in capsys.readouterr().err
    assert cli([str(run_dir), "--seeds", "1", "--tasks-per-family", "2"]) == 2
    assert "seeds must be >= 2" in capsys.readouterr().err
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "agreement.py"), "--help"],
                       capture_output=True, text=True, check=True)
    assert "--tasks-per-family" in r.stdout and "--starts" in r.stdout


def test_command_reports_a_task_that_does_not_adapt_in_one_line(run_dir, monkeypatch, capsys):
    from pyro_base.inference.run import agreement as library

    def diverge(*args, **kwargs):  # what task_deltas raises for a non-finite inner loop
        raise FloatingPointError("task procedural/motif/train/0 (seed 0) did not adapt to "
                                 "finite values: inner losses [nan]")

    monkeypatch.setattr(library, "task_deltas", diverge)
    assert cli([str(run_dir), "--tasks-per-family", "2", "--seeds", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: task procedural/motif/train/0") and "\n" not in err


def test_command_changes_the_inner_loop_and_writes_where_told(run_dir, tmp_path, capsys):
    out = tmp_path / "other"
    assert cli([str(run_dir), "--tasks-per-family", "2", "--seeds", "2", "--n-boot", "20",
                "--starts", "final", "--inner", "inner_steps=1", "inner_optimizer=sgd",
                "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "agreement.json").read_text())
    assert data["settings"]["inner"] == {"inner_steps": 1, "inner_optimizer": "sgd"}
    assert data["settings"]["inner_steps"] == 1 and data["settings"]["inner_batch"] == 8
    assert "initial" not in data and "final" in data
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli([str(run_dir), "--inner", "beta=1"])
    assert "KEY one of" in capsys.readouterr().err
    assert cli([str(run_dir), "--inner", "inner_optimizer=rmsprop"]) == 2
    assert "inner_optimizer" in capsys.readouterr().err
    assert cli([str(run_dir), "--inner", "inner_lr=-1e-2"]) == 2  # read as a float, refused
    err = capsys.readouterr().err
    assert "inner_lr must be" in err and "(str)" not in err


def test_train_tasks_of_a_source_without_families_are_drawn_per_family():
    from types import SimpleNamespace

    from pyro_base.inference.run.agreement import train_tasks

    class Drawn:
        """A source that only samples: family "a" three times as often as "b"."""

        def sample(self, split, rng):
            assert split == "train"
            family = "a" if rng.random() < 0.75 else "b"
            return SimpleNamespace(family=family, name=f"{family}/{rng.integers(10**9)}")

    tasks = train_tasks(Drawn(), 3, seed=5)
    assert sorted(t.family for t in tasks) == ["a"] * 3 + ["b"] * 3
    assert [t.name for t in tasks] == [t.name for t in train_tasks(Drawn(), 3, seed=5)]
    assert [t.name for t in tasks] != [t.name for t in train_tasks(Drawn(), 3, seed=6)]


def test_the_commands_lists_are_the_librarys():
    """The command keeps its own copies so that ``--help`` imports no torch."""
    from pyro_base.inference.commands import agreement as command
    from pyro_base.inference.run import agreement as library

    assert command.STARTS == library.STARTS and command.INNER_KEYS == library.INNER_KEYS
