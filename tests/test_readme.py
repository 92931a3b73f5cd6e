"""The README's quick tour runs as printed (with a tiny budget), on the library's defaults."""

import re
from pathlib import Path

import pytest

from pyro_base import defaults
from pyro_base.inference.run.config import MetaConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour() -> str:
    text = README.read_text()
    section = text[text.index("## A quick tour"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_tour_runs_with_a_tiny_budget():
    code = _tour()
    tiny = {'SearchSpace.preset("cpu")': 'SearchSpace.preset("cpu", channels=4)',
            "n_support=96, n_query=96": "n_support=16, n_query=16",
            "total_steps=100": "total_steps=2", "num_steps=100": "num_steps=1",
            "adapt(model, guide, task)": "adapt(model, guide, task, steps=1, num_samples=1)"}
    for old, new in tiny.items():
        assert old in code, f"the README's quick tour no longer has {old!r}"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102  (our own README)
    svi, out = scope["svi"], scope["out"]
    assert svi.step_count == 1
    svi.run(scope["tasks"], num_steps=1)  # run(n) is n more steps
    assert svi.step_count == 2
    assert 0.0 <= out.query_accuracy <= 1.0 and out.genotype is not None


def test_library_defaults_are_the_main_jobs():
    """A model, guide and meta-SVI built by hand get the settings the main job uses."""
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
    from pyro_base.inference.vi.meta_svi import MetaSVI
    from pyro_base.models.base_model import BASEModel
    from pyro_base.search_space import SearchSpace
    from pyro_base.supernet import SuperNet

    cfg = MetaConfig()
    model = BASEModel(SuperNet(SearchSpace.preset("tiny")))
    guide = OptimizationEmbeddingGuide(model)
    svi = MetaSVI(model, guide, total_steps=cfg.steps)
    assert model.beta == cfg.beta == defaults.BETA
    assert guide.inner_steps == cfg.inner_steps
    assert guide.batch_size == cfg.inner_batch
    assert svi.tasks_per_step == cfg.tasks_per_step
    assert svi.temperature(0) == pytest.approx(cfg.tau_start)
    assert svi.temperature(cfg.steps) == pytest.approx(cfg.tau_end)
    assert svi.lr_at(cfg.steps) == pytest.approx(cfg.meta_lr * cfg.meta_lr_final, rel=0.1)
