"""pyro_base.inference.run.job: the shared meta-training orchestration (run directory, resume,
TensorBoard scalars)."""

import json

import pytest
import torch

from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.job import meta_train_run, scalars

TINY = dict(preset="cpu", channels=4, cells=2, nodes=2, tasks_per_step=2, inner_steps=1,
            n_support=16, n_query=16, inner_batch=8, threads=0, deterministic=True,
            arch_refit_tasks=2, arch_refit_steps=2, arch_refit_workers=1, meta_workers=1)


def _w(result):
    return {k: v.detach().clone() for k, v in result.svi.model.W.named_tensors().items()}


def test_scalars_flattens_nested_numbers_and_drops_the_rest():
    record = {"step": 3, "loss": 1.5, "n_good": 2, "ok": True, "name": "x",
              "agreement": {"mu": {"cos": 0.1, "ratio": 0.4}}, "arch_entropy_per_cell":
              {"normal": 2.0}}
    assert scalars(record) == {"loss": 1.5, "n_good": 2.0, "agreement/mu/cos": 0.1,
                               "agreement/mu/ratio": 0.4, "arch_entropy_per_cell/normal": 2.0}


def test_run_dir_none_writes_nothing_and_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = meta_train_run(MetaConfig(steps=1, **TINY), progress=False)
    assert result.run is None and result.svi.step_count == 1 and list(tmp_path.iterdir()) == []


class _FailAt:
    """Tasks that fail while sampling meta-step ``step`` (a crash mid-run)."""

    def __init__(self, inner, svi, step):
        self.inner, self.svi, self.step = inner, svi, step

    def sample(self, split, rng):
        if self.svi.step_count == self.step:
            raise RuntimeError("crash")
        return self.inner.sample(split, rng)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_crashed_run_resumes_bit_identically(tmp_path):
    cfg = MetaConfig(steps=3, checkpoint_every=1, **TINY)
    straight = meta_train_run(cfg, run_dir=tmp_path / "a", progress=False, memory_check=False)
    with pytest.raises(RuntimeError, match="crash"):
        meta_train_run(cfg, run_dir=tmp_path / "b", progress=False,
                       wrap_tasks=lambda d, svi, rank: _FailAt(d, svi, 2))
    resumed = meta_train_run(cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.svi.step_count == 3
    a, b = _w(straight), _w(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl")
             .read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert (tmp_path / "b" / "config.yaml").is_file()


def test_tensorboard_gets_every_scalar_of_every_step(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional 'tensorboard' extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    meta_train_run(MetaConfig(steps=2, **TINY), run_dir=tmp_path, progress=False)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss", "temperature", "meta_lr"} <= set(tags)
    assert any(t.startswith("arch_entropy_per_cell/") for t in tags)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    events = acc.Scalars("loss")
    assert [e.step for e in events] == [r["step"] for r in logged]
    assert [e.value for e in events] == pytest.approx([r["loss"] for r in logged], rel=1e-6)


def test_resume_to_fewer_steps_than_done_is_a_config_error(tmp_path):
    from pyro_base.config import ConfigError

    meta_train_run(MetaConfig(steps=2, **TINY), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="--steps 1 is below the 2 meta-steps"):
        meta_train_run(MetaConfig(steps=1, **TINY), run_dir=tmp_path, resume=True,
                       progress=False)
