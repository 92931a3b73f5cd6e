"""pyro_base.inference.run.selection: the stratified held-out split of a support set, the
choice per step count, and select_start on a tiny model (and on a constructed model whose
candidates are perfect or useless by design); transfer_state's "none"."""

import numpy as np
import pyro
import pytest
import torch

from pyro_base.inference.run import selection
from pyro_base.inference.run.factory import TRANSFERS, transfer_state
from pyro_base.inference.run.selection import Selection, choose, holdout_mask, select_start

SETTINGS = dict(temperature=0.5, num_samples=2)


def labels(counts):
    """Shuffled labels with ``counts[c]`` images of class ``c``."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return torch.as_tensor(np.random.default_rng(5).permutation(y))


# ---------------------------------------------------------------- holdout_mask


@pytest.mark.parametrize("counts", [(4, 4, 4), (8, 5, 3, 12), (7, 1, 4), (20, 9)])
def test_holdout_mask_is_stratified_and_leaves_every_class_a_fit_part(counts):
    y = labels(counts)
    mask = holdout_mask(y, n_classes=len(counts))
    assert mask.dtype == torch.bool and mask.shape == y.shape
    for c, n in enumerate(counts):
        held = int(mask[y == c].sum())
        want = max(1, n // 4) if n >= 2 else 0  # floor(n_c / 4), at least one of two or more
        assert held == want, (c, n, held)
        assert n - held >= 1  # every class keeps images to fit on
    assert int(mask.sum()) == sum(max(1, n // 4) if n >= 2 else 0 for n in counts)


def test_holdout_mask_fraction_is_exact_where_floats_round_down():
    y = labels((100,))
    assert int(holdout_mask(y, n_classes=1, fraction=0.29).sum()) == 29  # 0.29 * 100 = 28.99..


def test_holdout_mask_fraction_sets_the_share_per_class():
    y = labels((10, 10, 6))
    mask = holdout_mask(y, n_classes=3, fraction=0.5)
    assert [int(mask[y == c].sum()) for c in range(3)] == [5, 5, 3]


def test_holdout_mask_is_a_function_of_the_seed():
    y = labels((12, 12, 12, 12))
    a = holdout_mask(y, n_classes=4, seed=0)
    assert torch.equal(a, holdout_mask(y, n_classes=4, seed=0))
    others = [holdout_mask(y, n_classes=4, seed=s) for s in (1, 2, 3)]
    assert all(not torch.equal(a, b) for b in others)
    for b in others:  # another draw, the same strata
        assert [int(b[y == c].sum()) for c in range(4)] == [3, 3, 3, 3]


def test_holdout_mask_refuses_a_support_set_with_nothing_to_hold_out():
    with pytest.raises(ValueError, match="leaves no image held out") as e:
        holdout_mask(labels((1, 1, 1, 1, 1)), n_classes=5)  # 1-shot
    assert "5 images over 5 classes" in str(e.value)
    two_shot = holdout_mask(labels((2, 2, 2)), n_classes=3)  # one of each class held out
    assert int(two_shot.sum()) == 3


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.25, 1.5])
def test_holdout_mask_refuses_a_fraction_outside_the_open_unit_interval(fraction):
    with pytest.raises(ValueError, match="fraction must be in"):
        holdout_mask(labels((8, 8)), n_classes=2, fraction=fraction)


# ---------------------------------------------------------------- choose


def test_choose_takes_the_best_candidate_per_step_count():
    acc = {"all": [0.5, 0.6, 0.2], "none": [0.4, 0.7, 0.9]}
    assert choose(acc, [0, 5, 20]) == {0: "all", 5: "none", 20: "none"}
    three = {"a": [0.1, 0.3], "b": [0.2, 0.1], "c": [0.9, 0.2]}
    assert choose(three, [1, 2]) == {1: "c", 2: "a"}


def test_choose_gives_a_tie_to_the_earlier_candidate():
    assert choose({"all": [0.5, 0.25], "none": [0.5, 0.25]}, [0, 3]) == {0: "all", 3: "all"}
    assert choose({"none": [0.5], "all": [0.5]}, [3]) == {3: "none"}  # order, not name
    # a tie at the top among later candidates: the earliest of those
    assert choose({"a": [0.1], "b": [0.6], "c": [0.6]}, [7]) == {7: "b"}


# ---------------------------------------------------------------- select_start, tiny model


def tiny_setup(seed=0):
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
    from pyro_base.models.base_model import BASEModel
    from pyro_base.search_space import SearchSpace
    from pyro_base.supernet import SuperNet

    pyro.set_rng_seed(seed)
    model = BASEModel(SuperNet(SearchSpace.preset("tiny")), beta=0.01)
    return model, OptimizationEmbeddingGuide(model, inner_steps=2)


@pytest.fixture(scope="module")
def tiny():
    from conftest import synthetic_task

    model, guide = tiny_setup()
    task = synthetic_task("sel", 3, 7, n_support=20, shift=1.0)
    state = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    return model, guide, task, state


def test_select_start_splits_the_support_set_as_the_mask_says(tiny):
    model, guide, task, state = tiny
    xs, ys = task.support
    sel = select_start(model, guide, {"all": state, "copy": state}, xs, ys, n_classes=3,
                       steps=[2, 0], seed=4, **SETTINGS)
    mask = holdout_mask(ys, n_classes=3, seed=4)
    assert sel.heldout_size == int(mask.sum()) > 0
    assert sel.fit_size + sel.heldout_size == len(ys)
    assert sel.steps == [0, 2] and sel.candidates == ("all", "copy")
    # identical starts from the same seed: the same scores, and the tie goes to the first
    assert sel.heldout_accuracy["all"] == sel.heldout_accuracy["copy"]
    assert sel.heldout_loglik["all"] == sel.heldout_loglik["copy"]
    assert sel.chosen == {0: "all", 2: "all"}
    for a in sel.heldout_accuracy["all"]:  # a fraction of the held-out images
        assert 0 <= a <= 1 and (a * sel.heldout_size) == pytest.approx(
            round(a * sel.heldout_size))
    assert all(ll <= 0 for ll in sel.heldout_loglik["all"])
    d = sel.to_dict()
    assert d["chosen"] == {"0": "all", "2": "all"} and d["candidates"] == ["all", "copy"]
    assert d["fit_size"] == sel.fit_size and d["heldout_size"] == sel.heldout_size


def test_select_start_scores_each_start_and_chooses_by_its_own_scores(tiny):
    """Two different starts: their scores differ, the choice is choose() of them, and the
    scores are a function of (start, seed): the same again, whatever the other candidate."""
    model, guide, task, state = tiny
    xs, ys = task.support
    other = {k: (v * 3.0 if k == "mu" else v) for k, v in state.items()}
    sel = select_start(model, guide, {"all": state, "scaled": other}, xs, ys, n_classes=3,
                       steps=[0, 1, 3], seed=1, **SETTINGS)
    assert sel.heldout_loglik["all"] != sel.heldout_loglik["scaled"]
    assert sel.chosen == choose(sel.heldout_accuracy, sel.steps)
    assert torch.equal(model.W.mu, other["mu"])  # left holding the last candidate
    swapped = select_start(model, guide, {"scaled": other, "again": state}, xs, ys,
                           n_classes=3, steps=[0, 1, 3], seed=1, **SETTINGS)
    assert swapped.heldout_accuracy["again"] == sel.heldout_accuracy["all"]
    assert swapped.heldout_loglik["scaled"] == sel.heldout_loglik["scaled"]
    # by log-likelihood: the same scores (same seeds), the choice is choose() of the other
    by_ll = select_start(model, guide, {"all": state, "scaled": other}, xs, ys, n_classes=3,
                         steps=[0, 1, 3], seed=1, criterion="loglik", **SETTINGS)
    assert by_ll.heldout_loglik == sel.heldout_loglik
    assert by_ll.heldout_accuracy == sel.heldout_accuracy
    assert by_ll.chosen == choose(sel.heldout_loglik, sel.steps)
    assert by_ll.to_dict()["criterion"] == "loglik" and sel.to_dict()["criterion"] == "accuracy"
    with pytest.raises(ValueError, match="criterion must be one of"):
        select_start(model, guide, {"all": state, "scaled": other}, xs, ys, n_classes=3,
                     steps=[1], seed=1, criterion="auc", **SETTINGS)
    model.W.load_state_dict(state)


def test_select_start_refuses_fewer_than_two_candidates(tiny):
    model, guide, task, state = tiny
    xs, ys = task.support
    for starts in ({}, {"all": state}):
        with pytest.raises(ValueError, match="at least two candidates"):
            select_start(model, guide, starts, xs, ys, n_classes=3, steps=[1], seed=0,
                         **SETTINGS)


def test_select_start_refuses_a_support_set_too_small_to_hold_out(tiny):
    model, guide, task, state = tiny
    xs, ys = task.support
    keep = torch.cat([torch.nonzero(ys == c)[:1, 0] for c in range(3)])  # 1 per class
    with pytest.raises(ValueError, match="leaves no image held out"):
        select_start(model, guide, {"a": state, "b": state}, xs[keep], ys[keep], n_classes=3,
                     steps=[1], seed=0, **SETTINGS)


# ------------------------------------------------- select_start, a constructed model


class _Quality(torch.nn.Module):
    """A stand-in for ``model.W``: one number, 1 for a start that predicts the label, 0 for
    one that predicts the wrong class."""

    def __init__(self):
        super().__init__()
        self.register_buffer("q", torch.zeros(()))


class _Model:
    def __init__(self):
        self.W = _Quality()


class _Guide:
    """adapt_path records what it was given and returns W's quality as the posterior."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def adapt_path(self, x, y, *, n_classes, temperature, steps):
        self.calls.append({"x": x.clone(), "y": y.clone(), "seed": torch.initial_seed(),
                           "q": float(self.model.W.q), "steps": list(steps)})
        return {k: float(self.model.W.q) for k in steps}, []


def _fake_predictive(model, post, x, *, n_classes, temperature, num_samples):
    label = x[:, 0].long()  # the images carry their label
    wrong = (label + 1) % n_classes
    return torch.nn.functional.one_hot(label if post == 1.0 else wrong, n_classes).float()


@pytest.mark.parametrize("good_first", [True, False])
def test_select_start_chooses_the_start_that_predicts_the_held_out_part(monkeypatch,
                                                                        good_first):
    monkeypatch.setattr(selection, "predictive_probs", _fake_predictive)
    model = _Model()
    guide = _Guide(model)
    y = labels((8, 8, 4))
    x = y.float()[:, None]
    good, bad = {"q": torch.tensor(1.0)}, {"q": torch.tensor(0.0)}
    starts = {"good": good, "bad": bad} if good_first else {"bad": bad, "good": good}
    sel = select_start(model, guide, starts, x, y, n_classes=3, steps=[5, 0], seed=9,
                       **SETTINGS)
    assert sel.heldout_accuracy == {"good": [1.0, 1.0], "bad": [0.0, 0.0]}
    assert sel.chosen == {0: "good", 5: "good"}
    assert sel.heldout_loglik["good"] == [0.0, 0.0]
    assert sel.heldout_loglik["bad"] == pytest.approx([np.log(1e-12)] * 2)
    # each candidate adapted from its own state, on the fit part only, from the same seed
    held = holdout_mask(y, n_classes=3, seed=9)
    assert [c["q"] for c in guide.calls] == [float(s["q"]) for s in starts.values()]
    for call in guide.calls:
        assert torch.equal(call["y"], y[~held]) and torch.equal(call["x"], x[~held])
        assert call["seed"] == 9 and call["steps"] == [0, 5]
    assert (sel.fit_size, sel.heldout_size) == (15, 5)


def test_select_start_scores_on_the_held_out_part_only(monkeypatch):
    """A start right on the held-out images and wrong on the fit part wins; one right on the
    fit part and wrong on the held-out part loses."""
    y = labels((8, 8, 8))
    held = holdout_mask(y, n_classes=3, seed=2)
    x = torch.stack([y.float(), held.float()], 1)

    def predictive(model, post, x, *, n_classes, temperature, num_samples):
        label, on_held = x[:, 0].long(), x[:, 1].bool()
        right = on_held if post == 1.0 else ~on_held
        return torch.nn.functional.one_hot(torch.where(right, label, (label + 1) % n_classes),
                                           n_classes).float()

    monkeypatch.setattr(selection, "predictive_probs", predictive)
    model = _Model()
    sel = select_start(model, _Guide(model), {"fits": {"q": torch.tensor(0.0)},
                                              "generalises": {"q": torch.tensor(1.0)}},
                       x, y, n_classes=3, steps=[4], seed=2, **SETTINGS)
    assert sel.heldout_accuracy == {"fits": [0.0], "generalises": [1.0]}
    assert sel.chosen == {4: "generalises"}


def test_selection_record_is_json_ready():
    import json

    sel = Selection(candidates=("all", "none"), steps=[0, 3],
                    heldout_accuracy={"all": [0.5, 0.5], "none": [0.25, 0.75]},
                    heldout_loglik={"all": [-1.0, -1.0], "none": [-2.0, -0.5]},
                    chosen={0: "all", 3: "none"}, fit_size=12, heldout_size=4)
    assert json.loads(json.dumps(sel.to_dict()))["chosen"] == {"0": "all", "3": "none"}


# ---------------------------------------------------------------- transfer_state "none"


def test_transfer_none_is_w0_itself():
    assert "none" in TRANSFERS
    meta = {"mu": torch.ones(3), "log_sigma": torch.ones(3), "alpha_normal": torch.ones(2)}
    init = {k: torch.zeros_like(v) for k, v in meta.items()}
    none = transfer_state(meta, init, transfer="none")
    assert none.keys() == init.keys()
    assert all(none[k] is init[k] for k in init)
    assert none is not init  # a new dict: the caller's W_0 is not aliased
