"""Random search and BASE from scratch: the two non-gradient-relaxation baselines.

* ``random`` (Li & Talwalkar 2019, the DARTS paper's random baseline): ``n_candidates``
  genotypes drawn uniformly from the space (per node two distinct inputs, each with a uniformly
  drawn op other than ``none``). Each is trained briefly from scratch *as a discrete path of the
  same supernet* (``z`` the genotype's one-hot weights, so only its ops run) with the DARTS
  weight recipe on the train half of the support set, and scored by top-1 accuracy (then loss)
  on the validation half; the best is returned. Budget: ``n_candidates x candidate_steps``
  forward-backward passes (``candidate_steps`` defaults to ``steps // n_candidates``, so the
  total matches the other methods' ``steps``).
* ``base`` from scratch: the optimization-embedding guide of
  :class:`~pyro_base.inference.vi.guides.OptimizationEmbeddingGuide` run for ``steps`` inner steps
  on one
  task from an *untrained* ``W`` (supernet initial weights, ``sigma = base_init_scale``,
  uniform ``alpha``): no meta-training. ``q(z|D)`` is the Concrete relaxation at the constant
  temperature ``tau_end``; decoded with the BASE rule.

Usage::

    result = random_search(task, SearchConfig.preset("cpu", steps=40, n_candidates=4))
    result = base_from_scratch(task, SearchConfig.preset("cpu", steps=40))

References: Li & Talwalkar, "Random Search and Reproducibility for NAS", UAI 2019; Liu et al.,
"DARTS", ICLR 2019; Shaw et al., "Meta Architecture Search", NeurIPS 2019.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pyro_base.genotype import Genotype
from pyro_base.inference.search.config import SearchConfig, SearchResult
from pyro_base.inference.search.setup import SearchSetup, split_half
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.models.relaxations import Concrete
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task
from pyro_base.training import evaluate_logits, sgd_cosine, weight_step

__all__ = ["base_from_scratch", "genotype_to_z", "random_search", "sample_genotype"]


def sample_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A genotype drawn uniformly: per node two distinct inputs, each with a non-``none`` op."""
    ops = [op for op in space.ops if op != "none"]
    if not ops:
        raise ValueError(f"search space ops {space.ops} have no op besides 'none'")
    cells = {}
    for cell in ("normal", "reduce"):
        pairs = []
        for i in range(space.nodes):
            for j in sorted(rng.choice(i + 2, size=2, replace=False)):
                pairs.append((ops[int(rng.integers(len(ops)))], int(j)))
        cells[cell] = pairs
    return Genotype(normal=cells["normal"], reduce=cells["reduce"])


def genotype_to_z(genotype: Genotype, space: SearchSpace, *,
                  device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """One-hot supernet weights ``[E, K]`` per cell type selecting exactly the genotype's
    ``(input, op)`` pairs (edges and ops not chosen get weight 0 and are skipped)."""
    edge_index = {edge: e for e, edge in enumerate(space.edges())}
    z = {}
    for cell in space.cell_types:
        if genotype.n_nodes(cell) != space.nodes:
            raise ValueError(f"genotype {cell} cell has {genotype.n_nodes(cell)} nodes, the "
                             f"search space {space.nodes}")
        w = torch.zeros(space.z_shape, device=device)
        for p, (op, j) in enumerate(genotype.cell(cell)):
            if op not in space.ops:
                raise ValueError(f"genotype op {op!r} is not in the search space {space.ops}")
            w[edge_index[(p // 2 + 2, j)], space.ops.index(op)] = 1.0
        z[cell] = w
    return z


def random_search(task: Task, config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """Random search with brief training (see the module docstring)."""
    per = config.candidate_steps or max(1, config.steps // config.n_candidates)
    s = SearchSetup("random", task, config, progress, per * config.n_candidates)
    rng = np.random.default_rng([config.seed, 7])
    train, val = split_half(s.xs, s.ys, config.seed)
    scored = []
    with s.guard():
        for _ in range(config.n_candidates):
            genotype = sample_genotype(s.space, rng)
            z = genotype_to_z(genotype, s.space, device=s.device)
            net = SuperNet(s.space).to(s.device)
            opt, sched = sgd_cosine(net.parameters(), lr=config.w_lr,
                                    momentum=config.w_momentum,
                                    weight_decay=config.w_weight_decay, total_steps=per,
                                    lr_min=config.w_lr_min)
            params = list(net.parameters())
            batches = s.batches(*train)
            for _ in range(per):
                x, y = next(batches)
                loss = F.cross_entropy(net(x, z), y)
                weight_step(loss, params, opt, grad_clip=config.grad_clip)
                sched.step()
                s.meter.backward(len(x))
                s.log_step(loss)
            score = evaluate_logits(lambda x, net=net, z=z: net(x, z), *val,
                                    batch_size=max(config.batch_size, 64))
            s.meter.forward(len(val[0]))
            scored.append((-score["top1"], score["loss"], len(scored), genotype, z, score))
    _, _, best, genotype, z, _ = min(scored, key=lambda t: t[:3])
    extra = {"candidate_steps": per, "best": best,
             "candidates": [{"genotype": g.to_dict(), **sc} for *_, g, _, sc in scored]}
    return s.result(genotype, z, None, extra)


def base_from_scratch(task: Task, config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """BASE's optimization-embedding posterior from an untrained ``W`` (no meta-training)."""
    s = SearchSetup("base", task, config, progress, config.steps)
    with s.guard():
        net = SuperNet(s.space).to(s.device)
        model = BASEModel(net, relaxation=Concrete(), beta=config.base_beta,
                          init_scale=config.base_init_scale)
        guide = OptimizationEmbeddingGuide(
            model, inner_steps=config.steps, inner_lr=config.base_inner_lr,
            arch_lr=config.base_arch_lr, weight_posterior=config.base_weight_posterior,
            batch_size=config.batch_size)
        batch = min(config.batch_size, len(s.xs))

        def count(_step: int, loss: float) -> None:
            s.meter.backward(batch)
            s.losses.append(loss)
            s.bar.update(1)

        post, _ = guide.adapt(s.xs, s.ys, n_classes=task.n_classes, temperature=config.tau_end,
                              steps=config.steps, callback=count)
    rule = config.rule or "base"
    return s.result(post.genotype(s.space, rule=rule), post.op_probs(), rule,
                    extra={"temperature": config.tau_end})
