"""On-disk task sources on tiny fixtures written in the real formats (nothing is committed)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_base.tasks import cifar, fewshot, folder, idx, imagenet_ds  # noqa: F401 (registers)
from pyro_base.tasks._disk import DataError, MissingDataError
from pyro_base.tasks.base import Task, get_task_distribution

RNG = np.random.default_rng(1234)


def check_task(task: Task, n_way: int, n_s: int, n_q: int, chw: tuple[int, int, int]) -> None:
    assert isinstance(task, Task) and task.n_classes == n_way
    (xs, ys), (xq, yq) = task.support, task.query
    assert xs.dtype == torch.float32 and tuple(xs.shape) == (n_way * n_s, *chw)
    assert tuple(xq.shape) == (n_way * n_q, *chw)
    assert torch.equal(torch.bincount(ys, minlength=n_way), torch.full((n_way,), n_s))
    assert torch.equal(torch.bincount(yq, minlength=n_way), torch.full((n_way,), n_q))
    assert len(task.metadata["class_names"]) == n_way


def same_task(a: Task, b: Task) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a.support + a.query, b.support + b.query,
                                                 strict=True))


# ---- fixture writers ------------------------------------------------------------------------
def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    raw = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def make_idx(root: Path, gz: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, per in (("train", 6), ("t10k", 3)):
        y = np.repeat(np.arange(10), per)
        x = (y[:, None, None] * 20 + RNG.integers(0, 20, (len(y), 8, 8))).astype(np.uint8)
        sfx = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", y, gz)
    return root


def dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar10(root: Path, bytes_keys: bool) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    for name, per in [(f"data_batch_{i}", 1) for i in range(1, 6)] + [("test_batch", 2)]:
        y = list(np.repeat(np.arange(10), per))
        data = RNG.integers(0, 256, (len(y), 3072), dtype=np.uint8)
        dump(d / name, {k("data"): data, k("labels"): y, k("batch_label"): k(name)})
    dump(d / "batches.meta", {k("label_names"): [k(f"c{i}") for i in range(10)]})
    return root


def make_cifar100(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, per in (("train", 3), ("test", 1)):
        y = np.repeat(np.arange(100), per)
        dump(root / name, {b"data": RNG.integers(0, 256, (len(y), 3072), dtype=np.uint8),
                           b"fine_labels": list(y), b"coarse_labels": list(y // 5)})
    dump(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return root


def make_imagenet(root: Path, fmt: str, n_classes: int = 20, side: int = 16) -> Path:
    root.mkdir(parents=True)
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        y = np.arange(1, n_classes + 1)  # 1-based
        data = RNG.integers(0, 256, (n_classes, 3 * side * side), dtype=np.uint8)
        if fmt == "npz":
            np.savez(root / f"{name}.npz", data=data, labels=y, mean=data.mean(0))
        else:
            dump(root / name, {"data": data, "labels": list(y), "mean": data.mean(0)})
    return root


def save_png(path: Path, arr: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)


def make_omniglot(root: Path) -> Path:
    base = root / "omniglot-py"
    for part, n_alpha in (("images_background", 2), ("images_evaluation", 1)):
        for a in range(n_alpha):
            for c in range(5):
                for i in range(4):
                    img = (RNG.random((12, 12)) > 0.5).astype(np.uint8) * 255
                    save_png(base / part / f"Alpha{a}" / f"character{c:02d}" /
                             f"{c:02d}{i:02d}_{i + 1:02d}.png", img, "1")
    return root


def make_mini_csv(root: Path) -> Path:
    for s, split in enumerate(("train", "val", "test")):
        rows = ["filename,label"]
        for c in range(3):
            for i in range(4):
                fn = f"n{s}{c}_{i}.jpg"
                size = (20 + i, 18)  # the real release has images of varying size
                save_png(root / "images" / fn, RNG.integers(0, 256, (*size, 3), np.uint8), "RGB")
                rows.append(f"{fn},n0{s}{c}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def make_mini_pickle(root: Path) -> Path:
    root.mkdir(parents=True)
    for s, split in enumerate(("train", "val", "test")):
        x = RNG.integers(0, 256, (12, 84, 84, 3), dtype=np.uint8)
        cd = {f"n0{s}{c}": list(range(c * 4, c * 4 + 4)) for c in range(3)}
        dump(root / f"mini-imagenet-cache-{split}.pkl", {"image_data": x, "class_dict": cd})
    return root


# ---- formats --------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_idx(tmp_path: Path, gz: bool) -> None:
    d = make_idx(tmp_path / "fm", gz)
    dist = get_task_distribution("fashion_mnist", data_dir=d, n_classes=3, n_support=2,
                                 n_query=1, image_size=16, channels=3, val_fraction=0.5)
    check_task(dist.sample("train", np.random.default_rng(0)), 3, 2, 1, (3, 16, 16))
    whole = dist.whole_task()
    assert whole.n_classes == 10 and whole.support[0].shape == (60, 3, 16, 16)
    assert whole.query[0].shape == (30, 3, 16, 16)
    assert whole.support[1].tolist() == np.repeat(np.arange(10), 6).tolist()
    assert dist.tasks("val", 1)[0].metadata["class_names"][0] in idx.VARIANTS[
        "fashion_mnist"]["classes"]
    # disjoint examples: val is carved out of the train file, test is t10k
    splits = dist.splits()
    for c in range(10):
        assert not set(splits["train"][c]) & set(splits["val"][c])
        assert min(splits["test"][c]) >= 60 > max(splits["train"][c])


def test_idx_variant_and_torchvision_layout(tmp_path: Path) -> None:
    d = make_idx(tmp_path / "KMNIST" / "raw", gz=False)
    dist = get_task_distribution("idx", variant="kmnist", data_dir=tmp_path, n_classes=2,
                                 n_support=1, n_query=1)
    assert d.exists() and dist.sample("test", np.random.default_rng(0)).image_shape == (1, 8, 8)


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar10(tmp_path: Path, bytes_keys: bool) -> None:
    root = make_cifar10(tmp_path, bytes_keys)
    for data_dir in (root, root / "cifar-10-batches-py"):  # parent or the batches folder
        dist = get_task_distribution("cifar10", data_dir=data_dir, n_classes=4, n_support=1,
                                     n_query=1)
        task = dist.sample("test", np.random.default_rng(0))
        check_task(task, 4, 1, 1, (3, 32, 32))
        assert all(n.startswith("c") for n in task.metadata["class_names"])
    whole = dist.whole_task()
    assert whole.support[0].shape == (50, 3, 32, 32) and whole.query[0].shape == (20, 3, 32, 32)


def test_cifar100_disjoint_classes(tmp_path: Path) -> None:
    dist = get_task_distribution("cifar100", data_dir=make_cifar100(tmp_path / "c"),
                                 n_classes=5, n_support=2, n_query=2, image_size=8)
    sets = {s: set(dist.splits()[s]) for s in ("train", "val", "test")}
    assert [len(v) for v in sets.values()] == [60, 20, 20]
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"]
                or sets["val"] & sets["test"])
    for s in sets:
        task = dist.sample(s, np.random.default_rng(3))
        check_task(task, 5, 2, 2, (3, 8, 8))
        assert set(task.metadata["classes"]) <= sets[s]


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
def test_imagenet_ds(tmp_path: Path, fmt: str) -> None:
    dist = get_task_distribution("imagenet_ds", data_dir=make_imagenet(tmp_path / "i", fmt),
                                 resolution=16, n_classes=3, n_support=4, n_query=2)
    assert sorted(c for s in dist.splits().values() for c in s) == list(range(20))  # 1-based
    task = dist.sample("val", np.random.default_rng(0))
    check_task(task, 3, 4, 2, (3, 16, 16))
    assert set(task.metadata["classes"]) <= set(dist.splits()["val"])
    assert not set(dist.splits()["train"]) & set(dist.splits()["test"])


def test_omniglot(tmp_path: Path) -> None:
    dist = get_task_distribution("omniglot", data_dir=make_omniglot(tmp_path), n_classes=5,
                                 n_support=1, n_query=3, image_size=10)
    sp = dist.splits()
    assert [len(sp[s]) for s in ("train", "val", "test")] == [32, 8, 20]  # x4 rotations
    chars = {s: {c // 4 for c in sp[s]} for s in sp}
    assert not (chars["train"] & chars["val"] or chars["train"] & chars["test"])
    assert min(chars["test"]) >= 10  # evaluation characters come after the 10 background ones
    task = dist.sample("train", np.random.default_rng(0))
    check_task(task, 5, 1, 3, (1, 10, 10))
    no_rot = get_task_distribution("omniglot", data_dir=tmp_path, rotations=False, n_support=2,
                                   n_query=2)
    assert len(no_rot.splits()["test"]) == 5
    # a rotated class holds the rotated images of its character
    native = get_task_distribution("omniglot", data_dir=tmp_path)
    c = next(c for c in sp["test"] if c % 4 == 1)
    upright = native._images(sp["test"][c], c - 1)
    assert torch.equal(torch.rot90(upright, 1, (-2, -1)), native._images(sp["test"][c], c))


@pytest.mark.parametrize("maker", [make_mini_csv, make_mini_pickle])
def test_mini_imagenet(tmp_path: Path, maker) -> None:
    dist = get_task_distribution("mini_imagenet", data_dir=maker(tmp_path / "mini"),
                                 n_classes=3, n_support=1, n_query=2, image_size=16)
    sp = dist.splits()
    assert not set(sp["train"]) & set(sp["test"]) and len(sp["val"]) == 3
    task = dist.sample("test", np.random.default_rng(0))
    check_task(task, 3, 1, 2, (3, 16, 16))
    assert all(n.startswith("n02") for n in task.metadata["class_names"])


def test_folder_and_npz(tmp_path: Path) -> None:
    for c in range(3):
        for i in range(6):
            save_png(tmp_path / "imgs" / f"class{c}" / f"{i}.png",
                     RNG.integers(0, 256, (10 + i, 12, 3), np.uint8), "RGB")
    dist = get_task_distribution("folder", data_dir=tmp_path / "imgs", n_classes=2,
                                 n_support=2, n_query=1, image_size=8)
    check_task(dist.sample("train", np.random.default_rng(0)), 2, 2, 1, (3, 8, 8))
    assert dist.whole_task().query[0].shape[0] == 3  # one test image per class (20% of 6)
    x = RNG.integers(0, 256, (40, 6, 6), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(4), 10),
             class_names=np.array(["a", "b", "c", "d"]))
    dist = get_task_distribution("npz", path=tmp_path / "d.npz", n_classes=4, n_support=3,
                                 n_query=2, channels=3, holdout="examples")
    task = dist.sample("train", np.random.default_rng(0))
    check_task(task, 4, 3, 2, (3, 6, 6))
    support = dist.whole_task().support[0]
    assert abs(float(support.mean())) < 0.2 and abs(float(support.std()) - 1) < 0.2


def test_determinism(tmp_path: Path) -> None:
    dist = get_task_distribution("cifar100", data_dir=make_cifar100(tmp_path / "c"),
                                 n_classes=5, n_support=1, n_query=1)
    a, b = dist.tasks("train", 3), dist.tasks("train", 3)
    assert all(same_task(u, v) for u, v in zip(a, b, strict=True))
    assert not same_task(a[0], a[1])
    x = dist.sample("val", np.random.default_rng([7, 1]))
    assert same_task(x, dist.sample("val", np.random.default_rng([7, 1])))


# ---- bad input ------------------------------------------------------------------------------
def test_missing_dir_lists_expected_files(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        get_task_distribution("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert "data_batch_2" in msg and "test_batch" in msg and "batches.meta" in msg
    assert str(tmp_path) in msg and "cifar-10-batches-py" in msg
    assert isinstance(e.value, ValueError)
    with pytest.raises(MissingDataError, match="train-images-idx3-ubyte"):
        get_task_distribution("mnist", data_dir=tmp_path)
    with pytest.raises(MissingDataError, match="val_data"):
        get_task_distribution("imagenet_ds", data_dir=tmp_path)
    with pytest.raises(MissingDataError, match="images_evaluation"):
        get_task_distribution("omniglot", data_dir=tmp_path)
    with pytest.raises(MissingDataError, match="mini-imagenet-cache-train.pkl"):
        get_task_distribution("mini_imagenet", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        get_task_distribution("folder", data_dir=tmp_path / "nope")
    with pytest.raises(ValueError, match="data_dir is required"):
        get_task_distribution("cifar100")


def test_absent_default_directory_is_named(tmp_path: Path, monkeypatch) -> None:
    spec = {**idx.VARIANTS["fashion_mnist"], "default_dir": str(tmp_path / "absent")}
    monkeypatch.setitem(idx.VARIANTS, "fashion_mnist", spec)
    with pytest.raises(ValueError, match=r"data_dir is required .*--data-dir DIR .*"
                                         r"t10k-labels-idx1-ubyte.* the default .*absent"):
        get_task_distribution("fashion_mnist")
    make = tmp_path / "absent"
    make.mkdir()                       # the default, once there, is used: its files are named
    with pytest.raises(MissingDataError, match="train-images-idx3-ubyte"):
        get_task_distribution("fashion_mnist")


def test_corrupt_files_name_the_file(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "a", bytes_keys=True) / "cifar-10-batches-py"
    bad = root / "test_batch"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(DataError, match="test_batch.*truncated"):
        cifar.CIFAR10Tasks(data_dir=root).sample("train", np.random.default_rng(0))
    dump(bad, {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="test_batch.*3072"):
        cifar.CIFAR10Tasks(data_dir=root).whole_task()
    dump(bad, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(DataError, match="test_batch: label out of range"):
        cifar.CIFAR10Tasks(data_dir=root).whole_task()
    d = make_imagenet(tmp_path / "i", "npz")
    y0 = np.arange(20)  # 0-based labels: the files must be 1-based
    np.savez(d / "val_data.npz", data=np.zeros((20, 768), np.uint8), labels=y0)
    with pytest.raises(DataError, match=r"val_data.npz: label out of range.*\[1, 1000\]"):
        imagenet_ds.ImageNetDSTasks(data_dir=d).whole_task()
    (d / "val_data.npz").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="val_data.npz.*corrupt"):
        imagenet_ds.ImageNetDSTasks(data_dir=d).whole_task()


def test_bad_idx(tmp_path: Path) -> None:
    d = make_idx(tmp_path, gz=False)
    f = d / "t10k-images-idx3-ubyte"
    raw = f.read_bytes()
    f.write_bytes(b"\x00\x00\x42\x03" + raw[4:])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: bad idx magic"):
        idx.MNISTTasks(data_dir=d).whole_task()
    f.write_bytes(raw[:-10])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: idx header says shape"):
        idx.MNISTTasks(data_dir=d).whole_task()
    write_idx(f, np.zeros((29, 8, 8)), gz=False)
    with pytest.raises(DataError, match="29 images but 30 labels"):
        idx.MNISTTasks(data_dir=d).whole_task()


def test_too_many_classes_or_shots_says_what_is_available(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path, bytes_keys=False)
    with pytest.raises(DataError, match="split 'train' has 10 classes; asked for n_classes=12"):
        cifar.CIFAR10Tasks(data_dir=root, n_classes=12).sample("train", RNG)
    with pytest.raises(DataError, match=r"only 2 examples.*n_support=2 \+ n_query=1 = 3"):
        cifar.CIFAR10Tasks(data_dir=root, n_support=2, n_query=1).sample("test", RNG)
    with pytest.raises(DataError, match="split 'val' has 8 classes"):
        get_task_distribution("omniglot", data_dir=make_omniglot(tmp_path / "o"),
                              n_classes=9).sample("val", RNG)


@pytest.mark.parametrize("field,value", [("n_support", 0), ("n_query", -1), ("channels", 2),
                                         ("holdout", "nope"), ("image_size", 0),
                                         ("n_classes", 1), ("val_fraction", 1.5)])
def test_config_validated_eagerly(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        cifar.CIFAR10Tasks(data_dir=tmp_path, **{field: value})


def test_resolution_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="resolution"):
        imagenet_ds.ImageNetDSTasks(data_dir=tmp_path, resolution=28)
    d = make_imagenet(tmp_path / "i", "pickle")
    with pytest.raises(DataError, match="16x16, expected resolution 32"):
        imagenet_ds.ImageNetDSTasks(data_dir=d, resolution=32, n_classes=2).sample("train", RNG)


def test_all_classes_all_examples(tmp_path: Path) -> None:
    dist = get_task_distribution("cifar10", data_dir=make_cifar10(tmp_path, True),
                                 n_classes=None, n_support=None, n_query=1)
    task = dist.sample("train", np.random.default_rng(0))
    assert task.n_classes == 10 and len(task.support[1]) == 10 * 3  # 5 per class - 1 val - 1


def test_mini_imagenet_csv_missing_image(tmp_path: Path) -> None:
    root = make_mini_csv(tmp_path / "mini")
    (root / "images" / "n22_3.jpg").unlink()
    with pytest.raises(MissingDataError, match="n22_3.jpg"):
        fewshot.MiniImageNetEpisodes(data_dir=root).sample("test", RNG)
