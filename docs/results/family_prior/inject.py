"""Put one run's refit logits into a copy of another run as its one family component:

    cp -r RUN COPY && python docs/results/family_prior/inject.py COPY SOURCE_RUN relation
    python scripts/evaluate.py COPY --arms select --select-from all architecture components \\
        --workers 2

``COPY``'s ``checkpoint.pt`` keeps its meta-trained ``W`` and refit; only
``arch_refit["components"]`` becomes ``{FAMILY: SOURCE_RUN's refit logits}``, so
``--select-from ... components`` offers one more start, ``architecture:FAMILY`` (those logits
sharpened by the copy's ``adapt_sharpness``, with ``W_0``'s weights). ``injected_seed4.json``
here is the evaluation of the default seed-4 run with the refit of ``python
scripts/meta_svi.py --seed 4 --families relation`` put in as ``relation``.
"""

import sys
from pathlib import Path

from pyro_base.checkpoint import load_checkpoint, save_checkpoint
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import build_space


def main(copy: Path, source: Path, family: str) -> None:
    space = build_space(MetaConfig.from_run_file(copy / "config.yaml"))
    state = load_checkpoint(copy / "checkpoint.pt", space=space)
    donor = load_checkpoint(source / "checkpoint.pt",
                            space=build_space(MetaConfig.from_run_file(source / "config.yaml")))
    if "arch_refit" not in state or "arch_refit" not in donor:
        sys.exit("both runs need an architecture refit (--arch-refit-tasks > 0)")
    logits = {k: v.clone() for k, v in donor["arch_refit"]["logits"].items()}
    if set(logits) != set(state["arch_refit"]["logits"]):
        sys.exit(f"{source} has the logits {sorted(logits)}, {copy} "
                 f"{sorted(state['arch_refit']['logits'])}")
    state["arch_refit"]["components"] = {family: logits}
    save_checkpoint(copy / "checkpoint.pt", state, space=space)
    print(f"{copy / 'checkpoint.pt'}: one component, {family!r}, from {source}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: inject.py COPY SOURCE_RUN FAMILY")
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
