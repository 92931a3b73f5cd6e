"""Posterior draws as ArviZ InferenceData: layout, LOO/compare, netCDF files, run directories."""

import json
import warnings

import numpy as np
import pyro
import pytest
import torch
from conftest import synthetic_task

from pyro_base.genotype import decode
from pyro_base.inference.posterior.draws import (
    PRIOR,
    RunDirError,
    genotype_distribution,
    load_posterior,
    load_run,
    posterior_draws,
    recorded_genotypes,
    save_posterior,
    select_task,
    to_inference_data,
)
from pyro_base.inference.vi.guides import AdaptedPosterior, OptimizationEmbeddingGuide
from pyro_base.search_space import SearchSpace

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

# tiny toy posteriors give large Pareto k; the values are still finite
pytestmark = [pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto"),
              pytest.mark.filterwarnings("ignore:The inplace keyword")]   # arviz + pandas 3


def test_draw_shapes_and_simplex(toy_posterior):
    model, _, _, draws, _ = toy_posterior
    space = model.space
    shape = (2, 20, 3, len(space.cell_types), space.n_edges, space.n_ops)
    assert draws.z_relaxed.shape == draws.z_hard.shape == draws.op_probs.shape == shape
    np.testing.assert_allclose(draws.z_relaxed.sum(-1), 1.0, atol=1e-5)
    assert (draws.z_hard.sum(-1) == 1).all()
    assert (draws.z_hard.argmax(-1) == draws.z_relaxed.argmax(-1)).all()
    # op_probs: deterministic per chain, so constant along draw
    assert np.ptp(draws.op_probs, axis=1).max() == 0
    assert draws.theta_norm.shape == (2, 20, 3, len(model.spec.names))
    assert [ll.shape for ll in draws.log_lik] == [(2, 20, 10), (2, 20, 10), (2, 20, 0)]
    assert all(np.isfinite(ll).all() and (ll <= 0).all() for ll in draws.log_lik)
    assert [yp.shape for yp in draws.y_pred] == [(2, 20, 10), (2, 20, 10), (2, 20, 0)]
    assert all(int(yp.max()) < n for yp, n in zip(draws.y_pred[:2], (3, 4), strict=True))
    assert all((yp >= 0).all() for yp in draws.y_pred)
    # 3 inner steps per chain and task; the prior (last task) has none
    assert draws.inner_loss.shape == (2, 3, 3)
    assert np.isfinite(draws.inner_loss[:, :2]).all() and np.isnan(draws.inner_loss[:, 2]).all()


def test_values_match_a_direct_computation(tiny_model):
    """Delta posterior: theta = mu, so layer norms and log-likelihoods can be recomputed."""
    model, task = tiny_model, synthetic_task("c", 3, 2)
    guide = OptimizationEmbeddingGuide(model, weight_posterior="delta")
    post = guide.prior_posterior()
    draws = posterior_draws(model, {"c": post}, [task], 4, temperature=0.5, seed=1,
                            theta_depth=2)
    mu = post.params["mu"]
    slices = model.spec.layer_slices()
    assert draws.layers[0] == "stem.0" and "classifier.weight" in draws.layers
    expected = [float(sum((mu[s] ** 2).sum() for n, s in slices.items()
                          if ".".join(n.split(".")[:2]) == layer).sqrt())
                for layer in draws.layers]
    np.testing.assert_allclose(draws.theta_norm[0, 0, 0], expected, rtol=1e-5)
    z = {c: torch.from_numpy(draws.z_relaxed[0, 3, 0, i])
         for i, c in enumerate(model.space.cell_types)}
    (xq, yq) = task.query
    with torch.no_grad():
        logp = model.net_logits(xq, mu, z, 3).log_softmax(-1)
    np.testing.assert_allclose(draws.log_lik[0][0, 3], logp[torch.arange(10), yq], atol=1e-4)
    np.testing.assert_allclose(draws.op_probs[0, 0, 0, 0], post.op_probs()["normal"])


def test_summary_dims_and_coords(toy_posterior):
    model, _, tasks, draws, idata = toy_posterior
    space = model.space
    post = idata.posterior
    assert set(post.data_vars) == {"z_relaxed", "theta_norm"}
    assert post["z_relaxed"].dims == ("chain", "draw", "task", "cell", "edge", "op")
    assert post["theta_norm"].dims == ("chain", "draw", "task", "layer")
    assert list(post["task"].values) == ["a", "b"]            # the prior is its own group
    assert list(post["edge"].values) == space.edge_labels()
    assert list(post["op"].values) == list(space.ops)
    assert list(post["cell"].values) == list(space.cell_types)
    np.testing.assert_array_equal(post["z_relaxed"].values, draws.z_relaxed[:, :, :2])
    np.testing.assert_array_equal(post["theta_norm"].values, draws.theta_norm[:, :, :2])
    # op_probs are the same in every draw of a chain: constant_data, one value per chain
    const = idata.constant_data
    assert const["op_probs"].dims == ("chain", "task", "cell", "edge", "op")
    np.testing.assert_array_equal(const["op_probs"].values, draws.op_probs[:, 0, :2])
    assert list(const["family"].values) == ["toy3", "toy4"]
    assert list(const["n_classes"].values) == [3, 4]
    assert list(const["n_query"].values) == [10, 10]
    assert list(const["task"].values) == ["a", "b"]
    labels = np.concatenate([t.query[1].numpy() for t in tasks])
    np.testing.assert_array_equal(idata.observed_data["y"].values, labels)
    assert post.attrs["search_space_fingerprint"] == space.fingerprint()
    assert post.attrs["pyro_base_format_version"] == 2


def test_summary_has_no_constant_variables(toy_posterior):
    """Every posterior entry varies across draws, so az.summary warns about nothing."""
    idata = toy_posterior[4]
    for name, var in idata.posterior.data_vars.items():
        assert (var.max("draw") > var.min("draw")).all(), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = az.summary(idata)
        prior = az.summary(idata, group="prior", var_names=["z_relaxed", "theta_norm"])
    assert np.isfinite(summary.to_numpy(dtype=float)).all()
    assert np.isfinite(prior.to_numpy(dtype=float)).all()
    assert "z_relaxed[a, normal, node2<-input0, none]" in summary.index
    assert not any("op_probs" in row or "prior" in row for row in summary.index)
    assert "theta_norm[b, classifier.bias]" in summary.index


def test_prior_group_is_W(toy_posterior):
    model, guide, _, draws, idata = toy_posterior
    space = model.space
    prior = idata.prior
    W = model.W.named_tensors()
    assert prior["op_probs"].dims == ("cell", "edge", "op")
    for c in space.cell_types:
        expected = W[f"alpha_{c}"].detach().softmax(-1).numpy()
        np.testing.assert_allclose(prior["op_probs"].sel(cell=c).values, expected, rtol=1e-6)
    assert prior["z_relaxed"].dims == ("chain", "draw", "cell", "edge", "op")
    np.testing.assert_array_equal(prior["z_relaxed"].values, draws.z_relaxed[:, :, 2])
    np.testing.assert_array_equal(prior["theta_norm"].values, draws.theta_norm[:, :, 2])
    genotypes = recorded_genotypes(idata)
    assert list(genotypes) == ["a", "b", PRIOR]
    assert genotypes[PRIOR] == guide.prior_posterior().genotype(space)
    assert json.loads(idata.posterior.attrs["prior_genotype"]) == genotypes[PRIOR].to_dict()
    for t, task in enumerate(("a", "b")):   # the mode of the chain-mean op probabilities
        mean = draws.op_probs[:, 0, t].mean(axis=0)
        assert genotypes[task] == decode(dict(zip(space.cell_types, mean, strict=True)),
                                         space=space)
    assert set(json.loads(idata.attrs["genotypes"])) == {"a", "b"}


def test_obs_carry_a_task_coordinate(toy_posterior, tmp_path):
    tasks, draws, idata = toy_posterior[2], toy_posterior[3], toy_posterior[4]
    back = load_posterior(save_posterior(idata, tmp_path))
    for data in (idata, back):
        for group in ("observed_data", "log_likelihood", "posterior_predictive"):
            ds = data[group]
            assert list(ds["task"].values) == ["a"] * 10 + ["b"] * 10, group
            np.testing.assert_array_equal(ds["obs"].values, np.arange(20))
        obs = data.observed_data
        for t, task in enumerate(tasks):
            np.testing.assert_array_equal(obs.sel(task=task.name)["y"].values,
                                          task.query[1].numpy())
            np.testing.assert_array_equal(data.log_likelihood.sel(task=task.name)["y"].values,
                                          draws.log_lik[t])
        counts = obs["y"].groupby("task").count()
        assert dict(zip(counts["task"].values, counts.values, strict=True)) == {"a": 10, "b": 10}
        mean_ll = data.log_likelihood["y"].mean(("chain", "draw")).groupby("task").mean()
        np.testing.assert_allclose(mean_ll.sel(task="b"), draws.log_lik[1].mean(), rtol=1e-10)


def test_sample_stats_inner_loss(tiny_model, toy_posterior):
    _, guide, tasks, draws, idata = toy_posterior
    stats = idata.sample_stats
    assert set(stats.data_vars) == {"inner_loss"}
    assert stats["inner_loss"].dims == ("chain", "task", "step")
    assert list(stats["task"].values) == ["a", "b"] and list(stats["step"].values) == [1, 2, 3]
    np.testing.assert_array_equal(stats["inner_loss"].values, draws.inner_loss[:, :2])
    # the first random numbers of posterior_draws(seed=0) are chain 0 of task "a"
    pyro.set_rng_seed(0)
    (xs, ys) = tasks[0].support
    _, losses = guide.adapt(xs, ys, n_classes=3, temperature=0.5)
    np.testing.assert_allclose(stats["inner_loss"].sel(chain=0, task="a").values, losses,
                               rtol=1e-5)
    # given posteriors: their losses as passed (shared or per chain), NaN-padded, or none
    post = guide.prior_posterior()
    t = [synthetic_task("c", 3, 2), synthetic_task("d", 3, 3)]
    given = posterior_draws(tiny_model, {"c": post, "d": post}, t, 4, temperature=0.5,
                            num_chains=2, inner_losses={"c": [3.0, 2.0, 1.5],
                                                        "d": [[2.0], [2.5, 2.2]]})
    loss = to_inference_data(given).sample_stats["inner_loss"]
    np.testing.assert_array_equal(loss.sel(task="c").values, [[3.0, 2.0, 1.5]] * 2)
    np.testing.assert_array_equal(loss.sel(task="d").values,
                                  [[2.0, np.nan, np.nan], [2.5, 2.2, np.nan]])
    bare = posterior_draws(tiny_model, {"c": post}, t[:1], 4, temperature=0.5)
    assert "sample_stats" not in to_inference_data(bare).groups()
    with pytest.raises(ValueError, match=r"inner_losses\['c'\] has 1 sequences .chains.; "
                                         r"expected num_chains=2"):
        posterior_draws(tiny_model, {"c": post}, t[:1], 2, temperature=0.5, num_chains=2,
                        inner_losses={"c": [[1.0, 2.0]]})


def test_posterior_predictive_and_plot_ppc(toy_posterior):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    draws, idata = toy_posterior[3], toy_posterior[4]
    pred = idata.posterior_predictive["y"]
    assert pred.dims == ("chain", "draw", "obs")
    for name in ("obs", "task"):
        np.testing.assert_array_equal(pred[name].values, idata.observed_data[name].values)
    np.testing.assert_array_equal(pred.values, np.concatenate(draws.y_pred[:2], axis=-1))
    assert pred.sel(task="a").values.max() < 3 and pred.sel(task="b").values.max() < 4
    assert pred.values.min() >= 0
    # labels are drawn from p(y | x, theta_s, z_s): the rate at which they hit the observed
    # label is the mean of exp(log_lik) (800 draws: sd about 0.02)
    hit = (pred == idata.observed_data["y"]).mean().item()
    expected = np.exp(idata.log_likelihood["y"]).mean().item()
    assert abs(hit - expected) < 0.08
    axes = az.plot_ppc(idata, num_pp_samples=10, random_seed=0)
    labels = [t.get_text() for t in np.ravel(axes)[0].get_legend().get_texts()]
    assert any("Observed" in label for label in labels)
    plt.close("all")


def test_delta_posterior_puts_theta_norm_in_constant_data(tiny_model):
    guide = OptimizationEmbeddingGuide(tiny_model, weight_posterior="delta")
    post = guide.prior_posterior()
    draws = posterior_draws(tiny_model, {"c": post, PRIOR: post}, [synthetic_task("c", 3, 2)],
                            5, temperature=0.5, num_chains=2, include_prior=True, seed=0)
    assert np.ptp(draws.theta_norm, axis=1).max() == 0            # theta = mu in every draw
    idata = to_inference_data(draws)
    assert set(idata.posterior.data_vars) == {"z_relaxed"}
    norm = idata.constant_data["theta_norm"]
    assert norm.dims == ("chain", "task", "layer")
    np.testing.assert_array_equal(norm.values, draws.theta_norm[:, 0, :1])
    assert idata.prior["theta_norm"].dims == ("layer",)
    np.testing.assert_array_equal(idata.prior["theta_norm"].values, draws.theta_norm[0, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(az.summary(idata).to_numpy(dtype=float)).all()


def test_loo_is_finite_pooled_and_per_task(toy_posterior):
    idata = toy_posterior[4]
    loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo["elpd_loo"]) and loo["loo_i"].shape == (20,)
    per_task = [az.loo(select_task(idata, t))["elpd_loo"] for t in ("a", "b")]
    assert np.isfinite(per_task).all()
    np.testing.assert_allclose(sum(per_task), loo["elpd_loo"], rtol=1e-6)
    with pytest.raises(ValueError, match="task 'zzz' is not in this posterior"):
        select_task(idata, "zzz")


def test_select_task_keeps_one_task_and_the_prior(toy_posterior):
    draws, idata = toy_posterior[3], toy_posterior[4]
    b = select_task(idata, "b")
    assert set(b.groups()) == set(idata.groups())
    for group in ("posterior", "constant_data", "sample_stats"):
        assert list(b[group]["task"].values) == ["b"], group
    for group in ("observed_data", "log_likelihood", "posterior_predictive"):
        assert list(b[group]["task"].values) == ["b"] * 10, group
    np.testing.assert_array_equal(b.log_likelihood["y"].values, draws.log_lik[1])
    np.testing.assert_array_equal(b.posterior_predictive["y"].values, draws.y_pred[1])
    np.testing.assert_array_equal(b.prior["op_probs"].values, idata.prior["op_probs"].values)
    assert b.observed_data.sel(task="b")["y"].shape == (10,)


def test_compare_ranks_adapted_above_prior(tiny_model):
    task = synthetic_task("easy", 2, 3, n_support=24, n_query=16, shift=1.0)
    guide = OptimizationEmbeddingGuide(tiny_model, inner_steps=10, inner_lr=0.05)
    fits = {"adapted": guide, "prior": guide.prior_posterior()}
    idatas = {k: to_inference_data(posterior_draws(tiny_model, src, [task], 20,
                                                   temperature=0.5, seed=1))
              for k, src in fits.items()}
    table = az.compare(idatas)
    assert list(table.index) == ["adapted", "prior"]
    assert table.loc["prior", "elpd_diff"] > 2 * table.loc["prior", "dse"]


def test_netcdf_round_trip(toy_posterior, tmp_path):
    model, _, _, _, idata = toy_posterior
    path = save_posterior(idata, tmp_path)
    assert path == tmp_path / "posterior.nc" and path.stat().st_size > 0
    back = load_posterior(path, space=model.space)
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        a, b = idata[group], back[group]
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            assert a[name].dims == b[name].dims
            np.testing.assert_array_equal(a[name].values, b[name].values)
        for dim in a.coords:
            np.testing.assert_array_equal(a[dim].values, b[dim].values)
    assert back.posterior.attrs["search_space"] == idata.posterior.attrs["search_space"]
    assert back.attrs["genotypes"] == idata.attrs["genotypes"]
    assert recorded_genotypes(back) == recorded_genotypes(idata)
    assert genotype_distribution(back) == genotype_distribution(idata)
    # the hard draws are the argmax of the relaxed ones: the same as the draws' own z_hard
    assert genotype_distribution(back, top=1000) == genotype_distribution(toy_posterior[3],
                                                                          top=1000)


def test_load_rejects_other_spaces_and_files(toy_posterior, tmp_path):
    path = save_posterior(toy_posterior[4], tmp_path / "posterior.nc")
    other = SearchSpace.preset("tiny", nodes=3)
    with pytest.raises(ValueError, match=r"search space mismatch for .*posterior\.nc.*nodes: "
                                         r"2 there, 3 given"):
        load_posterior(path, space=other)
    foreign = tmp_path / "foreign.nc"
    az.from_dict(posterior={"x": np.zeros((1, 5))}).to_netcdf(str(foreign))
    with pytest.raises(ValueError, match=r"foreign\.nc is not a pyro-base posterior file"):
        load_posterior(foreign)
    text = tmp_path / "notes.nc"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.nc is not a readable netCDF"):
        load_posterior(text)
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        load_posterior(tmp_path / "missing.nc")
    idata = toy_posterior[4]
    groups = {g: idata[g].copy() for g in idata.groups()}
    groups["posterior"].attrs = {**idata.posterior.attrs, "pyro_base_format_version": 1}
    old = az.InferenceData(**groups)
    path = save_posterior(old, tmp_path / "old.nc")
    with pytest.raises(ValueError, match=r"old\.nc has posterior layout version 1; this "
                                         r"pyro-base reads version 2"):
        load_posterior(path)


def test_genotype_distribution_of_a_peaked_posterior(tiny_model):
    space = tiny_model.space
    W = tiny_model.W.named_tensors()
    params = {k: v.detach().clone() for k, v in W.items()}
    for c in space.cell_types:   # every edge: sep_conv_3x3 >> the others
        params[f"alpha_{c}"][:, space.ops.index("sep_conv_3x3")] = 30.0
    post = AdaptedPosterior(params, cells=space.cell_types, relaxation=tiny_model.relaxation)
    draws = posterior_draws(tiny_model, {"p": post}, [synthetic_task("p", 3, 4)], 10,
                            temperature=0.5, num_chains=2, seed=0)
    dist = genotype_distribution(draws)
    assert dist == {"p": [(post.genotype(space), 1.0)]}
    idata = to_inference_data(draws)
    assert genotype_distribution(idata, source="relaxed") == dist
    assert genotype_distribution(idata) == dist
    assert recorded_genotypes(idata) == {"p": post.genotype(space)}


def test_genotype_distribution_frequencies(toy_posterior):
    draws, idata = toy_posterior[3], toy_posterior[4]
    full = genotype_distribution(idata, top=1000)
    for task, rows in full.items():
        freqs = [f for _, f in rows]
        assert freqs == sorted(freqs, reverse=True) and abs(sum(freqs) - 1) < 1e-9, task
    assert all(len(v) <= 2 for v in genotype_distribution(draws, top=2).values())
    with pytest.raises(ValueError, match="top must be >= 1"):
        genotype_distribution(draws, top=0)


def test_bad_inputs(tiny_model):
    guide = OptimizationEmbeddingGuide(tiny_model, inner_steps=1)
    t = synthetic_task("a", 3, 0)
    with pytest.raises(ValueError, match="distinct and not 'prior'"):
        posterior_draws(tiny_model, guide, [t, t], 2, temperature=0.5)
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        posterior_draws(tiny_model, guide, [t], 0, temperature=0.5)
    with pytest.raises(ValueError, match=r"no posterior for task 'a'; the mapping has \['b'\]"):
        posterior_draws(tiny_model, {"b": guide.prior_posterior()}, [t], 2, temperature=0.5)
    with pytest.raises(ValueError, match="include_prior needs a guide"):
        posterior_draws(tiny_model, guide.prior_posterior(), [t], 2, temperature=0.5,
                        include_prior=True)
    with pytest.raises(ValueError, match="has 1 posteriors .chains.; expected num_chains=2"):
        posterior_draws(tiny_model, {"a": [guide.prior_posterior()]}, [t], 2, temperature=0.5,
                        num_chains=2)


def _write_run(run_dir, *, checkpoint=True):
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("space: tiny\nsteps: 2\n")
    records = [{"step": s, "loss": 2.0 - s, "temperature": 1.0, "meta_lr": 1.0,
                "arch_entropy": 2.0, "param_free_ops": 0, "n_good": 1, "n_tasks": 1,
                "tasks": [{"task": "t", "family": "f", "inner_first": 1.0, "inner_last": 0.5,
                           "query_loss": 0.7}]} for s in range(2)]
    records.append({"event": "adapt", "task": "a", "family": "toy3", "query_accuracy": 0.5,
                    "steps": 3})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    if checkpoint:
        (run_dir / "checkpoint.pt").write_bytes(b"\0")
    return run_dir


def test_load_run_missing_checkpoint(tmp_path):
    run = _write_run(tmp_path / "run", checkpoint=False)
    with pytest.raises(RunDirError, match=r"run directory .*run has no checkpoint\.pt .*"
                                          r"it holds: config\.yaml, metrics\.jsonl"):
        load_run(run)
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (run / "checkpoint.pt").write_bytes(b"\0")
    loaded = load_run(run)
    assert [m["step"] for m in loaded.metrics] == [0, 1]
    assert loaded.adapt_events[0]["query_accuracy"] == 0.5
    assert loaded.config() == {"space": "tiny", "steps": 2}
    assert loaded.posterior is None and loaded.genotypes() == {}
    with pytest.raises(RunDirError, match="has no posterior.nc"):
        load_run(run, require=("checkpoint.pt", "posterior.nc"))
    (run / "metrics.jsonl").write_text('{"step": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2 must be a JSON object"):
        load_run(run)
