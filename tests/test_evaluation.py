"""pyro_base.inference.evaluate.paired and scripts/evaluate.py: paired arms, step-count snapshots,
bootstrap,
the files written, and the command's help and errors (tiny preset, runs made here)."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_base.checkpoint import save_checkpoint
from pyro_base.inference.evaluate.paired import (
    ARMS,
    DEFAULT_ARMS,
    PREFERRED,
    bootstrap_interval,
    evaluate_run,
    format_summary,
    pair_seed,
    top_ops,
)
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_meta_svi,
    build_model,
    build_space,
    build_tasks,
    load_trained,
)
from pyro_base.inference.run.runlog import CHECKPOINT, CONFIG
from pyro_base.inference.vi.adapt import adapt, predictive_probs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "evaluate.py"
CFG = MetaConfig(preset="tiny", families=["motif", "colour"], n_support=16, n_query=16,
                 steps=2, tasks_per_step=2, inner_steps=1, inner_batch=8, num_samples=2,
                 n_heldout=1, adapt_steps=1, seed=3, meta_workers=1)
STEPS = (0, 1, 3)


def make_run(path: Path, cfg: MetaConfig, *, train: bool) -> tuple[Path, dict]:
    """A run directory (config.yaml, checkpoint.pt) as scripts/meta_svi.py writes it; with
    ``train=False`` the checkpoint's W is W_0. Returns the path and W_0."""
    space = build_space(cfg)
    model = build_model(cfg, space)
    w0 = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    svi = build_meta_svi(cfg, model, build_guide(cfg, model))
    if train:
        svi.run(build_tasks(cfg, space), cfg.steps, progress=False)
    path.mkdir(parents=True)
    cfg.to_yaml(path / CONFIG)
    save_checkpoint(path / CHECKPOINT, {"svi": svi.state_dict(), "config": cfg.to_dict()},
                    space=space)
    return path, w0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path, w0 = make_run(tmp_path_factory.mktemp("eval") / "run", CFG, train=True)
    result = evaluate_run(path, tasks_per_family=2, steps=STEPS, n_boot=500)
    return path, w0, result


def script():
    return importlib.import_module("pyro_base.inference.commands.evaluate")


def test_files_are_written_and_intervals_contain_the_means(trained):
    path, _, result = trained
    data = json.loads((path / "evaluation" / "evaluation.json").read_text())
    assert data["settings"]["steps"] == list(STEPS)
    assert data["settings"]["arms"] == list(DEFAULT_ARMS)
    assert data["settings"]["families"] == ["motif", "colour"] and data["seconds"] > 0
    assert len(data["tasks"]) == 4 and data["families"] == json.loads(
        json.dumps(result.families))
    assert (path / "evaluation" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((path / "evaluation").glob("*.tmp*"))
    for family in data["families"].values():
        stats = [*family["accuracy"].values(), *family["gains"].values()]
        assert len(stats) == 6 and family["n_tasks"] == 2
        for s in stats:
            for mean, lo, hi in zip(s["mean"], s["lo"], s["hi"], strict=True):
                assert lo - 1e-12 <= mean <= hi + 1e-12
    for r in data["tasks"]:  # per task: the paired gain is the difference of the arms
        assert set(r["accuracy"]) == set(DEFAULT_ARMS)
        assert len(r["accuracy"]["meta"]) == len(STEPS)
    motif = data["families"]["motif"]
    matches = [r["top_op"]["meta"]["normal"] in PREFERRED["motif"] for r in data["tasks"]
               if r["family"] == "motif"]
    assert motif["match_fraction"] == pytest.approx(np.mean(matches))
    assert motif["match_fraction_by_arm"] == {"meta": motif["match_fraction"]}
    assert data["families"]["colour"]["match_fraction"] is None
    assert data["families"]["colour"]["match_fraction_by_arm"] == {}
    table = format_summary(result)
    assert table.count("| motif |") == len(STEPS) + 1 and "gain weights-only" in table


def test_step_counts_equal_separate_adapt_calls(trained):
    """Accuracy after k steps = adapt(steps=k) from the pair seed, then the predictive, from
    the start load_trained gives (the run's prior sharpened)."""
    path, _, result = trained
    model, _, cfg, _ = load_trained(path)
    assert result.settings["adapt_sharpness"] == cfg.adapt_sharpness == 4.0
    guide = build_guide(cfg.replace(elbo_impl=result.settings["elbo_impl"]), model)
    task = build_tasks(cfg, build_space(cfg)).task("colour", 1, "test")
    record = next(r for r in result.tasks if r["task"] == task.name)
    (xs, ys), (xq, yq) = task.support, task.query
    torch.manual_seed(pair_seed(0, 1, 1, 0))
    path_posts, _ = guide.adapt_path(xs, ys, n_classes=task.n_classes,
                                     temperature=cfg.adapt_temperature, steps=STEPS)
    for j, k in enumerate(STEPS):
        torch.manual_seed(pair_seed(0, 1, 1, 0))
        post, _ = guide.adapt(xs, ys, n_classes=task.n_classes,
                              temperature=cfg.adapt_temperature, steps=k)
        for name, p in post.params.items():
            assert torch.equal(p, path_posts[k].params[name]), (k, name)
        torch.manual_seed(pair_seed(0, 1, 1, 1 + k))
        probs = predictive_probs(model, post, xq, n_classes=task.n_classes,
                                 temperature=cfg.adapt_temperature, num_samples=cfg.num_samples)
        assert float((probs.argmax(-1) == yq).float().mean()) == record["accuracy"]["meta"][j]
    torch.manual_seed(pair_seed(0, 1, 1, 1))  # step 0: adapt()'s no-adaptation result
    assert adapt(model, guide, task, steps=0, temperature=cfg.adapt_temperature,
                 num_samples=cfg.num_samples).query_accuracy == record["accuracy"]["meta"][0]


def test_untrained_arm_is_the_runs_start(trained, tmp_path):
    """W_0 is rebuilt exactly; with a checkpoint holding W_0 every arm gives the same numbers."""
    from pyro_base.inference.evaluate.paired import _arm_states

    path, w0, _ = trained
    _, _, cfg, state = load_trained(path)
    states = _arm_states(cfg, {k: v.clone() for k, v in state["svi"]["W"].items()}, "cpu")
    for k, v in w0.items():
        assert torch.equal(states["untrained"][k], v)
        expected = v if k.startswith("alpha_") else state["svi"]["W"][k]
        assert torch.equal(states["meta_weights_uniform_arch"][k], expected)
        expected = state["svi"]["W"][k] if k.startswith("alpha_") else v
        assert torch.equal(states["meta_arch_untrained_weights"][k], expected)
    assert not torch.equal(state["svi"]["W"]["mu"], w0["mu"])  # training moved W
    run, _ = make_run(tmp_path / "untrained", CFG.replace(families=["relation"]), train=False)
    result = evaluate_run(run, tasks_per_family=2, steps=(0, 2), n_boot=100, arms=ARMS)
    for r in result.tasks:
        assert r["accuracy"]["meta"] == r["accuracy"]["untrained"]
        assert r["accuracy"]["meta"] == r["accuracy"]["meta_weights_uniform_arch"]
        assert r["accuracy"]["meta"] == r["accuracy"]["meta_arch_untrained_weights"]
        assert r["top_op"]["meta"] == r["top_op"]["untrained"]
        assert r["accuracy"]["select"] == r["accuracy"]["meta"]  # ARMS has select: a tie
        assert r["accuracy"]["ensemble"] == r["accuracy"]["meta"]  # three equal members
        assert r["top_op"]["ensemble"] == r["top_op"]["meta"]
        assert set(r["selection"]["chosen"].values()) == {"meta"}
    for name in ("meta-untrained", "meta_arch_untrained_weights-untrained",
                 "select-untrained", "ensemble-untrained"):
        gain = result.families["relation"]["gains"][name]
        assert gain == {"mean": [0.0, 0.0], "lo": [0.0, 0.0], "hi": [0.0, 0.0]}
    assert "gain arch-only" in format_summary(result)


def test_workers_give_the_same_records_as_one_process(trained, tmp_path):
    """Two spawned workers (one thread each, two units each, W_0 rebuilt in each) = one
    process with one thread, float for float, records in the same order; only the timings
    differ."""
    path = Path(shutil.copytree(trained[0], tmp_path / "run"))
    # select (its default starts): the choice is made in the workers too
    arms = ("meta", "untrained", "meta_arch_untrained_weights", "select")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = evaluate_run(path, tasks_per_family=2, steps=(1,), arms=arms, n_boot=50)
    finally:
        torch.set_num_threads(threads)
    two = evaluate_run(path, tasks_per_family=2, steps=(1,), arms=arms, n_boot=50,
                       workers=2)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "adapt_seconds"} for r in records]

    assert len(one.tasks) == 4 and strip(two.tasks) == strip(one.tasks)
    assert all("selection" in r for r in two.tasks)
    assert two.families == one.families
    assert (one.settings["workers"], two.settings["workers"]) == (1, 2)
    saved = json.loads((path / "evaluation" / "evaluation.json").read_text())
    assert strip(saved["tasks"]) == strip(json.loads(json.dumps(one.tasks)))


def test_support_accuracy_is_read_apart_and_leaves_the_query_numbers(trained, tmp_path):
    """``support_accuracy=True`` adds the predictive's support-set accuracy (seeded by its own
    slot) per arm and step; the query accuracies are those of an evaluation without it."""
    from pyro_base.inference.evaluate.paired import SUPPORT_SLOT
    from pyro_base.inference.evaluate.pooled import restrict

    path = Path(shutil.copytree(trained[0], tmp_path / "run"))
    arms, steps = ("meta", "untrained"), (0, 2)
    plain = evaluate_run(path, tasks_per_family=1, steps=steps, arms=arms, n_boot=50)
    fit = evaluate_run(path, tasks_per_family=1, steps=steps, arms=arms, n_boot=50,
                       support_accuracy=True)
    assert [r["accuracy"] for r in fit.tasks] == [r["accuracy"] for r in plain.tasks]
    assert "support_accuracy" not in plain.tasks[0] and not plain.settings["support_accuracy"]
    model, _, cfg, _ = load_trained(path)
    guide = build_guide(cfg.replace(elbo_impl=fit.settings["elbo_impl"]), model)
    task = build_tasks(cfg, build_space(cfg)).task("motif", 0, "test")
    (xs, ys) = task.support
    torch.manual_seed(pair_seed(0, 0, 0, 0))
    posts, _ = guide.adapt_path(xs, ys, n_classes=task.n_classes,
                                temperature=cfg.adapt_temperature, steps=steps)
    record = next(r for r in fit.tasks if r["task"] == task.name)
    for j, k in enumerate(steps):
        torch.manual_seed(pair_seed(0, 0, 0, SUPPORT_SLOT + k))
        probs = predictive_probs(model, posts[k], xs, n_classes=task.n_classes,
                                 temperature=cfg.adapt_temperature, num_samples=cfg.num_samples)
        assert float((probs.argmax(-1) == ys).float().mean()) == \
            record["support_accuracy"]["meta"][j]
    for name, family in fit.families.items():
        assert set(family["support_accuracy"]) == set(arms)
        rows = [r["support_accuracy"]["untrained"] for r in fit.tasks if r["family"] == name]
        assert family["support_accuracy"]["untrained"]["mean"] == pytest.approx(
            np.mean(rows, axis=0).tolist())
    assert "support accuracy meta" in format_summary(fit)
    data = json.loads((path / "evaluation" / "evaluation.json").read_text())
    late = restrict(data, steps=[2])
    assert [t["support_accuracy"]["meta"] for t in late["tasks"]] == [
        [r["support_accuracy"]["meta"][1]] for r in fit.tasks]


def test_bootstrap_interval_on_hand_made_examples():
    mean, lo, hi = bootstrap_interval([0.0, 1.0], n_boot=4000, seed=0)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)  # resampled means: 0, 1/2, 1 w.p. 1/4, 1/2, 1/4
    mean, lo, hi = bootstrap_interval([[0.3, 1.0]] * 5, n_boot=50)
    assert mean.tolist() == lo.tolist() == hi.tolist() == [0.3, 1.0]
    values = np.random.default_rng(1).normal(2.0, 1.0, 400)
    mean, lo, hi = bootstrap_interval(values, n_boot=4000, seed=2)
    half = 1.96 * values.std() / np.sqrt(len(values))  # the normal approximation
    assert lo == pytest.approx(mean - half, abs=0.02) and hi == pytest.approx(mean + half,
                                                                               abs=0.02)
    with pytest.raises(ValueError, match="at least one row"):
        bootstrap_interval([])


def test_top_op_excludes_none(tiny_model):
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide

    post = OptimizationEmbeddingGuide(tiny_model).prior_posterior()
    ops = tiny_model.space.ops
    for cell in post.cells:
        alpha = torch.zeros_like(post.params[f"alpha_{cell}"])
        alpha[:, ops.index("none")] = 9.0
        alpha[:, ops.index("dil_conv_5x5")] = 5.0
        post.params[f"alpha_{cell}"] = alpha
    assert top_ops(post, ops) == {c: "dil_conv_5x5" for c in post.cells}


@pytest.mark.parametrize("kwargs, name", [
    ({"tasks_per_family": 0}, "tasks_per_family"), ({"steps": ()}, "steps"),
    ({"steps": (1, 1)}, "steps"), ({"steps": (0, -2)}, "steps"), ({"arms": ("meta", "x")}, "arms"),
    ({"device": "tpu"}, "device"), ({"seed": -1}, "seed"), ({"n_boot": 0}, "n_boot"),
    ({"elbo_impl": "fast"}, "elbo_impl"), ({"workers": 0}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"arms": ("meta", "select"), "select_at": "each"}, "'select' arm chooses at each"),
    ({"arms": ("untrained", "select"), "select_at": "each"}, "'select' arm chooses at each"),
    ({"arms": ("select",), "select_at": "each"}, "'select' arm chooses at each"),
    ({"arms": ("meta", "untrained", "select"), "select_from": ("all", "architecture"),
      "select_at": "each"}, "'select' arm chooses at each"),
    ({"select_from": ("all",)}, "select_from"), ({"select_from": ("all", "all")}, "select_from"),
    ({"select_from": ("all", "head")}, "select_from"), ({"select_from": "all"}, "select_from"),
    ({"select_criterion": "auc"}, "select_criterion"), ({"select_at": -1}, "select_at"),
    ({"select_at": "last"}, "select_at"), ({"select_at": 1.0}, "select_at"),
    ({"select_at": True}, "select_at")])
def test_bad_arguments_are_refused_before_reading_the_run(kwargs, name, tmp_path):
    with pytest.raises(ValueError, match=name):
        evaluate_run(tmp_path / "absent", **kwargs)


def test_cli_help_runs_without_data():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert script().ARMS == ARMS and script().DEFAULT_ARMS == DEFAULT_ARMS
    assert "select" in ARMS and "select" not in DEFAULT_ARMS
    from pyro_base.inference.evaluate.summary import SELECT_FROM, TRANSFER_ARMS
    from pyro_base.inference.run.adaptation import SELECT_FROM as ADAPT_SELECT_FROM
    from pyro_base.inference.run.factory import TRANSFERS
    assert script().TRANSFER_ARMS == TRANSFER_ARMS and set(TRANSFER_ARMS) == set(TRANSFERS)
    assert set(TRANSFER_ARMS.values()) == set(ARMS) - {"select", "ensemble"}
    assert SELECT_FROM == ADAPT_SELECT_FROM
    from pyro_base.inference.evaluate.summary import SELECT_CRITERION
    from pyro_base.inference.run.adaptation import SELECT_CRITERION as ADAPT_CRITERION
    from pyro_base.inference.run.selection import CRITERIA
    assert SELECT_CRITERION == ADAPT_CRITERION
    assert script().CRITERIA == CRITERIA
    from pyro_base.inference.evaluate.summary import EACH
    assert script().EACH == EACH
    for dest, default in (("select_from", list(SELECT_FROM)),
                          ("select_criterion", SELECT_CRITERION)):
        action = next(a for a in script().build_parser()._actions if a.dest == dest)
        assert action.default == default
    action = next(a for a in script().build_parser()._actions if a.dest == "arms")
    assert tuple(action.choices) == ARMS
    for flag in ("RUN_DIR", "--tasks-per-family", "--steps", "--arms", "--workers", "--device",
                 "--seed", "--progress"):
        assert flag in r.stdout


def test_cli_errors_name_the_path(tmp_path, capsys):
    cli = script().cli
    assert cli([str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "absent" in err and "\n" not in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CONFIG).write_text("preset: tiny\n")
    assert cli([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path / "run") in err and CHECKPOINT in err
    assert "\n" not in err
    assert cli([str(tmp_path / "run"), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "workers" in err and "\n" not in err


def test_cli_prints_the_summary(trained, tmp_path, capsys):
    path = Path(shutil.copytree(trained[0], tmp_path / "run"))
    assert script().cli([str(path), "--tasks-per-family", "1", "--steps", "0", "1",
                         "--arms", "meta", "untrained"]) == 0
    out = capsys.readouterr().out
    assert "| family | steps | meta | untrained | uniform-arch |" in out
    assert "| colour | 1 |" in out
    data = json.loads((path / "evaluation" / "evaluation.json").read_text())
    assert data["settings"]["arms"] == ["meta", "untrained"]
    assert set(data["tasks"][0]["accuracy"]) == {"meta", "untrained"}
    # --reuse does not take an evaluation without support accuracy for one that asks for it
    assert script().cli([str(path), "--tasks-per-family", "1", "--steps", "1", "--arms", "meta",
                         "untrained", "--reuse", "--support-accuracy"]) == 0
    out = capsys.readouterr().out
    assert "reusing" not in out and "| colour | 1 |" in out and "support accuracy meta" in out
    data = json.loads((path / "evaluation" / "evaluation.json").read_text())
    assert set(data["tasks"][0]["support_accuracy"]) == {"meta", "untrained"}


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """A trained run with 4 support images of each of 5 classes, evaluated with the select
    arm choosing at every step count (and the support accuracy, which the arm also reads
    from its choice)."""
    cfg = CFG.replace(n_support=20)
    path, _ = make_run(tmp_path_factory.mktemp("select") / "run", cfg, train=True)
    result = evaluate_run(path, tasks_per_family=2, steps=(0, 2), n_boot=200,
                          arms=("meta", "untrained", "select"), support_accuracy=True,
                          select_from=("all", "none"), select_criterion="accuracy",
                          select_at="each")
    return path, result


def test_select_arm_reads_the_chosen_arm_per_task_and_step(selected):
    from pyro_base.inference.run.selection import choose

    _, result = selected
    steps = [0, 2]
    assert len(result.tasks) == 4 and result.settings["select_at"] == "each"
    for r in result.tasks:
        sel = r["selection"]
        assert sel["candidates"] == ["meta", "untrained"] and sel["steps"] == steps
        assert "select_at" not in sel
        assert set(sel["chosen"]) == {"0", "2"}
        assert sel["chosen"] == {str(k): v for k, v in
                                 choose(sel["heldout_accuracy"], steps).items()}
        assert sel["fit_size"] + sel["heldout_size"] == 20 and sel["heldout_size"] == 5
        for j, k in enumerate(steps):
            arm = sel["chosen"][str(k)]
            assert r["accuracy"]["select"][j] == r["accuracy"][arm][j]
            assert r["support_accuracy"]["select"][j] == r["support_accuracy"][arm][j]
        assert r["top_op"]["select"] == r["top_op"][sel["chosen"]["2"]]
        assert r["adapt_seconds"]["select"] > 0
    # both starts are chosen somewhere (so reading the chosen arm is told from reading one)
    assert {c for r in result.tasks for c in r["selection"]["chosen"].values()} == \
        {"meta", "untrained"}
    for name, family in result.families.items():
        rows = [r for r in result.tasks if r["family"] == name]
        for other in ("untrained", "meta"):
            gain = family["gains"][f"select-{other}"]
            diffs = [np.subtract(r["accuracy"]["select"], r["accuracy"][other]) for r in rows]
            assert gain["mean"] == pytest.approx(np.mean(diffs, axis=0).tolist())
        assert set(family["accuracy"]) == {"meta", "untrained", "select"}
    table = format_summary(result)
    header = table.splitlines()[0]
    for family in result.families.values():
        if family["preferred_ops"] is not None:
            assert set(family["match_fraction_by_arm"]) == {"meta", "select"}
    assert "| meta | untrained | uniform-arch | select |" in header
    assert "gain select-untrained" in header and "gain meta-untrained" in header
    assert table.count("| motif | 2 |") == 2  # query and support accuracy tables
    assert "| support accuracy meta | support accuracy untrained | support accuracy select |" \
        in table


def test_select_arm_choice_is_select_start_from_its_own_pair_seed(selected):
    """The recorded choice is select_start between the meta-prior and W_0 on the task's
    support set, seeded by the task's SELECT_SLOT, independent of the other arms."""
    from pyro_base.inference.evaluate.paired import SELECT_SLOT, _arm_states
    from pyro_base.inference.run.selection import select_start

    path, result = selected
    model, _, cfg, _ = load_trained(path)
    guide = build_guide(cfg.replace(elbo_impl=result.settings["elbo_impl"]), model)
    # the meta arm starts from W as load_trained gives it: the prior sharpened
    states = _arm_states(cfg, {k: v.clone() for k, v in model.W.state_dict().items()}, "cpu")
    task = build_tasks(cfg, build_space(cfg)).task("colour", 1, "test")
    record = next(r for r in result.tasks if r["task"] == task.name)
    sel = select_start(model, guide, {a: states[a] for a in ("meta", "untrained")},
                       *task.support, n_classes=task.n_classes, steps=[0, 2],
                       temperature=cfg.adapt_temperature, num_samples=cfg.num_samples,
                       seed=pair_seed(0, 1, 1, SELECT_SLOT), criterion="accuracy")
    assert json.loads(json.dumps(sel.to_dict())) == record["selection"]


def test_select_arm_takes_the_meta_prior_on_a_tie(tmp_path):
    """With W = W_0 the two candidates are one: every choice is meta, with its numbers."""
    run, _ = make_run(tmp_path / "untrained", CFG.replace(families=["colour"], n_support=20),
                      train=False)
    result = evaluate_run(run, tasks_per_family=2, steps=(0, 1), n_boot=50,
                          arms=("meta", "untrained", "select"), select_from=("all", "none"))
    for r in result.tasks:
        acc = r["selection"]["heldout_accuracy"]
        assert acc["meta"] == acc["untrained"]
        assert r["selection"]["chosen"] == {"1": "meta"}  # after the run's adapt_steps
        assert r["selection"]["select_at"] == 1
        assert r["accuracy"]["select"] == r["accuracy"]["meta"] == r["accuracy"]["untrained"]
    zero = {"mean": [0.0, 0.0], "lo": [0.0, 0.0], "hi": [0.0, 0.0]}
    assert result.families["colour"]["gains"]["select-untrained"] == zero
    assert result.families["colour"]["gains"]["select-meta"] == zero


def test_select_arm_chooses_between_the_starts_of_select_from(tmp_path, capsys):
    """select_from ("all", "architecture") by held-out log-likelihood: the choice is
    select_start between the meta arm and the architecture-only arm, seeded as the default
    choice is, made once after the run's ``adapt_steps`` (1, between the curve's 0 and 2),
    and the select arm reads the chosen one's numbers at every step count; the settings
    record the starts, the criterion and the step count."""
    from pyro_base.inference.evaluate.paired import SELECT_SLOT, _arm_states
    from pyro_base.inference.run.selection import choose, select_start

    path, _ = make_run(tmp_path / "run", CFG.replace(n_support=20), train=True)
    arms = ("meta", "meta_arch_untrained_weights", "select")
    result = evaluate_run(path, tasks_per_family=1, steps=(0, 2), n_boot=50, arms=arms,
                          select_from=("all", "architecture"), select_criterion="loglik")
    assert result.settings["select_from"] == ["all", "architecture"]
    assert result.settings["select_criterion"] == "loglik"
    assert result.settings["select_at"] == 1
    for r in result.tasks:
        sel = r["selection"]
        assert sel["candidates"] == ["meta", "meta_arch_untrained_weights"]
        assert sel["criterion"] == "loglik" and sel["steps"] == [1] and sel["select_at"] == 1
        assert sel["chosen"] == {str(k): v for k, v in
                                 choose(sel["heldout_loglik"], sel["steps"]).items()}
        assert r["accuracy"]["select"] == r["accuracy"][sel["chosen"]["1"]]
        assert r["top_op"]["select"] == r["top_op"][sel["chosen"]["1"]]
    model, _, cfg, _ = load_trained(path)
    guide = build_guide(cfg.replace(elbo_impl=result.settings["elbo_impl"]), model)
    states = _arm_states(cfg, {k: v.clone() for k, v in model.W.state_dict().items()}, "cpu")
    task = build_tasks(cfg, build_space(cfg)).task("colour", 0, "test")
    sel = select_start(model, guide, {a: states[a] for a in arms[:2]}, *task.support,
                       n_classes=task.n_classes, steps=[1],
                       temperature=cfg.adapt_temperature, num_samples=cfg.num_samples,
                       seed=pair_seed(0, 1, 0, SELECT_SLOT), criterion="loglik")
    record = next(r for r in result.tasks if r["task"] == task.name)
    assert json.loads(json.dumps(sel.to_dict())) | {"select_at": 1} == record["selection"]
    # --reuse takes it only for the same starts; pooling refuses a mix
    cli = script().cli
    flags = ["--tasks-per-family", "1", "--steps", "0", "2", "--reuse", "--arms"]
    select = ["--select-from", "all", "architecture", "--select-criterion", "loglik"]
    assert cli([str(path), *flags, *arms, *select]) == 0
    assert "reusing" in capsys.readouterr().out
    from pyro_base.inference.evaluate.pooled import load_evaluation, pool_evaluations
    other = Path(shutil.copytree(path, tmp_path / "other"))
    assert cli([str(other), *flags, "meta", "untrained", "select", "--select-from", "all",
                "none"]) == 0
    assert "reusing" not in capsys.readouterr().out
    again = load_evaluation(other)
    assert again["settings"]["select_from"] == ["all", "none"]
    assert again["settings"]["select_criterion"] == "loglik"  # the default
    with pytest.raises(ValueError, match="choose between different starts"):
        pool_evaluations([load_evaluation(path), again])


def test_select_once_at_a_budget_is_the_choice_at_each_step_count_there(tmp_path, capsys):
    """The select arm choosing once after 2 steps makes the choice the per-step protocol makes
    at 2 (the same held-out scores, float for float: a 2-step adaptation is the first 2 steps
    of a 3-step one) and reads that start's whole curve; an evaluation choosing at each step
    count answers it under reuse, pooling refuses the mix, and the CLI's --select-at picks it
    (default: the run's adapt_steps)."""
    from pyro_base.inference.evaluate.pooled import load_evaluation, pool_evaluations, restrict

    path, _ = make_run(tmp_path / "run", CFG.replace(n_support=20), train=True)
    kwargs = {"tasks_per_family": 2, "steps": (0, 2, 3), "n_boot": 50,
              "arms": ("meta", "untrained", "select"), "select_from": ("all", "none"),
              "select_criterion": "accuracy"}
    each = evaluate_run(Path(shutil.copytree(path, tmp_path / "each")), select_at="each",
                        **kwargs)
    once = evaluate_run(Path(shutil.copytree(path, tmp_path / "once")), select_at=2, **kwargs)
    assert (each.settings["select_at"], once.settings["select_at"]) == ("each", 2)
    for e, o in zip(each.tasks, once.tasks, strict=True):
        sel = o["selection"]
        assert sel["steps"] == [2] and sel["select_at"] == 2
        assert sel["chosen"] == {"2": e["selection"]["chosen"]["2"]}
        for score in ("heldout_accuracy", "heldout_loglik"):
            assert sel[score] == {a: [v[1]] for a, v in e["selection"][score].items()}
        assert o["accuracy"]["select"] == o["accuracy"][sel["chosen"]["2"]]
        assert o["accuracy"]["select"][1] == e["accuracy"]["select"][1]  # at 2 steps
        assert {a: o["accuracy"][a] for a in ("meta", "untrained")} == \
            {a: e["accuracy"][a] for a in ("meta", "untrained")}
    # the choice at 2 differs from the choice at 0 or 3 somewhere: the protocols differ
    assert any(len(set(e["selection"]["chosen"].values())) > 1 for e in each.tasks)
    assert each.families["motif"]["gains"]["select-untrained"]["mean"][1] == \
        once.families["motif"]["gains"]["select-untrained"]["mean"][1]
    reused = evaluate_run(Path(shutil.copytree(path, tmp_path / "reused")), select_at=2,
                          reuse=each.to_dict(), **kwargs)
    assert reused.settings["reused"] == 4
    assert _numbers(reused.tasks) == _numbers(once.tasks)
    back = evaluate_run(Path(shutil.copytree(path, tmp_path / "back")), select_at="each",
                        reuse=once.to_dict(), **kwargs)  # one choice cannot answer each
    assert _numbers(back.tasks) == _numbers(each.tasks)
    with pytest.raises(ValueError, match="at different step counts"):
        pool_evaluations([each.to_dict(), once.to_dict()])
    cut = restrict(json.loads(json.dumps(once.to_dict())), steps=[0, 3])
    assert cut["tasks"][0]["selection"] == json.loads(json.dumps(once.tasks[0]["selection"]))
    assert cut["tasks"][0]["accuracy"]["select"] == [once.tasks[0]["accuracy"]["select"][j]
                                                    for j in (0, 2)]
    cli = script().cli
    flags = ["--tasks-per-family", "2", "--steps", "0", "2", "3", "--n-boot", "50",
             "--reuse", "--arms", "meta", "untrained", "select", "--select-from", "all",
             "none", "--select-criterion", "accuracy"]
    assert cli([str(tmp_path / "once"), *flags, "--select-at", "2"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert cli([str(tmp_path / "once"), *flags]) == 0  # the run's adapt_steps: 1
    assert "reusing" not in capsys.readouterr().out
    data = load_evaluation(tmp_path / "once")
    assert data["settings"]["select_at"] == 1
    assert all(t["selection"]["steps"] == [1] for t in data["tasks"])
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit):
            script().build_parser().parse_args([str(path), "--select-at", bad])
    assert script().build_parser().parse_args([str(path), "--select-at", "each"]).select_at \
        == "each"


def test_select_alone_adapts_only_the_chosen_start_as_its_arm_would(tmp_path):
    """``arms=("untrained", "select")``: the choice made once (after the run's adapt_steps),
    then only the chosen start adapted, with the seeds its arm uses, as ``adapt`` does: the
    same numbers as reading the chosen arm of an evaluation of both candidates, support
    accuracy included; reusing it gives them back without adapting again."""
    path, _ = make_run(tmp_path / "run", CFG.replace(n_support=20), train=True)
    kwargs = {"tasks_per_family": 2, "steps": (0, 2), "n_boot": 50, "support_accuracy": True}
    full = evaluate_run(Path(shutil.copytree(path, tmp_path / "full")),
                        arms=("meta", "untrained", "meta_arch_untrained_weights", "select"),
                        **kwargs)
    alone = evaluate_run(Path(shutil.copytree(path, tmp_path / "alone")),
                         arms=("untrained", "select"), **kwargs)
    assert alone.settings["select_at"] == 1 and alone.settings["arms"] == ["untrained", "select"]
    for f, a in zip(full.tasks, alone.tasks, strict=True):
        assert set(a["accuracy"]) == {"untrained", "select"}
        assert a["selection"] == f["selection"]
        for key in ("accuracy", "support_accuracy", "top_op"):
            assert a[key]["select"] == f[key]["select"] == f[key][f["selection"]["chosen"]["1"]]
            assert a[key]["untrained"] == f[key]["untrained"]
    for name in alone.families:
        assert alone.families[name]["gains"]["select-untrained"] == \
            full.families[name]["gains"]["select-untrained"]
    assert {t["selection"]["chosen"]["1"] for t in full.tasks} == \
        {"meta", "meta_arch_untrained_weights"}  # each start was adapted alone somewhere
    again = evaluate_run(Path(shutil.copytree(path, tmp_path / "again")),
                         arms=("untrained", "select"), reuse=alone.to_dict(), **kwargs)
    assert again.settings["reused"] == 4 and _numbers(again.tasks) == _numbers(alone.tasks)
    # another choice (other candidates) is made afresh: the earlier select arm's numbers
    # (marked here) are not read for it, even where it chooses a start no arm evaluates
    marked = json.loads(json.dumps(alone.to_dict()))
    for t in marked["tasks"]:
        t["accuracy"]["select"] = [-1.0] * len(t["accuracy"]["select"])
    kwargs["select_from"] = ("all", "none")
    other = evaluate_run(Path(shutil.copytree(path, tmp_path / "other")),
                         arms=("untrained", "select"), reuse=marked, **kwargs)
    fresh = evaluate_run(Path(shutil.copytree(path, tmp_path / "fresh")),
                         arms=("untrained", "select"), **kwargs)
    assert _numbers(other.tasks) == _numbers(fresh.tasks)
    assert any(t["selection"]["chosen"]["1"] == "meta" for t in fresh.tasks)


def _numbers(records: list[dict]) -> list[dict]:
    """The records without their timings (what must not depend on how they were computed)."""
    return [{k: v for k, v in r.items() if k != "adapt_seconds"} for r in records]


def test_reuse_takes_the_arms_it_has_and_computes_the_rest(tmp_path, capsys):
    """An evaluation of two arms on one task per family, reused for three arms and the
    select arm on two tasks: the result equals evaluating everything at once, number for
    number, the earlier file's other arm is kept, and only the missing units are computed."""
    cfg = CFG.replace(n_support=20)
    path, _ = make_run(tmp_path / "run", cfg, train=True)
    arms = ("meta", "meta_arch_untrained_weights", "select")
    sel = ("all", "architecture")
    copy = Path(shutil.copytree(path, tmp_path / "copy"))
    whole = evaluate_run(path, tasks_per_family=2, steps=(0, 2), n_boot=50,
                         arms=("meta", "untrained", *arms[1:]), select_from=sel)
    evaluate_run(copy, tasks_per_family=1, steps=(0, 1, 2), n_boot=50,
                 arms=("meta", "untrained"))
    assert script().cli([str(copy), "--tasks-per-family", "2", "--steps", "0", "2", "--reuse",
                         "--arms", *arms, "--select-from", *sel, "--n-boot", "50"]) == 0
    assert "reusing" not in capsys.readouterr().out
    from pyro_base.inference.evaluate.pooled import load_evaluation
    data = load_evaluation(copy)
    assert data["settings"]["arms"] == [*arms, "untrained"]  # the earlier arm kept
    assert data["settings"]["reused"] == 2  # task 0 of both families
    assert data["settings"]["start_digest"] == whole.settings["start_digest"]
    assert _numbers(data["tasks"]) == _numbers(json.loads(json.dumps(whole.tasks)))


def test_reuse_never_takes_another_starts_numbers(tmp_path):
    """An earlier evaluation of another W (same step, other weights) or of another sharpness
    is not reused: every unit is computed again."""
    from pyro_base.checkpoint import load_checkpoint
    from pyro_base.inference.evaluate.paired import known_records
    path, _ = make_run(tmp_path / "run", CFG, train=True)
    earlier = evaluate_run(path, tasks_per_family=1, steps=(0, 1), n_boot=50,
                           arms=("meta",)).to_dict()
    again = evaluate_run(path, tasks_per_family=1, steps=(0, 1), n_boot=50, arms=("meta",),
                         reuse=earlier)
    assert again.settings["reused"] == 2
    assert _numbers(again.tasks) == _numbers(earlier["tasks"])
    sharper = evaluate_run(path, tasks_per_family=1, steps=(0, 1), n_boot=50, arms=("meta",),
                           reuse=earlier, sharpness=2.0)
    assert sharper.settings["reused"] == 0
    state = load_checkpoint(path / CHECKPOINT)
    state["svi"]["W"]["mu"] = state["svi"]["W"]["mu"] + 0.1
    save_checkpoint(path / CHECKPOINT, state, space=build_space(CFG))
    moved = evaluate_run(path, tasks_per_family=1, steps=(0, 1), n_boot=50, arms=("meta",),
                         reuse=earlier)
    assert moved.settings["reused"] == 0
    assert moved.settings["start_digest"] != earlier["settings"]["start_digest"]
    assert known_records(earlier, {**earlier["settings"], "seed": 1}, [0, 1]) == {}
    assert known_records(earlier, earlier["settings"], [0, 1, 5]) == {}  # a step it lacks
    assert len(known_records(earlier, earlier["settings"], [1])) == 2


def test_select_from_components_chooses_among_the_refits_family_components(tmp_path):
    """``select_from`` "components": one candidate per family component of the run's refit,
    ``architecture:<family>``, the component's sharpened logits with W_0's weights; the select
    arm's curve is the chosen component's adaptation with the task's paired seeds."""
    from pyro_base.inference.evaluate.paired import _adapt_arm, _setup
    from pyro_base.inference.vi.arch_refit import refit_architecture, refit_tasks

    cfg = CFG.replace(n_support=20)
    path, w0 = make_run(tmp_path / "run", cfg, train=True)
    space = build_space(cfg)
    state = torch.load(path / CHECKPOINT, weights_only=False)
    model = build_model(cfg, space)
    model.W.load_state_dict(state["svi"]["W"])
    refit = refit_architecture(model, build_guide(cfg, model),
                               refit_tasks(build_tasks(cfg, space), 2, seed=cfg.seed),
                               steps=2, temperature=cfg.adapt_temperature, seed=cfg.seed)
    assert list(refit.components) == ["motif", "colour"]
    state["arch_refit"] = refit.to_state()
    save_checkpoint(path / CHECKPOINT, state, space=space)
    names = ["architecture:motif", "architecture:colour"]
    kwargs = dict(tasks_per_family=2, steps=(0, 2), n_boot=50, arms=("untrained", "select"),
                  select_at=2)
    result = evaluate_run(path, select_from=("components",), **kwargs)
    s = _setup(path, device="cpu", arms=kwargs["arms"], tasks_per_family=2, elbo_impl=None,
               select_from=("components",), select_at=2)
    assert s.select == tuple(names) and list(s.starts) == names
    for name, family in zip(names, ("motif", "colour"), strict=True):
        for k, v in s.starts[name].items():  # W_0's weights, the component's logits sharpened
            want = (cfg.adapt_sharpness * refit.components[family][k] if k.startswith("alpha_")
                    else w0[k])
            torch.testing.assert_close(v, want, rtol=0, atol=0)
    assert result.settings["select_from"] == ["components"]
    for r in result.tasks:
        sel = r["selection"]
        ll = sel["heldout_loglik"]
        assert sel["candidates"] == names
        assert sel["chosen"]["2"] == max(names, key=lambda n: (ll[n][0], -names.index(n)))
        fi = list(s.by_family).index(r["family"])
        task = s.by_family[r["family"]][r["task_index"]]
        want = _adapt_arm(s.model, s.guide, s.starts[sel["chosen"]["2"]], task, fi,
                          r["task_index"], steps=[0, 2], seed=0, cfg=s.cfg,
                          support_accuracy=False)
        assert r["accuracy"]["select"] == want["accuracy"]
    both = evaluate_run(path, select_from=("all", "components"), **kwargs)
    assert all(r["selection"]["candidates"] == ["meta", *names] for r in both.tasks)
    with pytest.raises(ValueError, match="choose once"):
        evaluate_run(path, select_from=("all", "components"), **{**kwargs, "select_at": "each"})
    # a run whose refit has no components: its architecture start stands in for them
    del state["arch_refit"]["components"]
    save_checkpoint(path / CHECKPOINT, state, space=space)
    old = evaluate_run(path, select_from=("all", "components"), **kwargs)
    assert all(r["selection"]["candidates"] == ["meta", "meta_arch_untrained_weights"]
               for r in old.tasks)
