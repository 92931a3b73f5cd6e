"""pyro_base.inference.evaluate.train: training a genotype from scratch, eval.json, resume, bad
input."""

import dataclasses
import json

import pytest
import torch

from pyro_base.genotype import Genotype, get_genotype
from pyro_base.inference.evaluate.train import EvalResult, TrainConfig, train_genotype
from pyro_base.tasks.procedural import ProceduralTasks
from pyro_base.training import OutOfMemory, oom_guard

G = get_genotype("DARTS_V2")


@pytest.fixture(scope="module")
def task():
    return ProceduralTasks(image_size=16, n_support=64, n_query=64).task("motif", 0, "test")


def _cfg(**kw):
    base = dict(epochs=2, batch_size=16, init_channels=4, layers=2, device="cpu")
    return TrainConfig.preset("cpu", **{**base, **kw})


def test_training_lowers_loss_and_writes_eval_json(task, tmp_path):
    r = train_genotype(G, task, _cfg(epochs=6, drop_path_prob=0.0), run_dir=tmp_path,
                       progress=False)
    assert r.train_losses[-1] < r.train_losses[0]
    assert len(r.train_losses) == 6 and len(r.step_losses) == r.steps == 6 * 4
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(EvalResult)}
    assert saved["top5"] is not None and 0 <= saved["top1"] <= saved["top5"] <= 1
    assert saved["params_M"] > 0 and saved["macs_M"] > 0 and saved["seconds"] > 0
    assert saved["n_classes"] == task.n_classes and saved["genotype"] == G.to_dict()
    assert (tmp_path / "checkpoint.pt").exists()


def test_auxiliary_cutout_and_steps_budget(task):
    cfg = _cfg(epochs=None, steps=3, auxiliary=True, cutout=4, flip=True, layers=3)
    r = train_genotype(G, task, cfg, progress=False)
    assert r.steps == 3 and r.epochs == 1


def test_resume_equals_uninterrupted(task, tmp_path):
    cfg = _cfg(deterministic=True, auxiliary=True, cutout=4)
    full = train_genotype(G, task, cfg, run_dir=tmp_path / "a", progress=False)

    class Crash(Exception):
        pass

    def crash(epoch, _info):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train_genotype(G, task, cfg, run_dir=tmp_path / "b", progress=False, callback=crash)
    resumed = train_genotype(G, task, cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.resumed_at_epoch == 1 and resumed.epochs == 2
    assert resumed.step_losses == full.step_losses
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.top1 == full.top1
    with pytest.raises(ValueError, match="different settings"):
        train_genotype(G, task, cfg.replace(lr=0.1), run_dir=tmp_path / "b", resume=True,
                       progress=False)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train_genotype(G, task, cfg, run_dir=tmp_path / "b", progress=False)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="epochs and steps"):
        TrainConfig(epochs=2, steps=3)
    with pytest.raises(ValueError, match="drop_path_prob"):
        TrainConfig(drop_path_prob=1.5)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="preset"):
        TrainConfig.preset("laptop")
    d = TrainConfig.preset("darts")
    assert (d.epochs, d.batch_size, d.init_channels, d.layers, d.auxiliary) == (600, 96, 36, 20,
                                                                               True)
    assert TrainConfig.from_dict(d.to_dict()) == d


def test_data_that_does_not_fit(task):
    (xs, ys), (xq, yq) = task.support, task.query
    msg = r"labels lie in \[0, \d\] but the network has n_classes=3"
    with pytest.raises(ValueError, match=msg):
        train_genotype(G, task, _cfg(n_classes=3), progress=False)
    with pytest.raises(ValueError, match="1 channels but the network expects in_channels=3"):
        train_genotype(G, ((xs[:, :1], ys), (xq[:, :1], yq)), _cfg(in_channels=3),
                       progress=False)
    with pytest.raises(ValueError, match="halve the resolution 5 times"):
        tiny = ((xs[:, :, :8, :8], ys), (xq[:, :, :8, :8], yq))
        train_genotype(G, tiny, _cfg(stem="imagenet"), progress=False)
    with pytest.raises(ValueError, match="differ in shape"):
        train_genotype(G, ((xs, ys), (xq[:, :, :8, :8], yq)), _cfg(), progress=False)


def test_oom_is_reraised_with_advice():
    with pytest.raises(OutOfMemory, match=r"smaller --batch-size \(e.g. 48\).*fewer channels"):
        with oom_guard("training", batch_size=96, init_channels=36, layers=20):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_cpu_preset_trains_a_procedural_task_well_above_chance():
    """The recipe's budget is enough to train: 8 epochs (56 steps) of the old preset left
    cells near chance on these 200-image tasks."""
    task = ProceduralTasks(image_size=16, n_support=200, n_query=200).task("motif", 0, "test")
    cell = [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0]]
    sep = Genotype.from_dict({"normal": cell, "normal_concat": [2, 3], "reduce": cell,
                              "reduce_concat": [2, 3]})
    r = train_genotype(sep, task, TrainConfig.preset("cpu", device="cpu"),
                       progress=False)
    assert r.steps == 800
    assert r.top1 > 0.6 > 4 / task.n_classes, (r.top1, task.n_classes)
