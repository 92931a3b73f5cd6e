"""How to weight the starts: a screen of seven rules on one run, replayed from its predictives.

    python docs/results/ensemble/weights.py adapt RUN OUT --part 0 --parts 2 &   # one per core
    python docs/results/ensemble/weights.py adapt RUN OUT --part 1 --parts 2
    python docs/results/ensemble/weights.py summarize OUT --reference EVALUATION_JSON \\
        --json docs/results/ensemble/weights_seed4.json

``adapt`` adapts, for the first ``--tasks`` held-out tasks of each family, the three starts
(the whole meta-prior, its architecture prior with ``W_0``'s weights, ``W_0``) on the whole
support set and on the fit part (3/4) of the default choice, with the evaluation's seeds
(``pair_seed``; the choice's slot for the fit part), and saves the query predictive after
0, 5, 10, 20, 40, 80 steps and the held-out part's, one ``.npz`` per task (about 60 s per task
on one core). ``summarize`` replays every rule from them: the default choice (the whole
meta-prior or the architecture start, by held-out log-likelihood after 20 steps), choosing
again at each step count among two or three starts, stacking (the mixture weights on the
simplex that maximise the held-out log predictive density, by EM) among two or three starts,
at each step count or with the weights of 20 steps, and equal weights over two or three. It
checks the untrained and default arms against ``--reference`` (the run's committed
evaluation), number for number, and prints each rule's gain over the untrained start.
"""

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

STEPS = [0, 5, 10, 20, 40, 80]
ARMS = ["meta", "meta_arch_untrained_weights", "untrained"]
RULES = ["default", "choose_2_each", "choose_3_each", "stack_2_each", "stack_3_each",
         "stack_3_at_20", "equal_2", "equal_3"]


def adapt(args: argparse.Namespace) -> None:
    import torch

    from pyro_base.inference.evaluate.paired import SELECT_SLOT, _setup, pair_seed
    from pyro_base.inference.run.selection import holdout_mask
    from pyro_base.inference.vi.adapt import predictive_probs

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    s = _setup(args.run, device="cpu", arms=ARMS, tasks_per_family=args.tasks, elbo_impl=None)
    units = [(fi, ti) for fi, ts in enumerate(s.by_family.values()) for ti in range(len(ts))]
    for u, (fi, ti) in enumerate(units):
        family = list(s.by_family)[fi]
        out = args.out / f"{family}_{ti}.npz"
        if u % args.parts != args.part or out.exists():
            continue
        began = time.time()
        task = s.by_family[family][ti]
        (xs, ys), (xq, yq) = task.support, task.query
        sel_seed = pair_seed(0, fi, ti, SELECT_SLOT)
        held = holdout_mask(ys, n_classes=task.n_classes, seed=sel_seed)
        res = {"yq": yq.numpy(), "yh": ys[held].numpy()}
        for arm in ARMS:
            for prefix, x, y, xr, seed in (("q", xs, ys, xq, pair_seed(0, fi, ti, 0)),
                                           ("h", xs[~held], ys[~held], xs[held], sel_seed)):
                s.model.W.load_state_dict(s.states[arm])
                torch.manual_seed(seed)
                path, _ = s.guide.adapt_path(x, y, n_classes=task.n_classes,
                                             temperature=s.cfg.adapt_temperature, steps=STEPS)
                reads = []
                for k in STEPS:
                    torch.manual_seed(pair_seed(0, fi, ti, 1 + k) if prefix == "q"
                                      else sel_seed + 1 + k)
                    reads.append(predictive_probs(s.model, path[k], xr,
                                                  n_classes=task.n_classes,
                                                  temperature=s.cfg.adapt_temperature,
                                                  num_samples=s.cfg.num_samples).numpy())
                res[f"{prefix}_{arm}"] = np.stack(reads)
        np.savez(out, **res)
        print(family, ti, f"{time.time() - began:.0f} s", flush=True)


def stack(p: np.ndarray, iters: int = 300) -> np.ndarray:
    """Mixture weights maximising sum_j log sum_c w_c p[j, c] on the simplex (EM)."""
    w = np.full(p.shape[1], 1 / p.shape[1])
    for _ in range(iters):
        r = w * p
        r /= r.sum(1, keepdims=True)
        w = r.mean(0)
    return w


def rules(z: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Each rule's query accuracy after each step count, for one task."""
    yq, yh = z["yq"], z["yh"]
    q = {a: z[f"q_{a}"] for a in ARMS}
    acc = {a: (q[a].argmax(-1) == yq).mean(-1) for a in ARMS}
    lik = {a: np.clip(z[f"h_{a}"][:, np.arange(len(yh)), yh], 1e-12, None) for a in ARMS}

    def best(names: list[str], i: int) -> str:  # a tie goes to the earlier start
        return max(names, key=lambda a: (np.log(lik[a][i]).mean(), -names.index(a)))

    def mixed(names: list[str], weights) -> list[float]:
        out = []
        for i in range(len(STEPS)):
            w = weights(names, i)
            p = sum(wc * q[a][i] for wc, a in zip(w, names, strict=True))
            out.append(float((p.argmax(-1) == yq).mean()))
        return out

    def stacked(at: int | None):
        return lambda names, i: stack(np.stack([lik[a][i if at is None else at]
                                                for a in names], 1))

    two, three, j20 = ARMS[:2], ARMS, STEPS.index(20)
    chosen = best(two, j20)
    return {"default": acc[chosen].tolist(),
            "choose_2_each": [float(acc[best(two, i)][i]) for i in range(len(STEPS))],
            "choose_3_each": [float(acc[best(three, i)][i]) for i in range(len(STEPS))],
            "stack_2_each": mixed(two, stacked(None)), "stack_3_each": mixed(three, stacked(None)),
            "stack_3_at_20": mixed(three, stacked(j20)),
            "equal_2": mixed(two, lambda n, i: np.ones(2) / 2),
            "equal_3": mixed(three, lambda n, i: np.ones(3) / 3),
            "untrained": acc["untrained"].tolist(), "default_start": chosen}


def summarize(args: argparse.Namespace) -> None:
    from pyro_base.inference.evaluate.summary import bootstrap_interval

    reference = {}
    if args.reference:
        reference = {(t["family"], t["task_index"]): t
                     for t in json.loads(args.reference.read_text())["tasks"]}
    records, mismatches = [], 0
    for f in sorted(args.out.glob("*.npz")):
        family, ti = re.fullmatch(r"(.+)_(\d+)\.npz", f.name).groups()
        r = {"family": family, "task_index": int(ti), **rules(dict(np.load(f)))}
        ref = reference.get((family, int(ti)))
        if ref is not None:
            mismatches += not np.allclose(ref["accuracy"]["untrained"], r["untrained"])
            mismatches += not np.allclose(ref["accuracy"]["select"], r["default"])
        records.append(r)
    print(f"{len(records)} tasks; {mismatches} mismatches against the reference evaluation")
    families = list(dict.fromkeys(r["family"] for r in records))
    for k in (5, 20, 80):
        j = STEPS.index(k)
        print(f"\ngain over the untrained start after {k} steps, mean [95% interval]")
        print("| family | " + " | ".join(RULES) + " |")
        for family in families:
            rows = [r for r in records if r["family"] == family]
            cells = []
            for rule in RULES:
                diff = np.array([r[rule][j] - r["untrained"][j] for r in rows])
                mean, lo, hi = bootstrap_interval(diff)
                cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
            print(f"| {family} ({len(rows)}) | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"steps": STEPS, "rules": RULES, "tasks": records},
                                        indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("adapt")
    a.add_argument("run", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--part", type=int, default=0)
    a.add_argument("--parts", type=int, default=1)
    a.add_argument("--tasks", type=int, default=8)
    s = sub.add_parser("summarize")
    s.add_argument("out", type=Path)
    s.add_argument("--reference", type=Path)
    s.add_argument("--json", type=Path)
    args = p.parse_args()
    (adapt if args.command == "adapt" else summarize)(args)


if __name__ == "__main__":
    main()
