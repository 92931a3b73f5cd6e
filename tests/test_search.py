"""pyro_base.inference.search.methods / pyro_base.inference.search.baselines and scripts/search.py:
one short search each."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_base.genotype import Genotype
from pyro_base.inference.search.baselines import genotype_to_z, sample_genotype
from pyro_base.inference.search.methods import METHODS, SearchConfig, run_search, space_for_task
from pyro_base.ops import check_op
from pyro_base.search_space import SearchSpace
from pyro_base.tasks.procedural import ProceduralTasks

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "scripts" / "search.py"
TRAIN = ROOT / "scripts" / "train_genotype.py"


@pytest.fixture(scope="module")
def task():
    return ProceduralTasks(image_size=16, n_support=64, n_query=32).task("motif", 0, "test")


def _valid(genotype, space):
    for cell in ("normal", "reduce"):
        pairs = genotype.cell(cell)
        assert len(pairs) == 2 * space.nodes
        for p, (op, j) in enumerate(pairs):
            assert op != "none" and op in space.ops and 0 <= j < p // 2 + 2
            check_op(op)


@pytest.mark.parametrize("method", METHODS)
def test_short_search(method, task):
    cfg = SearchConfig.preset("tiny", steps=4, device="cpu", n_candidates=2)
    r = run_search(method, task, cfg, progress=False)
    space = space_for_task(cfg, task)
    _valid(r.genotype, space)
    assert r.cost.seconds > 0 and r.cost.forward_backward > 0 and r.cost.images > 0
    expected_fb = {"darts": 8, "snas": 4, "base": 4, "random": 4}[method]
    assert r.cost.forward_backward == expected_fb
    assert set(r.op_probs) == set(space.cell_types)
    assert np.asarray(r.op_probs["normal"]).shape == space.z_shape
    d = r.to_dict()
    assert Genotype.from_dict(d["genotype"]) == r.genotype
    json.dumps(d)


def test_darts_probabilities_move_and_rule(task):
    cfg = SearchConfig.preset("tiny", steps=3, device="cpu", arch_lr=0.05)
    r = run_search("darts", task, cfg, progress=False)
    p = np.asarray(r.op_probs["normal"])
    assert np.allclose(p.sum(-1), 1) and p.std() > 1e-4 and r.rule == "darts"
    for cell in ("normal", "reduce"):   # DARTS rule: two distinct inputs per node
        pairs = r.genotype.cell(cell)
        assert all(pairs[2 * i][1] != pairs[2 * i + 1][1] for i in range(len(pairs) // 2))


def test_sampling_and_one_hot_z():
    space = SearchSpace.preset("tiny")
    rng = np.random.default_rng(0)
    g = sample_genotype(space, rng)
    _valid(g, space)
    z = genotype_to_z(g, space)
    assert all(float(z[c].sum()) == 2 * space.nodes for c in space.cell_types)
    assert torch.all(z["normal"][:, space.ops.index("none")] == 0)


def test_search_config_validation():
    with pytest.raises(ValueError, match="arch_lr"):
        SearchConfig(arch_lr=-1.0)
    with pytest.raises(ValueError, match="rule"):
        SearchConfig(rule="top2")
    with pytest.raises(ValueError, match="unknown search method"):
        run_search("enas", None, SearchConfig())


def _run(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def _load(script):
    name = {"search": "search", "train_genotype": "train"}[script.stem]
    return importlib.import_module(f"pyro_base.inference.commands.{name}")


def _main(script, *args):
    module = _load(script)
    return module.main(module.build_parser().parse_args([str(a) for a in args]))


def test_search_script_help_and_smoke(tmp_path):
    r = _run(SEARCH, "--help")
    assert r.returncode == 0 and "--method" in r.stdout and "--arch-lr" in r.stdout
    out = tmp_path / "g.json"
    r = _run(SEARCH, "--method", "darts", "--task-source", "procedural", "--family", "relation",
             "--task-seed", "1", "--steps", "1", "--preset", "tiny", "--n-support", "32",
             "--n-query", "16", "--device", "cpu", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    Genotype.load(out)
    cost = json.loads(out.with_suffix(".cost.json").read_text())
    assert cost["method"] == "darts" and cost["cost"]["forward_backward"] == 2
    # the searched genotype trains for one step through the other script
    r = _run(TRAIN, "--genotype", str(out), "--preset", "cpu", "--steps", "1", "--n-support",
             "32", "--n-query", "16", "--init-channels", "4", "--layers", "2", "--no-progress",
             "--device", "cpu", "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "top1: " in r.stdout and (tmp_path / "run" / "eval.json").exists()


def test_search_script_errors(tmp_path, capsys):
    assert _main(SEARCH, "--method", "snas", "--batch-size", "0", "--out", tmp_path / "g.json") == 2
    assert "batch_size must be an int >= 1" in capsys.readouterr().err
    assert _main(SEARCH, "--method", "base", "--task-source", "npz", "--out", "g.json") == 2
    assert "needs --data-dir" in capsys.readouterr().err


def test_train_script_run_dir_genotypes_and_bad_json(tmp_path, capsys):
    module = _load(TRAIN)
    run = tmp_path / "meta"
    (run / "genotypes").mkdir(parents=True)
    g = sample_genotype(SearchSpace.preset("tiny"), np.random.default_rng(1))
    g.save(run / "prior_genotype.json")
    g.save(run / "genotypes" / "motif_0.json")
    for extra in ([], ["--task-genotype", "motif_0"]):
        args = module.build_parser().parse_args(
            ["--genotype", str(run), *extra, "--params-only", "--init-channels", "4",
             "--layers", "2", "--input-size", "16"])
        assert module.main(args) == 0
    args = module.build_parser().parse_args(
        ["--genotype", str(run), "--task-genotype", "nope", "--params-only"])
    assert module.main(args) == 2
    bad_op = tmp_path / "bad_op.json"
    bad_op.write_text(json.dumps({"normal": [["conv_9x9", 0], ["skip_connect", 1]],
                                  "reduce": [["skip_connect", 0], ["skip_connect", 1]]}))
    assert _main(TRAIN, "--genotype", bad_op, "--params-only") == 2
    assert "conv_9x9" in capsys.readouterr().err
    bad_input = tmp_path / "bad_input.json"
    bad_input.write_text(json.dumps({"normal": [["skip_connect", 0], ["skip_connect", 5]],
                                     "reduce": [["skip_connect", 0], ["skip_connect", 1]]}))
    assert _main(TRAIN, "--genotype", bad_input, "--params-only") == 2
    assert "input 5 is beyond node 2" in capsys.readouterr().err
