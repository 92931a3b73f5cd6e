"""Learning: meta-training on one family learns that family's op and a useful prior.

Dilated-motif tasks are designed so that dilated convolutions win (tests/test_tasks_procedural.py
measures it with single-op networks). A short Reptile run of BASE on those tasks alone must
(1) move the normal cell's architecture prior ``softmax(alpha)`` towards ``dil_conv_5x5``,
above the uniform 1/3, and (2) make adaptation from the meta-learned ``W`` beat adaptation
from the untrained ``W`` on held-out tasks of the family at the same step count.

The inner loop and the meta-step use the main job's defaults (Adam 0.03 on the weights, 0.3 on
the architecture logits; the mixture step of the architecture prior). A control family, colour
(every op ties there), shows that the preference is the family's and not a bias of the op set:
the same run (same seed, same ``W_0``) on colour tasks ends with less mass on ``dil_conv_5x5``
than on dilated motif. The control is paired because the colour run's end point can move with
float rounding alone. Measured (80 meta-steps, ~40-70 s each on one thread alone),
P(max_pool, skip, dil_conv_5x5) in the normal cell, dilated motif / colour: with the mixture
step 0.02 / 0.19 / 0.79 against 0.00 / 0.65 / 0.35; with Reptile's logit step 0.01 / 0.26 /
0.73 against 0.00 / 0.40 / 0.60 (the CPU fast path), 0.00 / 0.18 / 0.82 against 0.00 / 0.59 /
0.41 (the stock modules), and an earlier fast path 0.00 / 0.40 / 0.60 against 0.19 / 0.40 /
0.40.

The architecture refit (the mean op probabilities of 6 training tasks adapted for 20 steps
from the meta-trained ``W``) keeps the family's op and the control's contrast: measured 0.05 /
0.03 / 0.92 on dilated motif against 0.02 / 0.54 / 0.44 on colour (before the refit 0.02 /
0.04 / 0.94 against 0.01 / 0.59 / 0.40), 10 s for both refits.
"""

import numpy as np
import pytest
import torch

from pyro_base.inference.vi.adapt import adapt
from pyro_base.inference.vi.arch_refit import refit_architecture, refit_tasks
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import MetaSVI
from pyro_base.models.base_model import BASEModel
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.procedural import ProceduralTasks

OPS = ("max_pool_3x3", "skip_connect", "dil_conv_5x5")


SPACE = SearchSpace(ops=OPS, nodes=2, cells=2, reductions=(1,), channels=8, stem_multiplier=1,
                    stem_kernel=1, input_size=16, n_classes=5)


def _model_and_guide(space: SearchSpace) -> tuple[BASEModel, OptimizationEmbeddingGuide]:
    torch.manual_seed(0)  # same W_0 for the meta-trained and the untrained model
    model = BASEModel(SuperNet(space), beta=1e-3, init_scale=0.03)
    return model, OptimizationEmbeddingGuide(model, inner_steps=5, inner_lr=0.03, arch_lr=0.3,
                                             batch_size=32)


def _meta_train(family: str, steps: int = 80):
    torch.set_num_threads(1)
    tasks = ProceduralTasks(families=(family,), n_support=64, n_query=64, n_classes=5)
    model, guide = _model_and_guide(SPACE)
    svi = MetaSVI(model, guide, tasks_per_step=2, meta_lr=1.0, total_steps=steps,
                  temperature=1.0, log_query=False, seed=0, workers=2)  # W as in one process
    result = svi.run(tasks, steps, progress=False)
    probs = model.W.alpha("normal").detach().softmax(-1).mean(0)
    return tasks, model, guide, result, probs


@pytest.fixture(scope="module")
def dilated_run():
    return _meta_train("dilated_motif")


@pytest.fixture(scope="module")
def colour_run():
    return _meta_train("colour")


def test_control_family_puts_less_mass_on_the_dilated_op(dilated_run, colour_run):
    *_, control = colour_run
    *_, probs = dilated_run
    dil = OPS.index("dil_conv_5x5")
    assert float(probs[dil]) > float(control[dil]) + 0.05, (probs, control)


def test_single_family_meta_training_learns_the_family_op_and_a_better_start(dilated_run):
    tasks, model, guide, result, probs = dilated_run
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10]) - 0.1
    assert OPS[int(probs.argmax())] == "dil_conv_5x5", probs
    assert float(probs[OPS.index("dil_conv_5x5")]) > 0.5  # uniform is 1/3

    untrained, untrained_guide = _model_and_guide(SPACE)
    accuracy = {"meta": [], "untrained": []}
    for i, task in enumerate(tasks.tasks("test", 4)):
        for name, (m, g) in {"meta": (model, guide),
                             "untrained": (untrained, untrained_guide)}.items():
            torch.manual_seed(i)
            accuracy[name].append(adapt(m, g, task, steps=10, temperature=1.0,
                                        num_samples=4).query_accuracy)
    assert np.mean(accuracy["meta"]) > np.mean(accuracy["untrained"]) + 0.1, accuracy


def _refit_probs(run) -> torch.Tensor:
    tasks, model, guide, _, _ = run
    refit = refit_architecture(model, guide, refit_tasks(tasks, 6, seed=0), steps=20,
                               temperature=1.0, seed=0)
    return refit.logits["alpha_normal"].exp().mean(0)


def test_the_architecture_refit_keeps_the_familys_op_against_the_control(dilated_run,
                                                                         colour_run):
    probs, control = _refit_probs(dilated_run), _refit_probs(colour_run)
    dil = OPS.index("dil_conv_5x5")
    assert OPS[int(probs.argmax())] == "dil_conv_5x5", probs
    assert float(probs[dil]) > float(control[dil]) + 0.05, (probs, control)
