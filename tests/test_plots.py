"""Plot functions (image files of the expected size) and scripts/plot_posterior.py."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyro_base.genotype import get_genotype, plot_cell
from pyro_base.inference.posterior.draws import load_run, recorded_genotypes, save_posterior
from pyro_base.inference.report.plots import (
    plot_genotype,
    plot_metrics,
    plot_op_forest,
    plot_op_heatmap,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_posterior.py"


def _png_size(path):
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"))
        assert pixels.min() < 128 < pixels.max()        # something was drawn
        return im.size


def _metrics(tmp_path, adapt=True):
    rows = [{"step": s, "loss": 2.0 / (s + 1), "temperature": 1.0 - 0.1 * s, "meta_lr": 1.0,
             "arch_entropy": 2.0 - 0.01 * s, "param_free_ops": 1, "n_good": 2, "n_tasks": 2,
             "tasks": [{"task": f"t{i}", "family": "toy", "inner_first": 1.5 - 0.1 * s,
                        "inner_last": 1.0 - 0.1 * s, "query_loss": 1.2 - 0.1 * s}
                       for i in range(2)]} for s in range(8)]
    if adapt:
        rows += [{"event": "adapt", "task": t, "family": "toy", "query_accuracy": acc,
                  "steps": steps} for t, acc, steps in (("a", 0.6, 3), ("b", 0.4, 3),
                                                       ("a", 0.3, 0))]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_heatmap_size(toy_posterior, tmp_path):
    out = plot_op_heatmap(toy_posterior[4], tmp_path / "h_a.png", task="a",
                          figsize=(8.0, 3.5), dpi=50)
    assert _png_size(out) == (400, 175)
    auto = plot_op_heatmap(toy_posterior[4], tmp_path / "h_prior.png", task="prior", dpi=40)
    assert min(_png_size(auto)) > 100


def test_forest_size_and_svg(toy_posterior, tmp_path):
    idata = toy_posterior[4]
    out = plot_op_forest(idata, tmp_path / "f.png", cell="reduce", figsize=(9.0, 6.0), dpi=40)
    assert _png_size(out) == (360, 240)
    svg = plot_op_forest(idata, tmp_path / "f.svg", cell="normal", tasks=["b", "prior"])
    text = svg.read_text()
    assert "<svg" in text and "node3&lt;-node2" in text and "sep_conv_3x3" in text
    with pytest.raises(ValueError, match="cell 'other' is not in the posterior"):
        plot_op_forest(idata, tmp_path / "x.png", cell="other")


def test_genotype_cell_size(tmp_path):
    g = get_genotype("BASE_CIFAR")
    out = plot_genotype(g, tmp_path / "cell.png", cell="reduce", dpi=60)
    w, h = plot_cell(g, cell="reduce").get_size_inches() * 60
    assert _png_size(out) == (round(w), round(h))


def test_metrics_size_from_path_and_records(tmp_path):
    path = _metrics(tmp_path)
    out = plot_metrics(path, tmp_path / "curves.png", figsize=(8.0, 6.0), dpi=50)
    assert _png_size(out) == (400, 300)
    run = load_run(tmp_path, require=("metrics.jsonl",))
    out = plot_metrics(run.metrics, tmp_path / "no_events.png", dpi=30)   # no adapt events
    assert _png_size(out) == (300, 210)


def test_bad_plot_arguments(toy_posterior, tmp_path):
    with pytest.raises(ValueError, match=r"h\.jpg must end in one of"):
        plot_op_heatmap(toy_posterior[4], tmp_path / "h.jpg", task="a")
    with pytest.raises(ValueError, match=r"task 'zzz' is not in the posterior; tasks: \['a'"):
        plot_op_heatmap(toy_posterior[4], tmp_path / "h.png", task="zzz")


def test_script_help():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "RUN_DIR" in r.stdout and "--format" in r.stdout


def _load_script():
    return importlib.import_module("pyro_base.inference.commands.plot")


def test_script_on_a_fake_run(toy_posterior, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    module = _load_script()
    assert module.cli([str(run)]) == 2
    assert "has no posterior.nc, metrics.jsonl" in capsys.readouterr().err
    save_posterior(toy_posterior[4], run)
    _metrics(run)
    (run / "genotypes").mkdir()
    get_genotype("BASE_CIFAR").save(run / "genotypes" / "a.json")
    prior = recorded_genotypes(toy_posterior[4])["prior"]
    prior.save(run / "prior_genotype.json")
    assert module.cli([str(run), "--out", str(tmp_path / "figs"), "--dpi", "40"]) == 0
    listed = capsys.readouterr().out.split()
    names = sorted(Path(p).name for p in listed)
    expected = sorted([f"heatmap_{t}.png" for t in ("a", "b", "prior")]
                      + [f"cell_{t}_{c}.png" for t in ("a", "b", "prior")
                         for c in ("normal", "reduce")]
                      + ["forest_normal.png", "forest_reduce.png", "curves.png"])
    assert names == expected
    assert all(Path(p).stat().st_size > 0 for p in listed)
