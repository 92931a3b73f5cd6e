"""A prior meta-trained on relation tasks alone, against the default run of the same seed.

    python docs/results/family_prior/compare.py

Files here (S = 3, 4; the default runs are the seed-S draws of ``../select_once_draws/``,
regenerated with ``python scripts/meta_svi.py --seed S`` to the same ``W``):

* ``relation_only_seedS.json``: ``python scripts/meta_svi.py --seed S --families relation``
  (100 meta-steps of 4 relation tasks, then the refit on 20 relation tasks), evaluated with
  ``python scripts/evaluate.py RUN --arms meta untrained meta_arch_untrained_weights
  [select] --workers 2`` (20 held-out relation tasks);
* ``default_seedS_relation.json``: the same command on a copy of the default run whose
  ``config.yaml`` lists ``families: [relation]``, so its tasks and inner-loop seeds are the
  relation-only run's (the untrained arm agrees to the last bit: ``W_0`` depends on the seed);
* ``injected_seedS.json``: the default seed-S run with the relation-only run's refit logits
  put in as its one family component (``python docs/results/family_prior/inject.py COPY
  RELATION_RUN relation`` on a copy), ``python scripts/evaluate.py COPY --arms select --select-from
  all architecture components --workers 2``: per task, the default choice with a third
  candidate, ``architecture:relation`` (those logits sharpened, ``W_0``'s weights); paired
  with the run's default evaluation (``../select_once_draws/evaluation_seedS.json``).

Two probes of what it takes, on seed 4, each ``python scripts/evaluate.py RUN --arms
untrained meta_arch_untrained_weights [meta] --workers 2`` on the relation copy's tasks:

* ``default_seed4_relation_refit20.json``: the default run's meta-trained ``W`` refit from 20
  relation training tasks instead of 4 (``python
  docs/results/family_component/family_refit.py COPY relation`` on a copy of the relation copy
  above, whose refit draws relation's tasks alone);
* ``relation_only_20steps_seed4.json``: ``python scripts/meta_svi.py --seed 4 --families
  relation --steps 20`` (80 relation tasks, the share of relation's tasks in the default
  job).

Printed: per arm, relation-only minus default and each one's gain over the untrained start;
each probe's architecture start against the default run's, the 100-step relation-only run's
and the untrained start; then the three-way choice minus the default choice on every family,
its gain over the untrained start and the starts chosen. Mean [95% bootstrap interval over
tasks].
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from pyro_base.inference.evaluate.summary import bootstrap_interval

HERE = Path(__file__).parent
FAMILIES = ["motif", "dilated_motif", "relation", "cooccurrence", "colour"]
ARMS = {"meta": "whole prior", "meta_arch_untrained_weights": "architecture start",
        "select": "default choice"}


def load(path: Path) -> tuple[list[int], dict[tuple[str, int], dict]]:
    data = json.loads(path.read_text())
    return data["settings"]["steps"], {(t["family"], t["task_index"]): t for t in data["tasks"]}


def row(label: str, steps: list[int], diff: np.ndarray) -> str:
    mean, lo, hi = bootstrap_interval(diff)
    return f"  {label:44s} " + " | ".join(
        f"{s}: {m:+.3f} [{a:+.3f}, {b:+.3f}]" for s, m, a, b in zip(steps, mean, lo, hi,
                                                                     strict=True))


def relation_only(seed: int) -> None:
    new_path, old_path = HERE / f"relation_only_seed{seed}.json", \
        HERE / f"default_seed{seed}_relation.json"
    if not (new_path.exists() and old_path.exists()):
        return
    steps, new = load(new_path)
    _, old = load(old_path)
    keys = sorted(new)
    same = all(new[k]["accuracy"]["untrained"] == old[k]["accuracy"]["untrained"] for k in keys)
    print(f"\nseed {seed}, 20 relation tasks (untrained arms identical: {same})")
    acc = {(which, arm): np.array([d[k]["accuracy"][arm] for k in keys])
           for which, d in (("new", new), ("old", old)) for arm in d[keys[0]]["accuracy"]}
    for arm, label in ARMS.items():
        if ("new", arm) in acc and ("old", arm) in acc:
            print(row(f"{label}: relation-only - default", steps,
                      acc["new", arm] - acc["old", arm]))
        for which, name in (("new", "relation-only"), ("old", "default")):
            if (which, arm) in acc:
                print(row(f"{label}: {name} - untrained", steps,
                          acc[which, arm] - acc[which, "untrained"]))


def injected(seed: int) -> None:
    path = HERE / f"injected_seed{seed}.json"
    if not path.exists():
        return
    steps, new = load(path)
    base_steps, base = load(HERE.parent / "select_once_draws" / f"evaluation_seed{seed}.json")
    cols = [base_steps.index(s) for s in steps]
    print(f"\nseed {seed}, the default choice with the relation-only architecture start as a "
          "third candidate")
    for family in FAMILIES:
        keys = sorted(k for k in new if k[0] == family)
        sel = np.array([new[k]["accuracy"]["select"] for k in keys])
        old = np.array([[base[k]["accuracy"]["select"][c] for c in cols] for k in keys])
        untrained = np.array([[base[k]["accuracy"]["untrained"][c] for c in cols] for k in keys])
        print(f" {family}")
        print(row("three-way choice - default choice", steps, sel - old))
        print(row("three-way choice - untrained", steps, sel - untrained))
        chosen = Counter(new[k]["selection"]["chosen"][str(new[k]["selection"]["select_at"])]
                         for k in keys)
        print("  chosen: " + ", ".join(f"{n} {c}" for c, n in chosen.most_common()))


def probes() -> None:
    _, old = load(HERE / "default_seed4_relation.json")
    _, full = load(HERE / "relation_only_seed4.json")
    arm = "meta_arch_untrained_weights"
    for name, label in (("default_seed4_relation_refit20", "20-task relation refit of W"),
                        ("relation_only_20steps_seed4", "20 relation-only meta-steps")):
        path = HERE / f"{name}.json"
        if not path.exists():
            continue
        steps, new = load(path)
        keys = sorted(new)
        a = np.array([new[k]["accuracy"][arm] for k in keys])
        print(f"\nseed 4, architecture start: {label}")
        print(row("minus the default run's", steps,
                  a - np.array([old[k]["accuracy"][arm] for k in keys])))
        print(row("minus relation-only (100 steps)", steps,
                  a - np.array([full[k]["accuracy"][arm] for k in keys])))
        print(row("minus untrained", steps,
                  a - np.array([new[k]["accuracy"]["untrained"] for k in keys])))


def main() -> None:
    for seed in (4, 3):
        relation_only(seed)
    probes()
    for seed in (4, 3):
        injected(seed)


if __name__ == "__main__":
    main()
