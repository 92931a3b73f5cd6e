"""MetaSVI(workers=2): a meta-step's tasks adapted in worker processes give the one-process
update, metrics and RNG state to the last bit, NaN policies included; the workers end with
their parent, even when it is killed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from test_meta_svi import _W, EasyTasks, _easy_task, _nan_task, _setup

from pyro_base.inference.run.config import ConfigError, MetaConfig
from pyro_base.inference.run.factory import build_guide, build_model, build_space, meta_workers
from pyro_base.inference.vi.meta_svi import MetaSVI, NonFiniteLossError
from pyro_base.inference.vi.task_pool import TaskPool

pytestmark = pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    """Float-for-float equality holds against one process with one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fresh(workers, **kwargs):
    model, guide = _setup(seed=11)
    return model, MetaSVI(model, guide, tasks_per_step=3, meta_lr=0.5, total_steps=3, seed=4,
                          temperature=0.8, workers=workers, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(), dict(arch_update="reptile", weight_update="query")])
def test_workers_give_the_one_process_run_to_the_last_bit(kwargs):
    _, one = _fresh(1, **kwargs)
    torch.manual_seed(5)
    a = one.run(EasyTasks(), num_steps=3, progress=False)
    rng_a = torch.get_rng_state()
    _, two = _fresh(2, **kwargs)
    torch.manual_seed(5)
    b = two.run(EasyTasks(), num_steps=3, progress=False)
    rng_b = torch.get_rng_state()
    for n, p in a.params.items():
        torch.testing.assert_close(b.params[n], p, rtol=0, atol=0)
    assert any(not torch.equal(p, _W(_setup(seed=11)[0])[n]) for n, p in a.params.items())
    assert b.metrics == a.metrics and b.losses == a.losses  # query losses, agreement too
    assert all("query_loss" in r for m in a.metrics for r in m["tasks"])
    assert torch.equal(rng_b, rng_a)  # what follows meta-training draws the same
    assert two._pool is None  # run() stopped its workers
    # the workers had copies: nothing of this process was moved into shared memory
    assert not any(p.is_shared() for p in two.model.W.parameters())


def test_workers_skip_and_stop_on_a_bad_task_as_one_process_does():
    tasks = [_easy_task(1), _nan_task(), _easy_task(2)]
    models, metrics = [], []
    for workers in (1, 2):
        model, svi = _fresh(workers, nan_policy="skip")
        with pytest.warns(RuntimeWarning, match="meta-step 0 on task 'nan'"):
            metrics.append(svi.step(tasks))
        svi.close()
        models.append(_W(model))
    # NaN inner losses of the bad task: compared as text (NaN != NaN)
    assert json.dumps(metrics[1]) == json.dumps(metrics[0]) and metrics[0]["n_good"] == 2
    assert [r["ok"] for r in metrics[1]["tasks"]] == [True, False, True]
    for n, p in models[0].items():
        torch.testing.assert_close(models[1][n], p, rtol=0, atol=0)
    rngs = []
    for workers in (1, 2):
        model, svi = _fresh(workers, nan_policy="stop")
        W0 = _W(model)
        with pytest.raises(NonFiniteLossError, match="meta-step 0 on task 'nan'"):
            svi.step(tasks)
        rngs.append(torch.get_rng_state())  # where the bad task's draws left it, both ways
        assert all(torch.equal(_W(model)[n], W0[n]) for n in W0)  # W untouched
    assert torch.equal(rngs[1], rngs[0])
    assert svi._pool is None  # an error in a step stops the workers


@pytest.mark.parametrize("kwargs,match", [
    (dict(workers=0), "workers must be >= 1, got 0"),
    (dict(workers=2, mode="maml"), "mode='reptile' without batch_tasks.*'maml'"),
])
def test_bad_workers(kwargs, match):
    model, guide = _setup()
    with pytest.raises(ValueError, match=match):
        MetaSVI(model, guide, **kwargs)
    with pytest.raises(ValueError, match="workers >= 2, got 1"):
        TaskPool(guide, workers=1)


def test_a_guide_that_cannot_be_pickled_is_refused_in_words():
    model, guide = _setup()
    guide.hook = lambda: None  # a lambda does not pickle
    with pytest.raises(ValueError, match="cannot be pickled.*use workers=1"):
        TaskPool(guide, workers=2)


def test_config_meta_workers_applies_to_reptile_steps_task_by_task():
    with pytest.raises(ConfigError, match="meta_workers must be >= 1"):
        MetaConfig(preset="tiny", meta_workers=0)
    cfg = MetaConfig(preset="tiny", meta_workers=3)
    model = build_model(cfg, build_space(cfg))
    assert meta_workers(cfg, model) == 3
    assert meta_workers(cfg.replace(mode="maml"), model) == 1
    batched = cfg.replace(elbo_impl="functional", batch_tasks=True)
    assert meta_workers(batched, model) == 1
    guide = build_guide(cfg, model)
    assert guide.model is model


_PARENT = """
    import os, sys, time
    from pyro_base.processes import spawn_pool

    def pid():
        time.sleep(1.0)  # both workers busy at once: two processes
        return os.getpid()

    if __name__ == "__main__":
        pool = spawn_pool(2)
        futures = [pool.submit(pid) for _ in range(2)]
        print(*sorted({f.result() for f in futures}), flush=True)
        time.sleep(120)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_spawn_pool_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids)
    finally:
        parent.kill()
