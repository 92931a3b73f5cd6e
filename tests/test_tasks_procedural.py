"""Tests for the procedural task families (the embedded default task source)."""

import copy
import hashlib
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from pyro_base.tasks import Task, TaskDistribution, get_task_distribution, list_task_distributions
from pyro_base.tasks.procedural import FAMILIES, ProceduralTasks

torch.set_num_threads(1)


def _digest(task: Task) -> str:
    h = hashlib.sha256()
    for t in (*task.support, *task.query):
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_labels_metadata(family):
    dist = ProceduralTasks(families=(family,), n_support=60, n_query=40)
    for seed in range(3):
        task = dist.task(family, seed, "train")
        (x, y), (xq, yq) = task.support, task.query
        assert x.shape == (60, 3, 16, 16) and xq.shape == (40, 3, 16, 16)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert 5 <= task.n_classes <= 10
        for labels in (y, yq):
            counts = torch.bincount(labels, minlength=task.n_classes)
            assert len(counts) == task.n_classes and int(counts.max() - counts.min()) <= 1
        assert torch.isfinite(x).all()
        assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.6  # roughly standardised
        meta = task.metadata
        assert meta["family"] == family and meta["seed"] == seed and meta["split"] == "train"
        assert meta["source"] == "procedural" and len(meta["class_names"]) == task.n_classes
        assert len(set(meta["class_names"])) == task.n_classes


def test_configurable_size_and_classes_and_fast():
    dist = ProceduralTasks(image_size=24, n_classes=(3, 4), n_support=30, n_query=20)
    for family in FAMILIES:
        task = dist.task(family, 1)
        assert task.image_shape == (3, 24, 24) and 3 <= task.n_classes <= 4
    default = ProceduralTasks(cache_size=0)
    for family in FAMILIES:
        t0 = time.perf_counter()
        default.task(family, 7)
        # well under 0.2 s on an idle core; generous bound for a loaded CI machine
        assert time.perf_counter() - t0 < 1.0


def test_determinism_across_processes():
    dist = ProceduralTasks(n_support=50, n_query=50)
    here = [_digest(dist.task(f, 11, "test")) for f in FAMILIES]
    code = (
        "import hashlib; from pyro_base.tasks.procedural import FAMILIES, ProceduralTasks\n"
        "d = ProceduralTasks(n_support=50, n_query=50)\n"
        "for f in FAMILIES:\n"
        "    t = d.task(f, 11, 'test'); h = hashlib.sha256()\n"
        "    for a in (*t.support, *t.query): h.update(a.numpy().tobytes())\n"
        "    print(h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == here


def test_splits_and_seeds_disjoint():
    dist = ProceduralTasks(n_support=20, n_query=20, cache_size=0)
    digests = {
        (f, s, seed): _digest(dist.task(f, seed, s))
        for f in FAMILIES
        for s in ("train", "val", "test")
        for seed in range(3)
    }
    assert len(set(digests.values())) == len(digests)
    assert _digest(dist.task("motif", 2, "val")) == digests[("motif", "val", 2)]


def test_registry_sample_tasks_and_cache():
    assert {"procedural", "digits"} <= set(list_task_distributions())
    dist = get_task_distribution("procedural", families=("motif", "relation"), n_support=20,
                                 n_query=20, n_tasks_per_split=6, cache_size=3)
    assert isinstance(dist, TaskDistribution)
    a = dist.sample("train", np.random.default_rng(4))
    b = dist.sample("train", np.random.default_rng(4))
    assert a is b and a.family in ("motif", "relation") and a.metadata["seed"] < 6
    tasks = dist.tasks("val")
    assert len(tasks) == 6 and [t.family for t in tasks[:4]] == ["motif", "relation"] * 2
    assert [t.metadata["seed"] for t in tasks] == [0, 0, 1, 1, 2, 2]
    assert len(dist._cache) == 3
    assert dist.task("motif", 2, "val") is tasks[4]  # still cached


def test_a_family_listed_twice_is_drawn_twice_as_often_and_held_out_once():
    """Listing a family ``k`` times weights ``sample`` (and the stratified refit's task list)
    by ``k``; ``tasks`` and ``distinct_families`` keep each family once, in first-seen order."""
    from pyro_base.inference.evaluate.paired import family_tasks
    from pyro_base.inference.vi.arch_refit import refit_tasks

    dist = ProceduralTasks(families=("relation", "motif", "relation"), n_support=20, n_query=20,
                           n_tasks_per_split=1, cache_size=4)
    assert dist.distinct_families == ("relation", "motif")
    drawn = [dist.sample("train", np.random.default_rng([7, i])).family for i in range(600)]
    share = drawn.count("relation") / len(drawn)
    assert abs(share - 2 / 3) < 4 * (2 / 9 / len(drawn)) ** 0.5  # binomial, 4 sd
    names = [t.name for t in dist.tasks("test", 4)]
    assert len(set(names)) == 4
    assert [t.family for t in dist.tasks("test", 4)] == ["relation", "motif"] * 2
    families = [t.family for t in refit_tasks(dist, 6, seed=0)]
    assert families.count("relation") == 4 and families.count("motif") == 2
    assert list(family_tasks(dist, 1)) == ["relation", "motif"]  # the evaluation's tasks


def test_bad_config():
    with pytest.raises(ValueError, match="families"):
        ProceduralTasks(families=("motif", "spirals"))
    with pytest.raises(ValueError, match="n_classes"):
        ProceduralTasks(n_classes=(5, 11))
    with pytest.raises(ValueError, match="image_size"):
        ProceduralTasks(image_size=8)
    with pytest.raises(ValueError, match="n_support"):
        ProceduralTasks(n_support=4)
    with pytest.raises(ValueError, match="split"):
        ProceduralTasks().task("motif", 0, "dev")
    with pytest.raises(ValueError, match="family"):
        ProceduralTasks().task("spirals", 0)
    with pytest.raises(TypeError):
        ProceduralTasks(("motif",))  # keyword-only


def _single_op_net(op: str, n_classes: int, c: int = 16) -> nn.Module:
    """1x1 stem, two layers of one op, global average pool, linear."""
    if op == "dil_conv":  # dense 3x3 conv with dilation 2 (the cheapest dilated conv on CPU)
        layer = [nn.ReLU(), nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=False),
                 nn.BatchNorm2d(c)]
    elif op == "sep_conv":
        layer = [nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                 nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)]
    else:
        layer = [nn.MaxPool2d(3, 1, 1)]
    return nn.Sequential(
        nn.Conv2d(3, c, 1, bias=False), nn.BatchNorm2d(c), *layer, *copy.deepcopy(layer),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes),
    )


def _test_accuracy(task: Task, op: str, steps: int = 120, batch: int = 32) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    (x, y), (xq, yq) = task.support, task.query
    net = _single_op_net(op, task.n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        i = torch.randint(len(x), (batch,), generator=g)
        loss = nn.functional.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(xq).argmax(1) == yq).float().mean())


@pytest.mark.parametrize("family,good", [("dilated_motif", "dil_conv"), ("motif", "sep_conv")])
def test_designed_op_preference(family, good):
    dist = ProceduralTasks(families=(family,), n_classes=5, n_support=300, n_query=200)
    task = dist.task(family, 0)
    acc_good, acc_pool = _test_accuracy(task, good), _test_accuracy(task, "max_pool")
    assert acc_good > acc_pool + 0.25, (acc_good, acc_pool)
    assert acc_good > 0.6
