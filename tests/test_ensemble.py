"""transfer "ensemble": every start adapted on the whole support set and their posteriors
averaged, in adapt, the few-shot protocol and the evaluation's ``ensemble`` arm."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_base.genotype import Genotype, decode
from pyro_base.inference.commands.adapt import cli
from pyro_base.inference.evaluate.paired import _arm_states, evaluate_run, pair_seed, top_ops
from pyro_base.inference.posterior.inference_data import load_posterior
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.ensemble import adapt_ensemble, ensemble_probs
from pyro_base.inference.run.factory import build_guide, build_space, build_tasks, load_trained
from pyro_base.inference.run.job import meta_train_run
from pyro_base.inference.vi.adapt import predictive_probs

TINY = dict(preset="cpu", channels=4, cells=2, nodes=2, tasks_per_step=2, inner_steps=1,
            n_support=16, n_query=16, inner_batch=8, threads=0, steps=2, posterior_draws=4,
            num_samples=2, arch_refit_tasks=2, arch_refit_steps=2, arch_refit_workers=1,
            meta_workers=1, families=["motif", "colour"], n_heldout=1, adapt_steps=2)
TASK = ["--task-source", "procedural", "--family", "motif", "--n-support", "24",
        "--n-query", "16", "--device", "cpu", "--no-progress", "--log-level", "WARNING"]


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "run"
    meta_train_run(MetaConfig(**TINY), run_dir=path, progress=False)
    return path


def test_ensemble_probs_average_the_members_own_predictives(prior):
    """Each member adapts from its start with the ensemble's seed (as a plain adaptation
    would), and the mixture's predictive and op probabilities are the members' means."""
    model, guide, cfg, _ = load_trained(prior)
    starts = _arm_states(cfg, {k: v.clone() for k, v in model.W.state_dict().items()}, "cpu")
    starts = {k: starts[k] for k in ("meta", "untrained")}
    task = build_tasks(cfg, build_space(cfg)).task("motif", 0, "test")
    (xs, ys), (xq, _) = task.support, task.query
    ens = adapt_ensemble(model, guide, starts, xs, ys, n_classes=task.n_classes,
                         temperature=0.5, steps=[0, 2], seed=7)
    assert ens.members == ("meta", "untrained") and set(ens.losses) == set(starts)
    own = {}
    for name, state in starts.items():
        model.W.load_state_dict(state)
        torch.manual_seed(7)
        post, _ = guide.adapt(xs, ys, n_classes=task.n_classes, temperature=0.5, steps=2)
        for k, v in post.params.items():
            assert torch.equal(v, ens.paths[name][2].params[k]), (name, k)
        torch.manual_seed(11)
        own[name] = predictive_probs(model, post, xq, n_classes=task.n_classes,
                                     temperature=0.5, num_samples=3)
    mixed = ensemble_probs(model, ens, 2, xq, n_classes=task.n_classes, temperature=0.5,
                           num_samples=3, seed=11)
    torch.testing.assert_close(mixed, (own["meta"] + own["untrained"]) / 2)
    torch.testing.assert_close(mixed.sum(-1), torch.ones(len(xq)))
    assert not torch.allclose(own["meta"], own["untrained"])  # the average is not trivial
    for cell, p in ens.op_probs(2).items():
        torch.testing.assert_close(p, (ens.paths["meta"][2].op_probs()[cell]
                                       + ens.paths["untrained"][2].op_probs()[cell]) / 2)
    assert ens.genotype(2, model.space) == decode(ens.op_probs(2), space=model.space)
    with pytest.raises(ValueError, match="at least two starts"):
        adapt_ensemble(model, guide, {"meta": starts["meta"]}, xs, ys, n_classes=10,
                       temperature=0.5, steps=[1], seed=0)


def _ensemble_accuracy(model, guide, states, task, fi, ti, steps, cfg):
    (xs, ys), (xq, yq) = task.support, task.query
    ens = adapt_ensemble(model, guide, states, xs, ys, n_classes=task.n_classes,
                         temperature=cfg.adapt_temperature, steps=steps,
                         seed=pair_seed(0, fi, ti, 0))
    acc = [float((ensemble_probs(model, ens, k, xq, n_classes=task.n_classes,
                                 temperature=cfg.adapt_temperature,
                                 num_samples=cfg.num_samples,
                                 seed=pair_seed(0, fi, ti, 1 + k)).argmax(-1) == yq)
                 .float().mean()) for k in steps]
    return acc, top_ops(ens.op_probs(max(steps)), model.space.ops)


def test_ensemble_arm_is_the_members_averaged_predictive_with_their_arms_seeds(prior, tmp_path):
    """The arm's accuracy after each step count is the argmax of the averaged predictive of its
    members, adapted with the seeds their arms use; a member that is also an evaluated arm
    serves both (the same numbers either way); a reuse with other members computes again."""
    steps = (0, 2)
    both = evaluate_run(prior, tasks_per_family=1, steps=steps, n_boot=50,
                        arms=("meta", "untrained", "ensemble"), ensemble_from=("all", "none"))
    assert both.settings["ensemble_from"] == ["all", "none"]
    alone = evaluate_run(prior, tasks_per_family=1, steps=steps, n_boot=50,
                         arms=("ensemble",), ensemble_from=("all", "none"))
    model, _, cfg, _ = load_trained(prior)
    guide = build_guide(cfg.replace(elbo_impl=both.settings["elbo_impl"]), model)
    states = _arm_states(cfg, {k: v.clone() for k, v in model.W.state_dict().items()}, "cpu")
    for fi, (r, a) in enumerate(zip(both.tasks, alone.tasks, strict=True)):
        assert r["ensemble"] == a["ensemble"] == ["meta", "untrained"]
        assert r["accuracy"]["ensemble"] == a["accuracy"]["ensemble"]
        assert r["top_op"]["ensemble"] == a["top_op"]["ensemble"]
        task = build_tasks(cfg, build_space(cfg)).task(r["family"], 0, "test")
        acc, top = _ensemble_accuracy(model, guide, {k: states[k] for k in ("meta", "untrained")},
                                      task, fi, 0, steps, cfg)
        assert r["accuracy"]["ensemble"] == acc and r["top_op"]["ensemble"] == top
    gains = both.families["motif"]["gains"]
    assert {"ensemble-untrained", "ensemble-meta"} <= set(gains)
    again = evaluate_run(prior, tasks_per_family=1, steps=steps, n_boot=50,
                         arms=("meta", "untrained", "ensemble"),
                         ensemble_from=("all", "architecture"),
                         reuse=json.loads((prior / "evaluation" / "evaluation.json")
                                          .read_text()))
    assert [r["ensemble"] for r in again.tasks] == [["meta", "meta_arch_untrained_weights"]] * 2
    assert [r["accuracy"]["meta"] for r in again.tasks] == \
        [r["accuracy"]["meta"] for r in both.tasks]
    with pytest.raises(ValueError, match="ensemble_from"):
        evaluate_run(prior, arms=("ensemble",), ensemble_from=("all",))


def test_adapt_ensemble_writes_the_mixture(prior, tmp_path):
    """--transfer ensemble: the genotype decodes the members' averaged op probabilities (each
    member's are those of a plain --transfer <start> with the same seed), posterior.nc holds
    one task per member, the cost counts every member's steps."""
    args = ["--prior", str(prior), "--steps", "2", "--curve-steps", "0", "1", "--seed", "3",
            *TASK]
    out = tmp_path / "ens"
    assert cli([*args, "--out", str(out), "--transfer", "ensemble", "--ensemble-from", "all",
                "none"]) == 0
    record = json.loads((out / "adapt.json").read_text())
    assert record["transfer"] == record["start"] == "ensemble"
    assert record["ensemble"] == ["all", "none"]
    assert record["cost"]["forward_backward"] == 2 * 2 and record["cost"]["images"] == 2 * 2 * 8
    plain = {}
    for start in ("all", "none"):
        assert cli([*args, "--out", str(tmp_path / start), "--transfer", start]) == 0
        plain[start] = json.loads((tmp_path / start / "adapt.json").read_text())
    for cell, probs in record["op_probs"].items():
        np.testing.assert_allclose(probs, (np.array(plain["all"]["op_probs"][cell])
                                           + np.array(plain["none"]["op_probs"][cell])) / 2,
                                   rtol=1e-6)
    assert Genotype.load(out / "genotype.json") == Genotype.from_dict(record["genotype"])
    curve = json.loads((out / "curve.json").read_text())
    assert curve["steps"] == [0, 1, 2] and curve["query_accuracy"][-1] == record["query_accuracy"]
    assert set(curve["inner_losses"]) == {"all", "none"}
    idata = load_posterior(out / "posterior.nc")
    tasks = [str(t) for t in idata.posterior["task"].values]
    assert sorted(tasks) == sorted(f"{record['task']}@{m}" for m in ("all", "none"))


def test_ensemble_errors_and_fewshot(prior, tmp_path, capsys):
    assert cli(["--prior", str(prior), "--out", str(tmp_path / "bad"), "--transfer", "ensemble",
                "--ensemble-from", "all", *TASK]) == 2
    err = capsys.readouterr().err
    assert "--ensemble-from" in err and "at least two" in err
    out = tmp_path / "fs"
    assert cli(["--prior", str(prior), "--out", str(out), "--episodes", "3", "--n-way", "3",
                "--query-per-class", "2", "--steps", "1", "--k-shot", "1",
                "--transfer", "ensemble", *TASK]) == 0
    report = json.loads((out / "fewshot.json").read_text())
    assert report["ensemble"] == ["all", "architecture", "none"]
    assert report["ensemble_from"] == ["all", "architecture", "none"]
    assert len(report["accuracies"]) == 3 and "chosen" not in report
    assert all(0.0 <= a <= 1.0 for a in report["accuracies"])
    assert Path(out / "fewshot.json").is_file()


def test_the_quick_look_of_an_ensemble_default_averages_its_members(prior, tmp_path):
    """With ``transfer="ensemble"`` each held-out row's ``query_accuracy`` is the averaged
    predictive of the three default starts, adapted from the task's seed, and its genotype the
    decoded average of their op probabilities; the other columns do not change."""
    from pyro_base import defaults
    from pyro_base.inference.run.heldout import format_table, heldout_report
    from pyro_base.inference.run.runlog import RunDir, safe_name
    from pyro_base.inference.run.selection import selection_starts
    from pyro_base.inference.vi.meta_svi import task_seed

    model, guide, cfg, _ = load_trained(prior)
    cfg = cfg.replace(n_heldout=2, adapt_steps=2)
    raw, _, _, _ = load_trained(prior, sharpness=1.0)
    rows = heldout_report(cfg, raw, RunDir(tmp_path / "ens"), device="cpu",
                          transfer="ensemble")
    chosen = heldout_report(cfg, raw, RunDir(tmp_path / "sel"), device="cpu", transfer="select")
    starts = selection_starts(model, cfg, defaults.ENSEMBLE_FROM)
    tasks = build_tasks(cfg, build_space(cfg)).tasks("test", cfg.n_heldout)
    for i, (row, other, task) in enumerate(zip(rows, chosen, tasks, strict=True)):
        seed = task_seed(cfg.seed, cfg.steps, i)
        (xs, ys), (xq, yq) = task.support, task.query
        ens = adapt_ensemble(model, guide, starts, xs, ys, n_classes=task.n_classes,
                             temperature=cfg.adapt_temperature, steps=[2], seed=seed)
        probs = ensemble_probs(model, ens, 2, xq, n_classes=task.n_classes,
                               temperature=cfg.adapt_temperature, num_samples=cfg.num_samples,
                               seed=seed + 1)
        assert row["query_accuracy"] == float((probs.argmax(-1) == yq).float().mean())
        assert row["start"] == "ensemble" and row["ensemble"] == list(defaults.ENSEMBLE_FROM)
        for key in ("meta_accuracy", "prior_only_accuracy", "untrained_accuracy"):
            assert row[key] == other[key], key
        saved = Genotype.load(tmp_path / "ens" / "genotypes" / f"{safe_name(task.name)}.json")
        assert saved == ens.genotype(2, model.space)
    assert "ensemble" in format_table(rows)
    idata = load_posterior(tmp_path / "ens" / "posterior.nc")
    assert sorted(str(t) for t in idata.posterior["task"].values) == sorted(t.name for t in tasks)
    with pytest.raises(ValueError, match="transfer must be"):
        heldout_report(cfg, raw, RunDir(tmp_path / "bad"), device="cpu", transfer="all")


def test_the_ensemble_quick_look_in_two_processes_gives_one_processs_rows(prior, tmp_path):
    """The main job's default look (the ensemble) spread over two worker processes gives the
    rows, genotypes and posteriors of one process with one torch thread."""
    from pyro_base.inference.run.heldout import heldout_report
    from pyro_base.inference.run.runlog import RunDir

    raw, _, cfg, _ = load_trained(prior, sharpness=1.0)
    cfg = cfg.replace(n_heldout=2, adapt_steps=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {w: tmp_path / f"workers{w}" for w in (1, 2)}
        rows = {w: heldout_report(cfg.replace(meta_workers=w), raw, RunDir(out[w]),
                                  device="cpu") for w in out}
    finally:
        torch.set_num_threads(threads)
    timeless = {w: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rs]
                for w, rs in rows.items()}
    assert timeless[1] == timeless[2] and all(r["start"] == "ensemble" for r in rows[1])
    for path in (out[1] / "genotypes").glob("*.json"):
        assert path.read_text() == (out[2] / "genotypes" / path.name).read_text()
    ops = {w: load_posterior(out[w] / "posterior.nc").constant_data["op_probs"].values
           for w in out}
    np.testing.assert_array_equal(ops[1], ops[2])


def test_the_select_arms_chosen_start_serves_the_ensemble_member_of_that_start(prior,
                                                                               monkeypatch):
    """With ``untrained select ensemble`` the start the select arm chooses is also an ensemble
    member: it is adapted once (the same seeds either way), and both arms read as when each is
    evaluated alone."""
    from pyro_base.inference.evaluate import paired

    steps = (0, 2)
    kw = dict(tasks_per_family=1, steps=steps, n_boot=50, ensemble_from=("all", "architecture"),
              select_from=("all", "architecture"))
    alone = {arm: evaluate_run(prior, arms=("untrained", arm), **kw)
             for arm in ("select", "ensemble")}
    calls = []
    adapt_arm = paired._adapt_arm
    monkeypatch.setattr(paired, "_adapt_arm",
                        lambda *a, **k: calls.append(k.get("keep_probs")) or adapt_arm(*a, **k))
    both = evaluate_run(prior, arms=("untrained", "select", "ensemble"), **kw)
    # per task: the untrained arm, the chosen start (kept for the ensemble), the other member
    assert len(calls) == 3 * len(both.tasks) and calls.count(True) == 2 * len(both.tasks)
    for r, s, e in zip(both.tasks, alone["select"].tasks, alone["ensemble"].tasks, strict=True):
        chosen = paired.chosen_arms(r["selection"], steps)[steps[0]]
        assert chosen in r["ensemble"] == e["ensemble"]
        for key in ("accuracy", "top_op"):
            assert r[key]["select"] == s[key]["select"]
            assert r[key]["ensemble"] == e[key]["ensemble"]
            assert r[key]["untrained"] == s[key]["untrained"]
