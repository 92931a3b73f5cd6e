"""Tests for the scikit-learn digits task source."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_base.tasks import Task, get_task_distribution, list_task_distributions
from pyro_base.tasks.digits import DigitsTasks

torch.set_num_threads(1)


def _digest(task: Task) -> str:
    h = hashlib.sha256()
    for t in (*task.support, *task.query):
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def test_registered_and_shapes():
    assert "digits" in list_task_distributions()
    dist = get_task_distribution("digits", n_classes=(3, 6), n_support=60, n_query=40)
    for task in dist.tasks("train", 6):
        x, y = task.support
        assert x.shape == (60, 3, 16, 16) and x.dtype == torch.float32
        assert task.query[0].shape == (40, 3, 16, 16)
        assert y.dtype == torch.int64 and 3 <= task.n_classes <= 6
        assert sorted(torch.unique(y).tolist()) == list(range(task.n_classes))
        counts = torch.bincount(y)
        assert int(counts.max() - counts.min()) <= 1  # balanced
        meta = task.metadata
        assert meta["source"] == "digits" and len(meta["class_names"]) == task.n_classes
        assert len(set(meta["classes"])) == task.n_classes
        assert abs(float(x.mean())) < 1.0 and 0.3 < float(x.std()) < 2.0


def test_image_size_and_variants():
    dist = DigitsTasks(image_size=24, variants=("rotate", "permute"), n_support=20, n_query=20)
    seen = set()
    for task in dist.tasks("train", 12):
        assert task.image_shape == (3, 24, 24)
        seen.add(task.metadata["variant"])
        if task.metadata["variant"] == "rotate":
            assert task.metadata["rotation"] in (90, 180, 270)
    assert seen == {"rotate", "permute"}


def test_determinism_across_processes():
    dist = DigitsTasks(variants=("plain", "rotate", "permute"))
    here = [_digest(dist.task(seed, "val")) for seed in range(3)]
    code = (
        "import hashlib; from pyro_base.tasks.digits import DigitsTasks\n"
        "d = DigitsTasks(variants=('plain', 'rotate', 'permute'))\n"
        "for s in range(3):\n"
        "    t = d.task(s, 'val'); h = hashlib.sha256()\n"
        "    for a in (*t.support, *t.query): h.update(a.numpy().tobytes())\n"
        "    print(h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == here


def test_splits_disjoint_and_holdout_classes():
    dist = DigitsTasks(n_classes=3, holdout_classes=(7, 8, 9), n_support=30, n_query=30)
    train = dist.tasks("train", 8)
    test = dist.tasks("test", 4)
    assert all(set(t.metadata["classes"]).isdisjoint({7, 8, 9}) for t in train)
    assert all(t.metadata["classes"] == [7, 8, 9] for t in test)
    plain = DigitsTasks(n_support=30, n_query=30)
    a, b = plain.task(0, "train"), plain.task(0, "test")
    assert _digest(a) != _digest(b)
    assert len({_digest(t) for t in plain.tasks("train", 5)}) == 5
    assert DigitsTasks(holdout_classes=2, n_classes=2).pools["test"] == (8, 9)


def test_sample_and_cache():
    dist = DigitsTasks(n_tasks_per_split=4, cache_size=2)
    t1 = dist.sample("train", np.random.default_rng(5))
    t2 = dist.sample("train", np.random.default_rng(5))
    assert t1 is t2 and t1.metadata["seed"] < 4
    assert len(dist.tasks("val")) == 4
    assert len(dist._cache) == 2


def test_bad_requests():
    with pytest.raises(ValueError, match="only 10 digits available"):
        DigitsTasks(n_classes=11)
    with pytest.raises(ValueError, match=r"'val' split has only 3 digits available: \[7, 8, 9\]"):
        DigitsTasks(n_classes=5, holdout_classes=3)
    with pytest.raises(ValueError, match="variants"):
        DigitsTasks(variants=("mirror",))
    with pytest.raises(ValueError, match="images per class"):
        DigitsTasks(n_classes=2, n_support=300, n_query=300)
    with pytest.raises(ValueError, match="split"):
        DigitsTasks().task(0, "holdout")
