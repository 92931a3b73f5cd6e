"""pyro-base adapt (scripts/adapt.py): a saved meta-prior adapted to a task, the files it
writes, the prior-only cell at --steps 0, and one error line for what the prior cannot take."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pyro_base import defaults
from pyro_base.genotype import Genotype
from pyro_base.inference.commands.adapt import cli
from pyro_base.inference.posterior.inference_data import load_posterior
from pyro_base.inference.run.config import ConfigError, MetaConfig
from pyro_base.inference.run.factory import build_model, build_space, load_trained
from pyro_base.inference.run.job import meta_train_run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(preset="cpu", channels=4, cells=2, nodes=2, tasks_per_step=2, inner_steps=1,
            n_support=16, n_query=16, inner_batch=8, threads=0, steps=2, posterior_draws=4,
            num_samples=1, arch_refit_tasks=2, arch_refit_steps=2, arch_refit_workers=1,
            meta_workers=1)
TASK = ["--task-source", "procedural", "--family", "motif", "--n-support", "24",
        "--n-query", "16", "--device", "cpu", "--no-progress", "--log-level", "WARNING"]


def _start(run: Path) -> dict[str, torch.Tensor]:
    """The unsharpened ``W`` a new task starts from: the checkpoint's meta-trained ``W`` with
    the logits of the run's architecture refit (which the fixture's run has)."""
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    start = {**state["svi"]["W"], **state["arch_refit"]["logits"]}
    assert not torch.equal(start["alpha_normal"], state["svi"]["W"]["alpha_normal"])
    return start


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "run"
    meta_train_run(MetaConfig(**TINY), run_dir=path, progress=False)
    return path


def test_adapt_writes_the_adaptation_directory(prior, tmp_path, capsys):
    out = tmp_path / "adapt"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "3", "--curve-steps", "0",
                "2", "--transfer", "all", *TASK]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["cost"]["forward_backward"] == 3
    assert summary["cost"]["images"] == 3 * 8  # inner_batch 8 of the 24 support images
    record = json.loads((out / "adapt.json").read_text())
    assert Genotype.load(out / "genotype.json") == Genotype.from_dict(record["genotype"])
    curve = json.loads((out / "curve.json").read_text())
    assert curve["steps"] == [0, 2, 3] and len(curve["inner_losses"]) == 3
    assert all(0.0 <= a <= 1.0 for a in curve["query_accuracy"])
    assert curve["query_accuracy"][-1] == record["query_accuracy"]
    assert (out / "curve.png").stat().st_size > 0
    idata = load_posterior(out / "posterior.nc")
    assert list(idata.posterior["task"].values) == [record["task"]]
    for cell, probs in record["op_probs"].items():
        assert np.allclose(np.asarray(probs).sum(-1), 1.0), cell


def test_zero_steps_gives_the_priors_own_cell(prior, tmp_path):
    out = tmp_path / "prior_only"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "0", "--transfer", "all",
                *TASK]) == 0
    model, guide, _, _ = load_trained(prior)
    assert Genotype.load(out / "genotype.json") == guide.prior_posterior().genotype(model.space)
    record = json.loads((out / "adapt.json").read_text())
    assert record["cost"] == {"seconds": record["cost"]["seconds"], "forward_backward": 0,
                              "forward": 0, "images": 0}
    assert record["query_accuracy"] == record["prior_accuracy"]


@pytest.mark.parametrize("extra, message", [
    (["--image-size", "12"], "images are 12x12 but the prior"),
    (["--task-source", "npz", "--data-dir", "/nonexistent.npz"], "nonexistent"),
])
def test_what_the_prior_cannot_take_is_one_error_line(prior, tmp_path, capsys, extra, message):
    assert cli(["--prior", str(prior), "--out", str(tmp_path / "x"), *TASK, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_run_directory_without_a_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert cli(["--prior", str(tmp_path / "run"), "--out", str(tmp_path / "x"), *TASK]) == 2
    assert "lacks ['config.yaml', 'checkpoint.pt']" in capsys.readouterr().err


def test_script_and_command_help():
    for cmd in ([sys.executable, str(ROOT / "scripts" / "adapt.py"), "--help"],
                [sys.executable, "-m", "pyro_base", "adapt", "--help"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "--prior RUN_DIR" in r.stdout and "--out ADAPT_DIR" in r.stdout


def test_train_takes_the_adaptation_directory_and_picks_the_recipe(prior, tmp_path, capsys,
                                                                    caplog):
    """The chain's third step: train_genotype --genotype ADAPT_DIR, recipe from the image size."""
    from pyro_base.inference.commands import train

    out = tmp_path / "adapt"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "1", *TASK]) == 0
    capsys.readouterr()
    args = ["--genotype", str(out), "--task-source", "procedural", "--family", "motif",
            "--n-support", "24", "--n-query", "16", "--steps", "1", "--init-channels", "4",
            "--layers", "2", "--device", "cpu", "--no-progress", "--run-dir",
            str(tmp_path / "train")]
    with caplog.at_level("WARNING", logger="train"):
        assert train.cli(args) == 0
    assert "--preset cpu (chosen from the task's 16x16 images" in caplog.text
    assert "top1: " in capsys.readouterr().out
    eval_ = json.loads((tmp_path / "train" / "eval.json").read_text())
    assert eval_["config"]["batch_size"] == 32  # the cpu recipe's, not darts' 96


def test_fewshot_episodes_report_the_mean_and_its_95_interval(prior, tmp_path, capsys):
    out = tmp_path / "fs"
    assert cli(["--prior", str(prior), "--out", str(out), "--episodes", "4", "--n-way", "3",
                "--k-shot", "2", "--query-per-class", "4", "--steps", "1", *TASK]) == 0
    report = json.loads((out / "fewshot.json").read_text())
    acc = np.asarray(report["accuracies"])
    assert len(acc) == 4 and report["n_way"] == 3 and report["k_shot"] == 2
    assert report["mean"] == pytest.approx(acc.mean())
    assert report["ci95"] == pytest.approx(1.96 * acc.std(ddof=1) / 2)
    assert "3-way 2-shot, 4 episodes" in capsys.readouterr().out
    # the same episodes again: the same numbers (episodes are a pure function of the seed)
    assert cli(["--prior", str(prior), "--out", str(out), "--episodes", "4", "--n-way", "3",
                "--k-shot", "2", "--query-per-class", "4", "--steps", "1", *TASK]) == 0
    assert json.loads((out / "fewshot.json").read_text())["accuracies"] == report["accuracies"]


def test_fewshot_refuses_more_ways_than_outputs(prior, tmp_path, capsys):
    assert cli(["--prior", str(prior), "--out", str(tmp_path / "fs"), "--episodes", "2",
                "--n-way", "11", *TASK]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "11" in err


def test_out_may_not_be_a_run_directory(prior, capsys):
    assert cli(["--prior", str(prior), "--out", str(prior), *TASK]) == 2
    assert "is a meta-training run directory" in capsys.readouterr().err


def test_grey_images_are_repeated_to_rgb_for_an_rgb_prior(prior, tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (60, 16, 16), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "grey.npz", x=x, y=y)
    out = tmp_path / "grey"
    args = ["--prior", str(prior), "--out", str(out), "--steps", "1", "--task-source", "npz",
            "--data-dir", str(tmp_path / "grey.npz"), "--device", "cpu", "--no-progress",
            "--log-level", "WARNING"]
    assert cli(args) == 0
    assert json.loads((out / "adapt.json").read_text())["n_classes"] == 3


def test_fewshot_on_omniglot_in_its_real_layout(prior, tmp_path, capsys):
    from test_tasks_disk import make_omniglot

    root = make_omniglot(tmp_path / "omni")
    out = tmp_path / "fs_omni"
    assert cli(["--prior", str(prior), "--out", str(out), "--task-source", "omniglot",
                "--data-dir", str(root), "--episodes", "3", "--n-way", "3", "--k-shot", "1",
                "--query-per-class", "2", "--steps", "1", "--device", "cpu", "--no-progress",
                "--log-level", "WARNING"]) == 0
    report = json.loads((out / "fewshot.json").read_text())
    assert report["source"] == "omniglot" and len(report["accuracies"]) == 3


def test_transfer_state_takes_what_it_names_from_the_meta_prior():
    from pyro_base.inference.commands import adapt as command
    from pyro_base.inference.run.adaptation import STARTS
    from pyro_base.inference.run.factory import TRANSFERS, transfer_state
    action = next(a for a in command.build_parser()._actions if a.dest == "transfer")
    assert tuple(action.choices) == STARTS == command.STARTS  # the torch-free parser's copy
    assert STARTS == (*TRANSFERS, "select", "ensemble")
    meta = {"mu": np.ones(3), "log_sigma": np.ones(3), "alpha_normal": np.ones(2)}
    init = {k: np.zeros_like(v) for k, v in meta.items()}
    assert transfer_state(meta, init, transfer="all") == meta
    arch = transfer_state(meta, init, transfer="architecture")
    assert arch["alpha_normal"] is meta["alpha_normal"]
    assert arch["mu"] is init["mu"] and arch["log_sigma"] is init["log_sigma"]
    weights = transfer_state(meta, init, transfer="weights")
    assert weights["alpha_normal"] is init["alpha_normal"]
    assert weights["mu"] is meta["mu"] and weights["log_sigma"] is meta["log_sigma"]
    with pytest.raises(ValueError, match="transfer must be one of"):
        transfer_state(meta, init, transfer="head")


def test_architecture_transfer_starts_from_the_meta_logits_and_the_initial_weights(
        prior, tmp_path, capsys):
    import torch

    from pyro_base.inference.evaluate.paired import _arm_states
    from pyro_base.inference.run.factory import build_model, build_space
    meta, _, cfg, _ = load_trained(prior)
    arch, _, _, _ = load_trained(prior, transfer="architecture")
    W0 = build_model(cfg, build_space(cfg)).W.state_dict()
    assert not torch.equal(meta.W.mu, W0["mu"])  # meta-training moved the weights
    for name, value in arch.W.state_dict().items():
        expected = meta.W.state_dict()[name] if name.startswith("alpha_") else W0[name]
        assert torch.equal(value, expected), name
    # the same start as the evaluation's architecture-only arm
    states = _arm_states(cfg, meta.W.state_dict(), torch.device("cpu"))
    for name, value in states["meta_arch_untrained_weights"].items():
        assert torch.equal(arch.W.state_dict()[name], value), name
    with pytest.raises(ValueError, match="transfer must be one of"):
        load_trained(prior, transfer="head")
    # the command records it, and at 0 steps the cell is the meta-prior's own
    out = tmp_path / "arch"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "0", "--transfer",
                "architecture", *TASK]) == 0
    record = json.loads((out / "adapt.json").read_text())
    assert record["transfer"] == "architecture"
    assert Genotype.load(out / "genotype.json") == \
        load_trained(prior)[1].prior_posterior().genotype(meta.space)
    with pytest.raises(SystemExit):
        cli(["--prior", str(prior), "--out", str(out), "--transfer", "head", *TASK])
    assert "--transfer: invalid choice" in capsys.readouterr().err


def test_none_transfer_is_the_runs_w0_and_select_chooses_between_it_and_the_meta_prior(prior):
    import torch

    from pyro_base.inference.run.adaptation import SELECT_FROM, selection_starts
    from pyro_base.inference.run.factory import build_model, build_space
    meta, _, cfg, _ = load_trained(prior)
    none, _, _, _ = load_trained(prior, transfer="none")
    W0 = build_model(cfg, build_space(cfg)).W.state_dict()
    assert not torch.equal(meta.W.mu, W0["mu"])
    for name, value in none.W.state_dict().items():
        assert torch.equal(value, W0[name]), name
    starts = selection_starts(meta, cfg)
    assert tuple(starts) == SELECT_FROM == ("all", "architecture")
    starts = selection_starts(meta, cfg, ("all", "none"))
    for name, value in meta.W.state_dict().items():
        assert torch.equal(starts["all"][name], value), name
        assert torch.equal(starts["none"][name], W0[name]), name
    meta.W.mu.data.add_(1.0)  # the candidates are copies, not views of the model's W
    assert not torch.equal(starts["all"]["mu"], meta.W.mu)


@pytest.mark.parametrize("seed", [1, 3])  # (when written: seed 1 chose none, 3 all)
def test_select_transfer_records_the_choice_and_adapts_from_the_chosen_start(prior, tmp_path,
                                                                            seed):
    """adapt.json holds the held-out scores and the start chosen; the cost counts the two
    candidates' adaptations on the fit part; the adaptation itself is that of a plain
    --transfer <start> with the same seed, number for number."""
    steps = 2
    args = ["--prior", str(prior), "--steps", str(steps), "--curve-steps", "0", "1",
            "--seed", str(seed), *TASK, "--n-support", "40"]  # 4 of each of 10 classes
    assert cli([*args, "--out", str(tmp_path / "sel"), "--transfer", "select", "--select-from",
                "all", "none", "--select-criterion", "accuracy"]) == 0
    record = json.loads((tmp_path / "sel" / "adapt.json").read_text())
    sel = record["selection"]
    assert record["transfer"] == "select" and record["start"] in ("all", "none")
    assert sel["candidates"] == ["all", "none"] and sel["steps"] == [steps]
    assert sel["chosen"] == {str(steps): record["start"]}
    acc = sel["heldout_accuracy"]
    assert record["start"] == ("none" if acc["none"][0] > acc["all"][0] else "all")
    assert sel["fit_size"] + sel["heldout_size"] == record["support"] == 40
    assert sel["heldout_size"] >= 1
    cost = record["cost"]
    assert cost["forward_backward"] == steps * 3
    assert cost["forward"] == 2 * 1  # two candidates x num_samples (the run's: 1)
    assert cost["images"] == steps * 8 + 2 * (steps * 8 + 1 * sel["heldout_size"])
    plain = {}
    for start in ("all", "none"):
        out = tmp_path / start
        assert cli([*args, "--out", str(out), "--transfer", start]) == 0
        plain[start] = json.loads((out / "adapt.json").read_text())
        assert plain[start]["transfer"] == plain[start]["start"] == start
        assert "selection" not in plain[start]
    same = plain[record["start"]]
    assert record["query_accuracy"] == same["query_accuracy"]
    assert record["prior_accuracy"] == same["prior_accuracy"]
    assert record["op_probs"] == same["op_probs"] and record["genotype"] == same["genotype"]
    assert json.loads((tmp_path / "sel" / "curve.json").read_text()) == \
        json.loads((tmp_path / record["start"] / "curve.json").read_text())
    # the other start adapts to other numbers (the comparison above can tell them apart)
    other = plain["none" if record["start"] == "all" else "all"]
    assert other["op_probs"] != same["op_probs"]


def test_select_from_chooses_between_the_starts_it_names(prior, tmp_path, capsys):
    """--select-from all architecture: the candidates are the whole meta-prior and its
    architecture with W_0's weights, and the adaptation is that of the start chosen."""
    from pyro_base.inference.commands import adapt as command
    from pyro_base.inference.run.adaptation import SELECT_FROM, selection_starts
    action = next(a for a in command.build_parser()._actions if a.dest == "select_from")
    assert tuple(action.default) == SELECT_FROM == defaults.SELECT_FROM
    assert tuple(action.choices) == (*command.STARTS[:-2], "components")
    action = next(a for a in command.build_parser()._actions if a.dest == "ensemble_from")
    assert tuple(action.default) == defaults.ENSEMBLE_FROM
    assert tuple(action.choices) == (*command.STARTS[:-2], "components")
    from pyro_base.inference.run.adaptation import SELECT_CRITERION
    from pyro_base.inference.run.selection import CRITERIA
    action = next(a for a in command.build_parser()._actions if a.dest == "select_criterion")
    assert action.default == SELECT_CRITERION == defaults.SELECT_CRITERION
    assert tuple(action.choices) == CRITERIA == command.CRITERIA
    meta, _, cfg, _ = load_trained(prior)
    arch, _, _, _ = load_trained(prior, transfer="architecture")
    starts = selection_starts(meta, cfg, ("architecture", "all"))
    assert tuple(starts) == ("architecture", "all")
    for name, value in arch.W.state_dict().items():
        assert torch.equal(starts["architecture"][name], value), name
    args = ["--prior", str(prior), "--steps", "2", "--curve-steps", "0", "1", "--seed", "1",
            *TASK, "--n-support", "40"]
    assert cli([*args, "--out", str(tmp_path / "sel"), "--transfer", "select",
                "--select-from", "all", "architecture", "--select-criterion", "loglik"]) == 0
    record = json.loads((tmp_path / "sel" / "adapt.json").read_text())
    assert record["selection"]["candidates"] == ["all", "architecture"]
    assert record["selection"]["criterion"] == "loglik"
    ll = record["selection"]["heldout_loglik"]
    assert record["start"] == ("architecture" if ll["architecture"][0] > ll["all"][0]
                               else "all")
    assert record["start"] in ("all", "architecture")
    assert cli([*args, "--out", str(tmp_path / "plain"), "--transfer", record["start"]]) == 0
    plain = json.loads((tmp_path / "plain" / "adapt.json").read_text())
    assert record["op_probs"] == plain["op_probs"]
    assert record["query_accuracy"] == plain["query_accuracy"]
    capsys.readouterr()
    for bad in (["all"], ["all", "all"]):
        assert cli([*args, "--out", str(tmp_path / "bad"), "--transfer", "select",
                    "--select-from", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: select_from (--select-from) must be") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli([*args, "--out", str(tmp_path / "bad"), "--select-from", "select"])
    assert "--select-from: invalid choice" in capsys.readouterr().err


def test_select_with_one_image_per_class_starts_from_the_first_candidate(prior, tmp_path):
    """A one-shot support set leaves nothing to hold out: select starts from its first
    candidate (the whole meta-prior) at the cost of one adaptation."""
    out = tmp_path / "one_shot"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "1", *TASK,
                "--n-support", "10", "--transfer", "select"]) == 0  # 10 classes, one each
    record = json.loads((out / "adapt.json").read_text())
    assert record["support"] == 10 and record["transfer"] == "select"
    assert record["start"] == "all" and "selection" not in record
    assert record["cost"]["forward_backward"] == 1
    # components first: the first family component, by its name (not "components")
    out = tmp_path / "one_shot_components"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "1", *TASK,
                "--n-support", "10", "--transfer", "select", "--select-from", "components",
                "all"]) == 0
    record = json.loads((out / "adapt.json").read_text())
    assert record["start"] == "architecture:motif" and "selection" not in record


def test_select_transfer_at_zero_steps_costs_only_the_held_out_draws(prior, tmp_path):
    out = tmp_path / "sel0"
    assert cli(["--prior", str(prior), "--out", str(out), "--steps", "0", "--transfer",
                "select", *TASK, "--n-support", "40"]) == 0
    record = json.loads((out / "adapt.json").read_text())
    assert record["cost"]["forward_backward"] == 0 and record["cost"]["forward"] == 2
    assert record["selection"]["chosen"] == {"0": record["start"]}


def test_fewshot_select_counts_the_starts_chosen(prior, tmp_path, capsys):
    out = tmp_path / "fs_sel"
    fs = ["--episodes", "3", "--n-way", "3", "--query-per-class", "2", "--steps", "1"]
    assert cli(["--prior", str(prior), "--out", str(out), *fs, "--k-shot", "4",
                "--transfer", "select", "--select-from", "all", "none", *TASK]) == 0
    report = json.loads((out / "fewshot.json").read_text())
    assert report["transfer"] == "select" and len(report["accuracies"]) == 3
    assert set(report["chosen"]) == {"all", "none"} and sum(report["chosen"].values()) == 3
    assert report["select_from"] == ["all", "none"] and report["select_criterion"] == "loglik"
    # with --transfer all there is no count; a 1-shot episode leaves nothing to hold out, so
    # select takes its first start, the whole meta-prior, every time
    assert cli(["--prior", str(prior), "--out", str(tmp_path / "fs"), *fs, "--k-shot", "4",
                "--transfer", "all", *TASK]) == 0
    assert "chosen" not in json.loads((tmp_path / "fs" / "fewshot.json").read_text())
    assert cli(["--prior", str(prior), "--out", str(tmp_path / "fs2"), *fs, "--k-shot", "1",
                "--transfer", "select", *TASK]) == 0
    one_shot = json.loads((tmp_path / "fs2" / "fewshot.json").read_text())
    assert one_shot["transfer"] == "select" and one_shot["chosen"] == {"all": 3, "architecture": 0}


def test_fewshot_score_with_starts_adapts_each_episode_from_the_chosen_one(prior):
    """Two identical candidates: every episode chooses the first (a tie), and the accuracies
    are those of the plain protocol from that start, episode for episode."""
    from pyro_base.inference.evaluate.fewshot import episode_source, fewshot_score

    model, guide, cfg, _ = load_trained(prior)
    state = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    source = episode_source("procedural", n_way=3, k_shot=4, n_query=2,
                            image_size=model.space.input_size, families=("motif",))
    kw = dict(episodes=3, steps=1, temperature=cfg.adapt_temperature, num_samples=1, seed=5)
    plain = fewshot_score(model, guide, source, **kw)
    chosen = fewshot_score(model, guide, source, starts={"all": state, "copy": state}, **kw)
    assert chosen["chosen"] == {"all": 3, "copy": 0} and "chosen" not in plain
    assert chosen["accuracies"] == plain["accuracies"]


def test_load_trained_starts_from_the_runs_sharpened_prior(prior):
    raw = _start(prior)
    model, _, cfg, _ = load_trained(prior)
    assert cfg.adapt_sharpness == defaults.ADAPT_SHARPNESS == 4.0  # a new run's default
    for name, value in model.W.state_dict().items():
        expected = raw[name] * 4.0 if name.startswith("alpha_") else raw[name]
        assert torch.equal(value, expected), name
    same, _, cfg1, _ = load_trained(prior, sharpness=1.0)
    assert cfg1.adapt_sharpness == 1.0
    assert all(torch.equal(v, raw[k]) for k, v in same.W.state_dict().items())
    arch, _, _, _ = load_trained(prior, transfer="architecture", sharpness=2.0)
    w0 = build_model(cfg, build_space(cfg)).W.state_dict()
    assert torch.equal(arch.W.alpha_normal, raw["alpha_normal"] * 2.0)
    assert torch.equal(arch.W.mu, w0["mu"])
    with pytest.raises(ConfigError, match="adapt_sharpness must be a finite number > 0"):
        load_trained(prior, sharpness=0.0)


def test_a_run_written_before_the_setting_adapts_from_its_prior_itself(prior, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    settings = yaml.safe_load((prior / "config.yaml").read_text())
    settings.pop("adapt_sharpness")
    (old / "config.yaml").write_text(yaml.safe_dump(settings))
    (old / "checkpoint.pt").write_bytes((prior / "checkpoint.pt").read_bytes())
    model, _, cfg, _ = load_trained(old)
    raw = _start(prior)
    assert cfg.adapt_sharpness == 1.0
    assert torch.equal(model.W.alpha_normal, raw["alpha_normal"])


def test_adapt_records_the_sharpness_and_the_flag_overrides_the_run(prior, tmp_path, capsys):
    for flag, expected in (([], 4.0), (["--adapt-sharpness", "1"], 1.0)):
        out = tmp_path / f"a{expected:g}"
        assert cli(["--prior", str(prior), "--out", str(out), "--steps", "1", *flag,
                    *TASK]) == 0
        assert json.loads((out / "adapt.json").read_text())["sharpness"] == expected
    capsys.readouterr()
    assert cli(["--prior", str(prior), "--out", str(tmp_path / "bad"),
                "--adapt-sharpness", "-2", *TASK]) == 2
    assert "adapt_sharpness must be a finite number > 0" in capsys.readouterr().err


def test_zero_steps_of_adaptation_read_the_sharpened_prior(prior, tmp_path):
    """After 0 steps the adapted op probabilities are the start's: softmax(g * alpha)."""
    raw = _start(prior)
    for g in (1.0, 3.0):
        out = tmp_path / f"z{g:g}"
        assert cli(["--prior", str(prior), "--out", str(out), "--steps", "0",
                    "--adapt-sharpness", str(g), "--transfer", "all", *TASK]) == 0
        probs = torch.tensor(json.loads((out / "adapt.json").read_text())["op_probs"]["normal"])
        expected = torch.softmax(raw["alpha_normal"].double() * g, -1)
        torch.testing.assert_close(probs.double(), expected, atol=1e-6, rtol=0)
        idata = load_posterior(out / "posterior.nc")  # its prior: the start, and its power
        assert idata.attrs["adapt_sharpness"] == g
        np.testing.assert_allclose(idata.prior["op_probs"].sel(cell="normal").values,
                                   expected.numpy(), atol=1e-6)


def test_the_main_jobs_posterior_holds_the_sharpened_architecture_prior(prior, tmp_path):
    """The held-out report's ``posterior.nc``, like ``adapt``'s: the prior group is
    softmax(g alpha) of the run's (refit) ``alpha``, ``g`` the run's ``adapt_sharpness``."""
    from pyro_base.inference.run.heldout import heldout_report
    from pyro_base.inference.run.runlog import RunDir

    model, _, cfg, state = load_trained(prior, sharpness=1.0)  # the meta-trained W itself
    cfg = cfg.replace(adapt_sharpness=2.5, n_heldout=1, adapt_steps=1)
    heldout_report(cfg, model, RunDir(tmp_path), device="cpu")
    idata = load_posterior(tmp_path / "posterior.nc")
    assert idata.attrs["adapt_sharpness"] == 2.5
    for cell in ("normal", "reduce"):
        expected = torch.softmax(_start(prior)[f"alpha_{cell}"].double() * 2.5, -1)
        np.testing.assert_allclose(idata.prior["op_probs"].sel(cell=cell).values,
                                   expected.numpy(), atol=1e-6)


def test_select_from_components_adds_a_start_per_family_component_of_the_refit(
        prior, tmp_path):
    """"components" stands for one start per family component of the run's refit,
    ``architecture:<family>``: W_0's weights with the component's logits sharpened; adapt
    chooses among them by the held-out score and adapts the one chosen."""
    from pyro_base.inference.run.selection import (
        ConfigError,
        checkpoint_components,
        selection_starts,
    )
    from pyro_base.inference.vi.adapt import adapt
    from pyro_base.tasks.base import get_task_distribution

    meta, guide, cfg, state = load_trained(prior)
    arch, _, _, _ = load_trained(prior, transfer="architecture")
    components = checkpoint_components(state)
    assert list(components) == ["motif", "dilated_motif"]  # the refit's two tasks' families
    starts = selection_starts(meta, cfg, ("all", "components"), components=components)
    assert list(starts) == ["all", "architecture:motif", "architecture:dilated_motif"]
    for family in components:
        for k, v in starts[f"architecture:{family}"].items():
            want = (cfg.adapt_sharpness * components[family][k] if k.startswith("alpha_")
                    else arch.W.state_dict()[k])
            torch.testing.assert_close(v, want, rtol=0, atol=0)
    assert not torch.equal(starts["architecture:motif"]["alpha_normal"],
                           starts["architecture:dilated_motif"]["alpha_normal"])
    # without components the pooled architecture start stands in for them
    plain = selection_starts(meta, cfg, ("all", "architecture"))
    for names in (("all", "components"), ("all", "architecture", "components")):
        got = selection_starts(meta, cfg, names, components={})
        assert list(got) == ["all", "architecture"]
        for k, v in got["architecture"].items():
            torch.testing.assert_close(v, plain["architecture"][k], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="a choice needs at least two"):
        selection_starts(meta, cfg, ("architecture", "components"))
    steps, seed = 2, 1
    args = ["--prior", str(prior), "--steps", str(steps), "--curve-steps", "0", "1",
            "--seed", str(seed), *TASK, "--n-support", "40"]
    assert cli([*args, "--out", str(tmp_path / "sel"), "--transfer", "select",
                "--select-from", "components"]) == 0
    record = json.loads((tmp_path / "sel" / "adapt.json").read_text())
    sel, names = record["selection"], list(starts)[1:]
    ll = sel["heldout_loglik"]
    assert sel["candidates"] == names
    assert record["start"] == max(names, key=lambda n: (ll[n][0], -names.index(n)))
    assert record["cost"]["forward_backward"] == steps * (1 + len(names))
    task = get_task_distribution("procedural", families=("motif",), image_size=16,
                                 n_support=40, n_query=16).task("motif", 0, "test")
    meta.W.load_state_dict(starts[record["start"]])
    torch.manual_seed(seed)
    expected = adapt(meta, guide, task, steps=steps, temperature=cfg.adapt_temperature,
                     num_samples=cfg.num_samples)
    assert record["op_probs"] == {c: p.tolist() for c, p in expected.posterior.op_probs().items()}


@pytest.mark.parametrize("select_from", [defaults.SELECT_FROM, ("architecture", "none"),
                                         ("all", "components")])
def test_the_main_jobs_quick_look_reports_the_start_adapt_chooses(prior, tmp_path, select_from):
    """Each held-out row's ``query_accuracy`` is the default pipeline's: the start
    ``select_start`` picks (same candidates, seed and criterion), adapted on the whole support
    set from the task's seed; ``meta_accuracy`` is the whole meta-prior's. The candidates
    without ``all`` make every task adapt its chosen start again, the default ones reuse the
    meta-prior's adaptation where it is chosen."""
    from pyro_base.inference.run.factory import build_guide, build_tasks
    from pyro_base.inference.run.heldout import format_table, heldout_report
    from pyro_base.inference.run.runlog import RunDir, safe_name
    from pyro_base.inference.run.selection import (
        checkpoint_components,
        select_start,
        selection_starts,
    )
    from pyro_base.inference.vi.adapt import adapt
    from pyro_base.inference.vi.meta_svi import task_seed

    model, guide, cfg, state = load_trained(prior)  # W, its prior sharpened, as adapt does
    cfg = cfg.replace(n_heldout=2, adapt_steps=2)
    raw, _, _, _ = load_trained(prior, sharpness=1.0)
    components = checkpoint_components(state)
    rows = heldout_report(cfg, raw, RunDir(tmp_path), device="cpu", select_from=select_from,
                          select_criterion="loglik", components=components, transfer="select")
    starts = selection_starts(model, cfg, select_from, components=components)
    assert len(starts) == (3 if "components" in select_from else 2)
    sharpened = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    untrained = build_model(cfg, model.space)  # W_0 of the run's seed
    untrained_guide = build_guide(cfg, untrained)
    tasks = build_tasks(cfg, build_space(cfg)).tasks("test", cfg.n_heldout)
    for i, (row, task) in enumerate(zip(rows, tasks, strict=True)):
        seed = task_seed(cfg.seed, cfg.steps, i)
        model.W.load_state_dict(sharpened)
        for key, (m, g, k) in {"meta_accuracy": (model, guide, 2),
                               "prior_only_accuracy": (model, guide, 0),
                               "untrained_accuracy": (untrained, untrained_guide, 2)}.items():
            torch.manual_seed(seed)
            assert row[key] == adapt(m, g, task, steps=k, temperature=cfg.adapt_temperature,
                                     num_samples=cfg.num_samples).query_accuracy, key
        sel = select_start(model, guide, starts, *task.support, n_classes=task.n_classes,
                           steps=[2], temperature=cfg.adapt_temperature,
                           num_samples=cfg.num_samples, seed=seed, criterion="loglik")
        assert row["start"] == sel.chosen[2] and row["selection"] == sel.to_dict()
        model.W.load_state_dict(starts[row["start"]])
        torch.manual_seed(seed)
        expected = adapt(model, guide, task, steps=2, temperature=cfg.adapt_temperature,
                         num_samples=cfg.num_samples)
        assert row["query_accuracy"] == expected.query_accuracy
        if row["start"] == "all":
            assert row["query_accuracy"] == row["meta_accuracy"]
        saved = Genotype.load(tmp_path / "genotypes" / f"{safe_name(task.name)}.json")
        assert saved.to_dict() == expected.genotype.to_dict()
    table = format_table(rows)
    assert all(f" {r['start']} " in line for r, line in zip(rows, table.splitlines()[2:],
                                                            strict=True))



def test_the_quick_look_reuses_the_meta_priors_adaptation_where_the_choice_is_all(
        prior, tmp_path, monkeypatch):
    """Where the whole meta-prior is chosen, the default's figure is the ``meta`` column's own
    adaptation (the same start and seed), not a second one, and the candidates the choice
    adapted leave no trace on the columns (a real choice, its verdict turned to ``all``)."""
    import dataclasses

    from pyro_base.inference.run import heldout
    from pyro_base.inference.run.runlog import RunDir

    real_select = heldout.select_start
    monkeypatch.setattr(heldout, "select_start", lambda *a, **k: dataclasses.replace(
        real_select(*a, **k), chosen={2: "all"}))
    calls = []
    real_adapt = heldout.adapt
    monkeypatch.setattr(heldout, "adapt", lambda *a, **k: calls.append(k["steps"])
                        or real_adapt(*a, **k))
    raw, _, cfg, _ = load_trained(prior, sharpness=1.0)
    rows = heldout.heldout_report(cfg.replace(n_heldout=2, adapt_steps=2), raw,
                                  RunDir(tmp_path), device="cpu", transfer="select")
    assert calls == [2, 0, 2] * 2  # meta, 0-shot, untrained per task; nothing adapted again
    reference = heldout.heldout_report(cfg.replace(n_heldout=2, adapt_steps=2), raw,
                                       RunDir(tmp_path / "reference"), device="cpu",
                                       transfer="select")
    for row, ref in zip(rows, reference, strict=True):
        assert row["start"] == "all" and row["selection"]["chosen"] == {"2": "all"}
        assert row["query_accuracy"] == row["meta_accuracy"] == ref["meta_accuracy"]
        assert row["untrained_accuracy"] == ref["untrained_accuracy"]


def test_a_zero_step_look_keeps_the_chosen_starts_posterior(prior, monkeypatch):
    """With ``adapt_steps = 0`` the default's posterior is its start's own parameters; the
    reset of the model to the meta-prior afterwards must not change it."""
    from pyro_base.inference.run import heldout
    from pyro_base.inference.run.factory import build_tasks

    monkeypatch.setattr(heldout, "_choose_start", lambda *a, **k: ("architecture", None))
    raw, _, cfg, _ = load_trained(prior, sharpness=1.0)
    cfg = cfg.replace(adapt_steps=0)
    W = {k: v.detach().clone() for k, v in raw.W.state_dict().items()}
    look = heldout._look_context(cfg.to_dict(), W, defaults.SELECT_FROM, "loglik")
    task = build_tasks(cfg, build_space(cfg)).tasks("test", 1)[0]
    post = heldout._look_task(look, 0, task)["posterior"]
    torch.testing.assert_close(post.params["mu"], look.starts["architecture"]["mu"],
                               rtol=0, atol=0)
    assert not torch.equal(post.params["mu"], look.sharpened["mu"])


def test_the_quick_look_in_two_processes_gives_one_processs_rows(prior, tmp_path, monkeypatch):
    """The held-out tasks spread over ``meta_workers`` processes give the rows (all but the
    timings), genotypes and posteriors of one process with one torch thread."""
    from pyro_base.inference.run import heldout
    from pyro_base.inference.run.heldout import heldout_report
    from pyro_base.inference.run.runlog import RunDir

    pools = []
    real_parallel = heldout.evaluate_parallel
    monkeypatch.setattr(heldout, "evaluate_parallel", lambda units, workers, **k: pools.append(
        workers) or real_parallel(units, workers, **k))
    from pyro_base.inference.run.selection import checkpoint_components

    raw, _, cfg, state = load_trained(prior, sharpness=1.0)
    cfg = cfg.replace(n_heldout=3, adapt_steps=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the family components travel to the workers too
        out = {w: tmp_path / f"workers{w}" for w in (1, 2)}
        rows = {w: heldout_report(cfg.replace(meta_workers=w), raw, RunDir(out[w]),
                                  device="cpu", select_from=("all", "architecture", "components"),
                                  components=checkpoint_components(state), transfer="select")
                for w in out}
    finally:
        torch.set_num_threads(threads)

    def timeless(rs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rs]

    assert pools == [2]  # the look with meta_workers=2 ran in the pool, the other in-process
    assert all(len(r["selection"]["candidates"]) == 4 for r in rows[2])
    assert timeless(rows[1]) == timeless(rows[2]) and len(rows[1]) == 3
    for path in (out[1] / "genotypes").glob("*.json"):
        assert path.read_text() == (out[2] / "genotypes" / path.name).read_text()
    ops = {w: load_posterior(out[w] / "posterior.nc").constant_data["op_probs"].values
           for w in out}
    np.testing.assert_array_equal(ops[1], ops[2])
