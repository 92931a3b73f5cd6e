"""The architecture refit after meta-training (pyro_base.inference.vi.arch_refit and its place in
the main job): the EM mean of the adapted op probabilities, its tasks, a task with a
non-finite loss, the checkpoint entry and what adapts from it, and resume."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from pyro_base.inference.run.config import ConfigError, MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_meta_svi,
    build_model,
    build_space,
    build_tasks,
    load_trained,
)
from pyro_base.inference.run.job import meta_train_run
from pyro_base.inference.run.refit import compute_refit
from pyro_base.inference.vi import arch_refit as refit_mod
from pyro_base.inference.vi.arch_refit import (
    REFIT_STREAM,
    ArchRefit,
    refit_architecture,
    refit_tasks,
)
from pyro_base.inference.vi.meta_common import task_seed
from pyro_base.tasks.procedural import ProceduralTasks

TINY = dict(preset="cpu", channels=4, cells=2, nodes=2, tasks_per_step=2, inner_steps=1,
            n_support=16, n_query=16, inner_batch=8, threads=0, deterministic=True,
            arch_refit_tasks=3, arch_refit_steps=2, arch_refit_workers=1, meta_workers=1)


def _model_guide(cfg):
    model = build_model(cfg, build_space(cfg))
    return model, build_guide(cfg, model)


def _tasks(n=3):
    return refit_tasks(ProceduralTasks(image_size=16, n_support=16, n_query=16), n, seed=0)


def test_refit_is_the_log_mean_of_each_tasks_adapted_op_probabilities():
    cfg = MetaConfig(**TINY)
    model, guide = _model_guide(cfg)
    w_before = {k: v.clone() for k, v in model.W.state_dict().items()}
    tasks = _tasks()
    refit = refit_architecture(model, guide, tasks, steps=2, temperature=0.5, seed=7,
                               meta_step=4)
    for k, v in model.W.state_dict().items():  # W itself is not changed
        torch.testing.assert_close(v, w_before[k], rtol=0, atol=0)
    expected = {}
    for c, task in enumerate(tasks):  # each task adapted on its own, from the refit's seed
        torch.manual_seed(task_seed(7, REFIT_STREAM, c))
        post, _ = guide.adapt(*task.support, n_classes=task.n_classes, temperature=0.5,
                              steps=2)
        for n in ("alpha_normal", "alpha_reduce"):
            expected.setdefault(n, []).append(post.params[n].softmax(-1))
    assert set(refit.logits) == set(expected)
    for n, probs in expected.items():
        torch.testing.assert_close(refit.logits[n], torch.stack(probs).mean(0).log())
        # log-probabilities: every edge's op probabilities sum to one
        torch.testing.assert_close(refit.logits[n].logsumexp(-1),
                                   torch.zeros(refit.logits[n].shape[0]))
    assert (refit.tasks, refit.n_good, refit.meta_step) == (3, 3, 4)
    # the adapted posteriors moved away from the prior, so the refit is not W's own logits
    assert not torch.allclose(refit.logits["alpha_normal"],
                              w_before["alpha_normal"].log_softmax(-1), atol=1e-4)


def test_components_are_the_log_mean_of_each_familys_tasks_alone():
    cfg = MetaConfig(**TINY)
    model, guide = _model_guide(cfg)
    tasks = _tasks(4)  # stratified: families 0, 1, 2, 3 of the source, one task each
    tasks = [tasks[0], tasks[1], dataclasses.replace(
        tasks[2], metadata={**tasks[2].metadata, "family": tasks[0].family})]
    refit = refit_architecture(model, guide, tasks, steps=2, temperature=0.5, seed=7)
    probs = []
    for c, task in enumerate(tasks):
        torch.manual_seed(task_seed(7, REFIT_STREAM, c))
        post, _ = guide.adapt(*task.support, n_classes=task.n_classes, temperature=0.5,
                              steps=2)
        probs.append({n: post.params[n].softmax(-1) for n in ("alpha_normal", "alpha_reduce")})
    a, b = tasks[0].family, tasks[1].family
    assert list(refit.components) == [a, b]
    for n in ("alpha_normal", "alpha_reduce"):
        torch.testing.assert_close(refit.components[a][n],
                                   ((probs[0][n] + probs[2][n]) / 2).log())
        torch.testing.assert_close(refit.components[b][n], probs[1][n].log())
        # the pooled logits are the components' mixture, weighted by their task counts
        mix = (2 * refit.components[a][n].exp() + refit.components[b][n].exp()) / 3
        torch.testing.assert_close(refit.logits[n], mix.log())
    back = ArchRefit.from_state(refit.to_state())
    for f, comp in refit.components.items():
        for n, v in comp.items():
            torch.testing.assert_close(back.components[f][n], v, rtol=0, atol=0)
    # one family, or none named: no components; a checkpoint from before them reads as none
    one = refit_architecture(model, guide, [tasks[0], tasks[2]], steps=2, temperature=0.5,
                             seed=7)
    assert one.components == {}
    old = {k: v for k, v in refit.to_state().items() if k != "components"}
    assert ArchRefit.from_state(old).components == {}
    with pytest.raises(ValueError, match="families has 2 entries for 3 tasks"):
        refit_mod.combine([probs[0]] * 3, steps=2, temperature=0.5, seed=0, families=[a, b])


def test_a_task_with_a_non_finite_loss_is_left_out_of_the_mean(caplog):
    cfg = MetaConfig(**TINY)
    model, guide = _model_guide(cfg)
    tasks = _tasks()
    bad = dataclasses.replace(tasks[1], support=(torch.full_like(tasks[1].support[0], np.nan),
                                                  tasks[1].support[1]))
    refit = refit_architecture(model, guide, [tasks[0], bad, tasks[2]], steps=2,
                               temperature=0.5, seed=0)
    assert (refit.tasks, refit.n_good) == (3, 2)
    assert "left out" in caplog.text
    probs = []
    for c in (0, 2):  # the good tasks keep their own seeds
        torch.manual_seed(task_seed(0, REFIT_STREAM, c))
        post, _ = guide.adapt(*tasks[c].support, n_classes=tasks[c].n_classes,
                              temperature=0.5, steps=2)
        probs.append(post.params["alpha_normal"].softmax(-1))
    torch.testing.assert_close(refit.logits["alpha_normal"], torch.stack(probs).mean(0).log())
    with pytest.raises(ValueError, match="none of the 1 tasks"):
        refit_architecture(model, guide, [bad], steps=2, temperature=0.5, seed=0)


def test_refit_refuses_no_tasks_and_no_steps():
    model, guide = _model_guide(MetaConfig(**TINY))
    with pytest.raises(ValueError, match="at least one task"):
        refit_architecture(model, guide, [], steps=2, temperature=0.5, seed=0)
    with pytest.raises(ValueError, match="at least one inner step"):
        refit_architecture(model, guide, _tasks(1), steps=0, temperature=0.5, seed=0)
    with pytest.raises(ValueError, match="at least one task"):
        refit_tasks(ProceduralTasks(image_size=16), 0, seed=0)


def test_refit_tasks_are_stratified_by_family_and_a_stream_of_their_own():
    source = ProceduralTasks(image_size=16, n_support=16, n_query=16)
    tasks = refit_tasks(source, 12, seed=3)
    k = len(source.families)
    assert [t.family for t in tasks] == [source.families[c % k] for c in range(12)]
    assert all(t.metadata["split"] == "train" for t in tasks)
    again = refit_tasks(source, 12, seed=3)
    assert [t.name for t in again] == [t.name for t in tasks]
    assert [t.name for t in refit_tasks(source, 12, seed=4)] != [t.name for t in tasks]
    # a larger refit adds tasks: its first 12 are these
    assert [t.name for t in refit_tasks(source, 24, seed=3)[:12]] == [t.name for t in tasks]
    # not the tasks meta-training draws at its steps (default_rng([seed, step, c]))
    meta = {source.sample("train", np.random.default_rng([3, e, c])).name
            for e in range(50) for c in range(4)}
    assert not meta & {t.name for t in tasks}


def test_arch_refit_round_trips_and_apply_replaces_only_the_logits():
    logits = {"alpha_normal": torch.randn(5, 8).log_softmax(-1)}
    refit = ArchRefit(logits=logits, tasks=4, n_good=3, steps=40, temperature=0.5, seed=1,
                      meta_step=100)
    back = ArchRefit.from_state(refit.to_state())
    assert back.settings() == refit.settings() and back.n_good == 3
    torch.testing.assert_close(back.logits["alpha_normal"], logits["alpha_normal"])
    state = {"alpha_normal": torch.zeros(5, 8), "mu": torch.ones(3)}
    applied = refit.apply(state)
    torch.testing.assert_close(applied["alpha_normal"], logits["alpha_normal"])
    assert applied["mu"] is state["mu"]
    with pytest.raises(KeyError, match="alpha_normal"):
        refit.apply({"mu": torch.ones(3)})


def test_refit_settings_are_checked():
    with pytest.raises(ConfigError, match="arch_refit_steps"):
        MetaConfig(**{**TINY, "arch_refit_steps": 0})
    with pytest.raises(ConfigError, match="arch_refit_tasks"):
        MetaConfig(**{**TINY, "arch_refit_tasks": -1})
    assert MetaConfig(**{**TINY, "arch_refit_tasks": 0}).arch_refit_tasks == 0


def test_an_old_run_file_without_the_setting_had_no_refit(tmp_path):
    cfg = MetaConfig(**TINY)
    path = tmp_path / "config.yaml"
    cfg.to_yaml(path)
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.startswith("arch_refit_tasks"))
    path.write_text(text + "\n")
    assert MetaConfig.from_run_file(path).arch_refit_tasks == 0


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("refit") / "run"
    result = meta_train_run(MetaConfig(steps=2, **TINY), run_dir=path, progress=False)
    return path, result


def test_the_job_keeps_meta_trained_w_and_adapts_from_the_refit(refit_run, tmp_path):
    path, result = refit_run
    plain = meta_train_run(MetaConfig(steps=2, **{**TINY, "arch_refit_tasks": 0}),
                           run_dir=tmp_path / "plain", progress=False)
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    # the checkpoint's W is meta-training's own, bit for bit
    for k, v in plain.svi.model.W.state_dict().items():
        torch.testing.assert_close(state["svi"]["W"][k], v, rtol=0, atol=0)
    refit = ArchRefit.from_state(state["arch_refit"])
    assert refit.settings() == {"tasks": 3, "steps": 2, "temperature": 0.5, "seed": 0,
                                "meta_step": 2}
    # the run's model (and so its report and prior genotype) holds the refit logits
    assert result.arch_refit is not None
    for k, v in refit.logits.items():
        torch.testing.assert_close(result.svi.model.W.state_dict()[k], v)
    # what adapts from the run: the refit logits, sharpened
    model, _, cfg, _ = load_trained(path)
    for k, v in refit.logits.items():
        torch.testing.assert_close(model.W.state_dict()[k], cfg.adapt_sharpness * v)
    summary = json.loads((path / "arch_refit.json").read_text())
    assert summary["tasks"] == 3 and summary["n_good"] == 3 and summary["seconds"] > 0
    assert set(summary["arch_entropy_per_cell_after"]) == {"normal", "reduce"}


def test_a_finished_run_resumed_with_the_same_settings_reuses_its_refit(refit_run,
                                                                        monkeypatch):
    path, first = refit_run

    def fail(*args, **kwargs):
        raise AssertionError("the refit was computed again")

    monkeypatch.setattr("pyro_base.inference.run.refit.refit_architecture", fail)
    again = meta_train_run(MetaConfig(steps=2, **TINY), run_dir=path, resume=True,
                           progress=False)
    for k, v in first.arch_refit.logits.items():
        torch.testing.assert_close(again.arch_refit.logits[k], v, rtol=0, atol=0)


def test_more_steps_resume_from_the_meta_trained_w_and_refit_again(tmp_path):
    cfg = MetaConfig(steps=3, **TINY)
    # a: refit after step 2, then resumed for a third step; b: no refit after step 2
    meta_train_run(cfg.replace(steps=2), run_dir=tmp_path / "a", progress=False)
    a = meta_train_run(cfg, run_dir=tmp_path / "a", resume=True, progress=False)
    meta_train_run(cfg.replace(steps=2, arch_refit_tasks=0), run_dir=tmp_path / "b",
                   progress=False)
    b = meta_train_run(cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["svi"]["W"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["svi"]["W"]
    for k in wa:  # the refit logits of step 2 did not leak into meta-step 3
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    assert a.arch_refit.meta_step == b.arch_refit.meta_step == 3
    for k, v in a.arch_refit.logits.items():
        torch.testing.assert_close(b.arch_refit.logits[k], v, rtol=0, atol=0)


def test_changed_refit_settings_on_resume_refit_again(refit_run, tmp_path, monkeypatch):
    path = tmp_path / "copy"
    shutil.copytree(refit_run[0], path)
    calls = []
    real = refit_mod.refit_architecture

    def counting(*args, **kwargs):
        calls.append(kwargs["steps"])
        return real(*args, **kwargs)

    monkeypatch.setattr("pyro_base.inference.run.refit.refit_architecture", counting)
    other = meta_train_run(MetaConfig(steps=2, **{**TINY, "arch_refit_steps": 3}),
                           run_dir=path, resume=True, progress=False)
    assert calls == [3] and other.arch_refit.steps == 3
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    assert state["arch_refit"]["steps"] == 3


def test_worker_processes_give_the_logits_of_one_process():
    cfg = MetaConfig(**{**TINY, "arch_refit_tasks": 4, "arch_refit_workers": 2})
    model, guide = _model_guide(cfg)
    svi = build_meta_svi(cfg, model, guide)
    dist = build_tasks(cfg, build_space(cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs
    try:
        one = compute_refit(cfg.replace(arch_refit_workers=1), svi, dist)
        two = compute_refit(cfg, svi, dist)
    finally:
        torch.set_num_threads(threads)
    assert two.settings() == one.settings() and two.n_good == one.n_good == 4
    for k, v in one.logits.items():
        torch.testing.assert_close(two.logits[k], v, rtol=0, atol=0)
    assert list(two.components) == list(one.components) and len(one.components) == 4
    for family, comp in one.components.items():
        for k, v in comp.items():
            torch.testing.assert_close(two.components[family][k], v, rtol=0, atol=0)


def test_resumed_with_the_refit_turned_off_adapts_from_meta_trainings_logits(refit_run,
                                                                            tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(refit_run[0], path)
    result = meta_train_run(MetaConfig(steps=2, **{**TINY, "arch_refit_tasks": 0}),
                            run_dir=path, resume=True, progress=False)
    assert result.arch_refit is None
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    assert "arch_refit" not in state
    model, _, cfg, _ = load_trained(path, sharpness=1.0)
    torch.testing.assert_close(model.W.state_dict()["alpha_normal"],
                               state["svi"]["W"]["alpha_normal"], rtol=0, atol=0)


def test_an_op_every_task_rules_out_keeps_a_finite_logit():
    probs = {"alpha_normal": torch.tensor([[1.0, 0.0], [0.5, 0.5]])}
    refit = refit_mod.combine([probs, probs], steps=1, temperature=0.5, seed=0)
    assert torch.isfinite(refit.logits["alpha_normal"]).all()
    torch.testing.assert_close(refit.logits["alpha_normal"].exp(), probs["alpha_normal"])
