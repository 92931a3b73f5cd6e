"""Posterior draws as ArviZ InferenceData: layout, LOO/compare, netCDF files, run directories."""

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import synthetic_task

from inference.guides import AdaptedPosterior, OptimizationEmbeddingGuide
from inference.posterior import (
    PRIOR,
    RunDirError,
    genotype_distribution,
    load_posterior,
    load_run,
    posterior_draws,
    save_posterior,
    select_task,
    to_inference_data,
)
from pyro_base.genotype import Genotype
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
    model, _, tasks, _, idata = toy_posterior
    space = model.space
    post = idata.posterior
    assert post["z_relaxed"].dims == ("chain", "draw", "task", "cell", "edge", "op")
    assert post["theta_norm"].dims == ("chain", "draw", "task", "layer")
    assert list(post["task"].values) == ["a", "b", PRIOR]
    assert list(post["edge"].values) == space.edge_labels()
    assert list(post["op"].values) == list(space.ops)
    assert list(post["cell"].values) == list(space.cell_types)
    summary = az.summary(idata, var_names=["op_probs", "z_hard", "theta_norm"], kind="stats")
    assert list(summary.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert "op_probs[a, normal, node2<-input0, none]" in summary.index
    assert "z_hard[prior, reduce, node3<-node2, dil_conv_5x5]" in summary.index
    assert np.isfinite(summary["mean"].to_numpy()).all()
    const = idata.constant_data
    assert list(const["family"].values) == ["toy3", "toy4", PRIOR]
    assert list(const["n_classes"].values) == [3, 4, space.n_classes]
    assert list(const["obs_task"].values) == ["a"] * 10 + ["b"] * 10
    genotype = Genotype.from_json(str(const["genotype"].values[0]))
    assert genotype.n_nodes() == space.nodes
    labels = np.concatenate([t.query[1].numpy() for t in tasks])
    np.testing.assert_array_equal(idata.observed_data["y"].values, labels)
    assert post.attrs["search_space_fingerprint"] == space.fingerprint()


def test_loo_is_finite_pooled_and_per_task(toy_posterior):
    idata = toy_posterior[4]
    loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo["elpd_loo"]) and loo["loo_i"].shape == (20,)
    per_task = [az.loo(select_task(idata, t))["elpd_loo"] for t in ("a", "b")]
    assert np.isfinite(per_task).all()
    np.testing.assert_allclose(sum(per_task), loo["elpd_loo"], rtol=1e-6)
    with pytest.raises(ValueError, match="task 'zzz' is not in this posterior"):
        select_task(idata, "zzz")


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
    assert genotype_distribution(back) == genotype_distribution(idata)


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
    assert genotype_distribution(to_inference_data(draws), source="relaxed") == dist


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
