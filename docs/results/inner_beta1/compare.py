"""Adam without momentum in the inner loop (``inner_beta1: 0``) against the default 0.9, paired.

    python docs/results/inner_beta1/compare.py

For seeds S = 0, 1, 2, two runs share ``W_0`` (the seed's), the held-out tasks and the
inner-loop seeds (the evaluation's seed and task list, checked below): ``python
scripts/meta_svi.py --seed S`` (``evaluation_default_seedS.json``) and ``python
scripts/meta_svi.py --seed S --inner-beta1 0`` (``evaluation_beta1_0_seedS.json``), each
evaluated with

    python scripts/evaluate.py RUN --arms untrained ensemble --tasks-per-family 8 --workers 2

Both arms adapt with the run's own inner loop, so the candidate's untrained start adapts
without momentum too. ``evaluation_beta1_0_adapt09_seedS.json``: the candidate's run copied
with ``inner_beta1: 0.9`` written into the copy's ``config.yaml`` and evaluated the same way,
so the meta-prior meta-trained without momentum adapts with the default inner loop, and its
untrained arm is the default run's (the same ``W_0``, loop and seeds; the script counts the
tasks whose curves are equal to the last bit). ``evaluation_default_adapt0_seedS.json``: the
other way round, the default run copied with ``inner_beta1: 0``, so the default meta-prior
adapts without momentum (its untrained arm is the candidate's). Seeds 3 and 4 add the default
run and the candidate adapted with 0.9 only; the last part pools those two over seeds 0-4.

Per run, family and step count, mean [95% bootstrap interval over the 8 tasks] of the
ensemble's gain over its own untrained start; pooled over the three runs with the library's
two-level bootstrap (runs, then tasks): that gain for each configuration, and the paired
difference candidate - default of the ensemble arm and of the untrained arm. Then
the markdown table of the goal's two parts per configuration, and ``agreement_*.json``: the
tasks' delta agreement (``rho``) of the seed-0 default run under both inner loops.
"""

import json
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.pooled import two_level_interval
from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
CONFIGS = ("default", "beta1_0", "beta1_0_adapt09", "default_adapt0")
SEEDS = (0, 1, 2)
MORE_SEEDS = (0, 1, 2, 3, 4)  # default and beta1_0_adapt09
BUDGET, GOAL = 20, 0.10


def cells(steps: list[int], mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> str:
    return " | ".join(f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]"
                      for s, m, a, b in zip(steps, mean, lo, hi, strict=True))


def accuracy(data: dict, family: str, arm: str) -> np.ndarray:
    tasks = sorted((t for t in data["tasks"] if t["family"] == family),
                   key=lambda t: t["task_index"])
    return np.array([t["accuracy"][arm] for t in tasks])


def goal_row(name: str, gains: dict, steps: list[int]) -> str:
    """Markdown: the gain after the budget per family (bold at +0.10 with the interval above
    0), the curve's points significantly below the untrained start, the two parts."""
    j, met, negative, texts = steps.index(BUDGET), 0, [], []
    for family in FAMILIES:
        mean, lo, hi = gains[family]
        text = f"{mean[j]:+.3f} [{lo[j]:+.3f}, {hi[j]:+.3f}]"
        ok = mean[j] >= GOAL and lo[j] > 0
        met += ok
        texts.append(f"**{text}**" if ok else text)
        negative += [f"{family} at {s}" for s, h in zip(steps, hi, strict=True) if h < 0]
    both = "yes" if met >= 4 and not negative else "no"
    return (f"| {name} | {' | '.join(texts)} | {', '.join(negative) or 'none'} | "
            f"{met} of 5; {both} |")


def main() -> None:
    data = {(c, s): json.loads((HERE / f"evaluation_{c}_seed{s}.json").read_text())
            for c in CONFIGS for s in SEEDS}
    steps = data["default", 0]["settings"]["steps"]
    for s in SEEDS:  # the same tasks and seeds: the same evaluation seed and task list
        a = data["default", s]
        for c in CONFIGS[1:]:
            b = data[c, s]
            assert [(t["family"], t["task_index"]) for t in a["tasks"]] == \
                [(t["family"], t["task_index"]) for t in b["tasks"]]
            assert a["settings"]["seed"] == b["settings"]["seed"]
            assert b["settings"]["steps"] == steps
        for c, ref in (("beta1_0_adapt09", "default"), ("default_adapt0", "beta1_0")):
            same = sum(t["accuracy"]["untrained"] == u["accuracy"]["untrained"] for t, u in
                       zip(data[ref, s]["tasks"], data[c, s]["tasks"], strict=True))
            print(f"seed {s}: untrained arm of {c} equal to {ref}'s on {same} of "
                  f"{len(a['tasks'])} tasks")
    table = ["| run | motif | dilated motif | relation | co-occurrence | colour | "
             "significantly below the untrained start | families at +0.10; both parts |",
             "|---|---|---|---|---|---|---|---|"]
    pooled: dict[tuple, list[np.ndarray]] = {}
    for s in SEEDS:
        for c in CONFIGS:
            d = data[c, s]
            print(f"\n{c} seed {s} ({d['seconds']:.0f} s); ensemble - untrained")
            gains = {}
            for family in FAMILIES:
                diff = accuracy(d, family, "ensemble") - accuracy(d, family, "untrained")
                pooled.setdefault((c, family), []).append(diff)
                gains[family] = bootstrap_interval(diff)
                print(f"  {family:14s} | {cells(steps, *gains[family])}")
            table.append(goal_row(f"{c}, seed {s}", gains, steps))
        for c in CONFIGS[1:]:
            for arm in ("ensemble", "untrained"):
                for family in FAMILIES:
                    diff = accuracy(data[c, s], family, arm) - \
                        accuracy(data["default", s], family, arm)
                    pooled.setdefault((c, arm, family), []).append(diff)
    print("\npooled over the three runs (two-level bootstrap)")
    for c in CONFIGS:
        gains = {f: two_level_interval(pooled[c, f]) for f in FAMILIES}
        print(f"{c}: ensemble - untrained")
        for family in FAMILIES:
            print(f"  {family:14s} | {cells(steps, *gains[family])}")
        table.append(goal_row(f"{c}, pooled", gains, steps))
    for c in CONFIGS[1:]:
        for arm in ("ensemble", "untrained"):
            print(f"{c} - default, {arm} arm (query accuracy)")
            for family in FAMILIES:
                stat = two_level_interval(pooled[c, arm, family])
                print(f"  {family:14s} | {cells(steps, *stat)}")
            every = [np.concatenate([pooled[c, arm, f][i] for f in FAMILIES])
                     for i in range(len(SEEDS))]
            print(f"  {'all families':14s} | {cells(steps, *two_level_interval(every))}")
    print("\n" + "\n".join(table))
    print("\ndelta agreement, seed-0 default run, 8 training tasks per family x 3 inner seeds:")
    for c in CONFIGS[:2]:
        agr = json.loads((HERE / f"agreement_{c}.json").read_text())
        for start in ("initial", "final"):
            groups = agr[start]["groups"]
            print(f"  {c:8s} {start:8s} " + "  ".join(
                f"{g}: rho {groups[g]['rho']:.4f} ({groups[g]['tasks_for_2x_noise']:.0f} tasks)"
                for g in ("mu_features", "alpha_normal", "alpha_reduce")))

    five_seeds(steps)


def five_seeds(steps: list[int]) -> None:
    """Meta-trained without momentum, adapted with it, against the default over seeds 0-4."""
    configs = ("default", "beta1_0_adapt09")
    data = {(c, s): json.loads((HERE / f"evaluation_{c}_seed{s}.json").read_text())
            for c in configs for s in MORE_SEEDS}
    table = ["| run | motif | dilated motif | relation | co-occurrence | colour | "
             "significantly below the untrained start | families at +0.10; both parts |",
             "|---|---|---|---|---|---|---|---|"]
    gains: dict[tuple[str, str], list[np.ndarray]] = {}
    diffs: dict[str, list[np.ndarray]] = {}
    for s in MORE_SEEDS:
        same = sum(t["accuracy"]["untrained"] == u["accuracy"]["untrained"] for t, u in
                   zip(data["default", s]["tasks"], data[configs[1], s]["tasks"], strict=True))
        print(f"\nseed {s}: untrained arms equal on {same} of {len(data['default', s]['tasks'])}")
        for c in configs:
            row = {}
            for family in FAMILIES:
                d = data[c, s]
                g = accuracy(d, family, "ensemble") - accuracy(d, family, "untrained")
                gains.setdefault((c, family), []).append(g)
                row[family] = bootstrap_interval(g)
            table.append(goal_row(f"{c}, seed {s}", row, steps))
        for family in FAMILIES:
            diffs.setdefault(family, []).append(
                accuracy(data[configs[1], s], family, "ensemble")
                - accuracy(data["default", s], family, "ensemble"))
    print("\nseeds 0-4 pooled: beta1_0_adapt09 - default, ensemble arm (query accuracy)")
    for family in FAMILIES:
        print(f"  {family:14s} | {cells(steps, *two_level_interval(diffs[family]))}")
    every = [np.concatenate([diffs[f][i] for f in FAMILIES]) for i in range(len(MORE_SEEDS))]
    print(f"  {'all families':14s} | {cells(steps, *two_level_interval(every))}")
    for c in configs:
        row = {f: two_level_interval(gains[c, f]) for f in FAMILIES}
        table.append(goal_row(f"{c}, seeds 0-4 pooled", row, steps))
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
