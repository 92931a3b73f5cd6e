"""scripts/train_genotype.py, run as a user would (subprocess) and through main()."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_base.genotype import get_genotype

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_genotype.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120)


def _load_module():
    return importlib.import_module("pyro_base.inference.commands.train")


def test_help():
    r = _run("--help")
    assert r.returncode == 0 and "--params-only" in r.stdout and "--init-channels" in r.stdout


def test_darts_v2_params_only():
    r = _run("--genotype", "DARTS_V2", "--init-channels", "36", "--layers", "20", "--auxiliary",
             "--params-only")
    assert r.returncode == 0, r.stderr
    values = dict(line.split(": ") for line in r.stdout.strip().splitlines())
    assert abs(float(values["params_M"]) - 3.3) < 0.05
    assert 400 < float(values["macs_M"]) < 700


def test_json_genotype_and_main(tmp_path, capsys):
    path = tmp_path / "g.json"
    get_genotype("BASE_CIFAR").save(path)
    module = _load_module()
    args = module.build_parser().parse_args(
        ["--genotype", str(path), "--init-channels", "8", "--layers", "5", "--input-size", "16",
         "--params-only"])
    assert module.main(args) == 0
    assert "params_M: " in capsys.readouterr().out


def test_errors(tmp_path):
    r = _run("--genotype", "NoSuchNet", "--params-only")
    assert r.returncode == 2 and "unknown genotype 'NoSuchNet'" in r.stderr
    r = _run("--genotype", str(tmp_path / "missing.json"), "--params-only")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = _run("--genotype", "DARTS_V2", "--task-source", "cifar10")
    assert r.returncode == 2 and "needs --data-dir" in r.stderr


@pytest.mark.parametrize("flag", ["--init_channels", "--paramsonly"])
def test_unknown_flags_rejected(flag):
    assert _run("--genotype", "DARTS_V2", flag).returncode == 2
