"""The paper's pipeline end to end on fixtures in the real on-disk formats, with tiny budgets:
meta-train on downsampled-ImageNet ``.npz`` batches, adapt the saved prior to CIFAR-10 python
batches, train the cell found. Each step's files are the next step's input."""

import json

from test_tasks_disk import make_cifar10, make_imagenet

from pyro_base.genotype import Genotype
from pyro_base.inference.commands import adapt, meta_svi, train
from pyro_base.inference.posterior.inference_data import load_posterior

COMMON = ["--device", "cpu", "--no-progress", "--log-level", "WARNING"]


def test_imagenet_to_cifar10_meta_train_adapt_train(tmp_path, capsys):
    imagenet = make_imagenet(tmp_path / "imagenet16", "npz", n_classes=20, side=16)
    cifar = make_cifar10(tmp_path / "cifar", bytes_keys=False) / "cifar-10-batches-py"
    run, adapted, trained = tmp_path / "run", tmp_path / "adapt", tmp_path / "train"

    assert meta_svi.cli([
        "--task-source", "imagenet_ds", "--data-dir", str(imagenet), "--n-way", "3",
        "--n-support", "6", "--n-query", "6", "--preset", "cpu", "--channels", "4",
        "--cells", "2", "--nodes", "2", "--steps", "1", "--tasks-per-step", "2",
        "--inner-steps", "1", "--n-heldout", "1", "--adapt-steps", "1", "--num-samples", "1",
        "--posterior-draws", "2", "--threads", "0", "--arch-refit-tasks", "2",
        "--arch-refit-steps", "1", "--arch-refit-workers", "1", "--run-dir", str(run),
        *COMMON]) == 0
    splits = json.loads((run / "task_splits.json").read_text())
    assert not set(splits["train"]) & set(splits["test"])  # meta-train / meta-test classes

    assert adapt.cli(["--prior", str(run), "--task-source", "cifar10", "--data-dir", str(cifar),
                      "--image-size", "16", "--steps", "2", "--draws", "2", "--num-samples", "1",
                      "--out", str(adapted), *COMMON]) == 0
    record = json.loads((adapted / "adapt.json").read_text())
    assert record["n_classes"] == 10 and record["support"] == 50 and record["steps"] == 2
    genotype = Genotype.load(adapted / "genotype.json")
    # the default adaptation, an ensemble: one posterior per start, named after it
    assert record["ensemble"] == ["all", "architecture", "none"]
    assert sorted(load_posterior(adapted / "posterior.nc").posterior["task"].values) == \
        [f"{record['task']}@{m}" for m in record["ensemble"]]
    capsys.readouterr()

    assert train.cli(["--genotype", str(adapted), "--task-source", "cifar10", "--data-dir",
                      str(cifar), "--image-size", "16", "--steps", "1", "--init-channels", "4",
                      "--layers", "2", "--run-dir", str(trained), *COMMON]) == 0
    assert "top1: " in capsys.readouterr().out
    result = json.loads((trained / "eval.json").read_text())
    assert Genotype.from_dict(result["genotype"]) == genotype  # the cell adapt found
