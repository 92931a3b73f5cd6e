"""A sample of the fuzz run (the full 10,000-case run is ``scripts/fuzz.py``): generated
checkpoints, data sets and configs give only the project's clean errors."""

import numpy as np
import pytest

from pyro_base.inference.commands.fuzz import cli
from pyro_base.inference.run.fuzz import KINDS, fuzz
from pyro_base.tasks import get_task_distribution
from pyro_base.tasks._disk import DataError


def test_a_sample_of_every_kind_escapes_nothing(tmp_path):
    report = fuzz(n=240, seed=7, workdir=tmp_path)
    assert report["escaped"] == 0, report["escapes"]
    assert set(report["by_kind"]) == set(KINDS)
    assert all(s["cases"] == 60 for s in report["by_kind"].values())
    assert sum(s["ok"] for s in report["by_kind"].values()) > 0  # not all refused


def test_an_npz_with_a_zero_sized_side_is_a_data_error(tmp_path):
    """Found by the fuzz run: images 0 pixels high reached the resize (a RuntimeError)."""
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 0, 2), np.uint8), y=np.array([0, 1, 0, 1]))
    dist = get_task_distribution("npz", path=tmp_path / "d.npz", image_size=8, n_classes=2,
                                 n_support=1, n_query=1)
    with pytest.raises(DataError, match="H, W >= 1"):
        dist.sample("train", np.random.default_rng(0))


def test_fuzz_command(tmp_path, capsys):
    assert cli(["--n", "8", "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    assert "8 cases in" in out and "0 escaped" in out and (tmp_path / "f.json").is_file()
    assert cli(["--n", "0"]) == 2
