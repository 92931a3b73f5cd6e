"""Meta-training on on-disk sources: class-subset tasks from an ``.npz`` or an image folder (the
real formats, generated here), disjoint class splits stated in the run directory, grey images
made RGB, and one ``error:`` line for bad data or too few classes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_base.config import ConfigError
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import build_space, build_tasks
from pyro_base.inference.run.job import meta_train_run

SMALL = dict(preset="cpu", channels=4, cells=2, nodes=2, tasks_per_step=2, inner_steps=1,
             n_support=4, n_query=4, inner_batch=8, threads=0, steps=2, n_heldout=1,
             adapt_steps=1, num_samples=1, posterior_draws=2, arch_refit_tasks=2,
             arch_refit_steps=1, arch_refit_workers=1, meta_workers=1)


def _images(n_classes: int, per_class: int, size: int = 20, seed: int = 0):
    """Grey images whose class is a bright square at a class-dependent place, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n_classes * per_class, size, size), dtype=np.uint8)
    y = np.repeat(np.arange(n_classes), per_class)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 4)
        x[i, 2 + 4 * r:6 + 4 * r, 2 + 4 * q:6 + 4 * q] = 250
    return x, y


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    x, y = _images(15, 12)
    np.savez(path, x=x, y=y, class_names=np.array([f"c{k}" for k in range(15)]))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    x, y = _images(8, 10, seed=1)
    for i, (img, c) in enumerate(zip(x, y, strict=True)):
        (root / f"class_{c}").mkdir(exist_ok=True)
        Image.fromarray(img, mode="L").save(root / f"class_{c}" / f"{i}.png")
    return root


def test_npz_tasks_are_n_way_class_subsets_at_the_space_size_in_rgb(npz):
    cfg = MetaConfig(task_source="npz", data_dir=str(npz), n_way=3, **SMALL)
    dist = build_tasks(cfg, build_space(cfg))
    task = dist.sample("train", np.random.default_rng(0))
    assert task.n_classes == 3 and task.image_shape == (3, 16, 16)  # 20x20 grey -> 16x16 RGB
    assert sorted(set(task.support[1].tolist())) == [0, 1, 2]
    classes = dist.split_classes()
    assert sum(len(v) for v in classes.values()) == 15
    assert not set(classes["train"]) & set(classes["test"])
    assert not set(classes["train"]) & set(classes["val"])


def test_meta_training_on_an_npz_writes_its_class_splits(npz, tmp_path):
    cfg = MetaConfig(task_source="npz", data_dir=str(npz), n_way=3, **SMALL)
    result = meta_train_run(cfg, run_dir=tmp_path, progress=False)
    assert result.svi.step_count == 2
    assert all(bool(torch.isfinite(p).all()) for p in result.svi.model.W.named_tensors().values())
    splits = json.loads((tmp_path / "task_splits.json").read_text())
    assert set(splits) == {"train", "val", "test"} and len(splits["train"]) == 9
    assert MetaConfig.from_yaml(tmp_path / "config.yaml") == cfg


def test_the_main_job_on_an_image_folder(folder, tmp_path, capsys):
    from pyro_base.inference.commands.meta_svi import cli

    args = ["--task-source", "folder", "--data-dir", str(folder), "--n-way", "2",
            "--run-dir", str(tmp_path / "run"), "--no-progress", "--log-level", "WARNING"]
    for k, v in {**SMALL, "n_heldout": 2}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert cli(args) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "checkpoint.pt", "task_splits.json", "posterior.nc",
                 "prior_genotype.json"):
        assert (run / name).is_file(), name
    out = capsys.readouterr().out  # the held-out quick look: two tasks, two names
    assert "folder/test/0" in out and "folder/test/1" in out


@pytest.mark.parametrize("kind, message", [
    ("missing", "does-not-exist"),
    ("too_few", "fewer than n_way=5"),
    ("corrupt", "corrupt"),
    ("empty", "missing array 'x'"),
])
def test_bad_data_is_one_error_line(npz, tmp_path, capsys, kind, message):
    from pyro_base.inference.commands.meta_svi import cli

    path = {"missing": tmp_path / "does-not-exist.npz", "too_few": npz,
            "corrupt": tmp_path / "corrupt.npz", "empty": tmp_path / "empty.npz"}[kind]
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    if kind == "empty":
        np.savez(path)
    args = ["--task-source", "npz", "--data-dir", str(path), "--n-way",
            "5" if kind == "too_few" else "3", "--run-dir", str(tmp_path / "run"),
            "--no-progress", "--steps", "1", "--preset", "cpu", "--channels", "4"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_config_refuses_a_disk_source_without_data_and_a_one_way_task():
    with pytest.raises(ConfigError, match="needs data_dir"):
        MetaConfig(task_source="npz")
    with pytest.raises(ConfigError, match="n_way must be >= 2"):
        MetaConfig(task_source="npz", data_dir="x.npz", n_way=1)


def test_on_disk_sizes_are_images_per_task_and_checked_up_front(npz):
    cfg = MetaConfig(task_source="npz", data_dir=str(npz), n_way=3, **{**SMALL, "n_support": 9,
                                                                        "n_query": 6})
    task = build_tasks(cfg, build_space(cfg)).sample("train", np.random.default_rng(1))
    assert len(task.support[1]) == 9 and len(task.query[1]) == 6  # 3 + 2 images per class
    big = cfg.replace(n_support=3 * 20)  # 20 per class, but each class has 12 images
    with pytest.raises(ConfigError, match="images per class"):
        build_tasks(big, build_space(big))


def test_episode_sources_are_not_given_a_holdout(monkeypatch):
    """omniglot and mini_imagenet always split by class: build_tasks must not pass holdout."""
    import pyro_base.inference.run.factory as factory

    seen = {}

    class _Stop(Exception):
        pass

    def fake(name, **options):
        seen.update(options)
        raise _Stop

    monkeypatch.setattr(factory, "get_task_distribution", fake)
    cfg = MetaConfig(task_source="omniglot", data_dir="/data/omniglot", n_way=5, **SMALL)
    with pytest.raises(_Stop):
        build_tasks(cfg, build_space(cfg))
    assert "holdout" not in seen and seen["n_classes"] == 5 and seen["channels"] == 3


def test_a_mixture_of_sources_with_weights(npz, tmp_path):
    cfg = MetaConfig(mixture=["procedural:2", f"npz:1:{npz}"], n_way=3,
                     **{**SMALL, "n_support": 12, "n_query": 12})
    dist = build_tasks(cfg, build_space(cfg))
    names = [t.name for t in dist.tasks("test", 12)]
    assert any(n.startswith("procedural/") for n in names)
    assert any(n.startswith("npz/") for n in names) and len(set(names)) == 12
    result = meta_train_run(cfg.replace(n_heldout=2), run_dir=tmp_path, progress=False)
    assert result.svi.step_count == 2
    for bad in (["procedural"], ["nope:1"], ["digits:-1"], ["npz:1"], []):
        with pytest.raises(ConfigError, match="mixture"):
            MetaConfig(mixture=bad)
