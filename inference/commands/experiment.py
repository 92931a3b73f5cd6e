"""BASE's claim, measured: meta-prior adaptation vs. architecture search from scratch.

Meta-trains BASE once (procedural families + digits 0-4; smoke: procedural only), then for
every held-out target (one test task per procedural family, digits 5-9, Fashion-MNIST when
/usr/share/datasets/fashion-mnist exists, CIFAR-10 / downsampled ImageNet under --data-dir)
obtains a genotype from BASE adaptation, BASE prior only, DARTS (1x and 10x budget), SNAS,
random search and the published DARTS_V2 / BASE_CIFAR / BASE_IMAGENET cells, trains each with
the same recipe for every seed, and writes to --out:

    results.json            every target x method x seed row (accuracy, search cost, genotype)
    results.md              tables, the cost claim and the op-preference check per target
    accuracy_vs_cost.png    one panel per target, log search seconds
    heatmap_<target>.png    op probabilities of the adapted posterior
    meta_training/          the meta-training run directory (config, metrics, checkpoint)

Usage::

    python scripts/experiment.py --preset smoke --out runs/exp-smoke         # ~30 s, for tests
    OMP_NUM_THREADS=1 python scripts/experiment.py --preset cpu --out runs/experiment
    python scripts/experiment.py --preset gpu --data-dir ~/data --out runs/experiment-gpu

Budgets (search_steps S = BASE adaptation steps = supernet passes of DARTS, SNAS and random
search; DARTS-10x gets 10 S) are listed in ``--help`` (the epilog) and in
inference/run/experiment.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PRESETS = ("smoke", "cpu", "gpu")


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets: smoke = tiny space, 1 meta-step, S=2, 2 targets, 1 seed; "
               "cpu = cpu space, 60 meta-steps x 4 tasks x T=5, S=16 (DARTS-10x: 160 "
               "passes), train 6 epochs C=8 3 cells, 3 seeds, 7 targets, 10.6 min measured "
               "on 2 cores; gpu = DARTS space, 20 meta-steps x 4 x T=3, S=16 at batch 64, "
               "train 10 epochs C=16 8 cells, 3 seeds (estimated ~15 min on an H200 for 7 "
               "targets; --targets to trim)."
               " Meta-training data: procedural families + digits 0-4 (smoke: procedural).")
    p.add_argument("--preset", choices=PRESETS, default="cpu", help="budgets (default: cpu)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default runs/experiment-PRESET-TIME)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory holding CIFAR-10 python batches and/or downsampled "
                        "ImageNet batches: adds those targets")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds per genotype (default: preset; smoke 1, else 3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="default: preset (cpu for smoke/cpu, auto for gpu)")
    p.add_argument("--targets", nargs="+", default=None,
                   help="only these targets (motif dilated_motif relation cooccurrence colour "
                        "digits fashion_mnist cifar10 imagenet_ds)")
    p.add_argument("--search-steps", type=int, default=None,
                   help="S: BASE adaptation steps and baseline supernet passes")
    p.add_argument("--meta-steps", type=int, default=None, help="meta-training steps")
    p.add_argument("--train-epochs", type=int, default=None, help="epochs per genotype")
    add_common_arguments(p)
    return p


def resolve_config(args: argparse.Namespace) -> Any:
    from pyro_base.config import read_settings
    from pyro_base.inference.run.experiment import ExperimentConfig

    settings = read_settings(args.config, ExperimentConfig) if args.config else {}
    flags = {"seeds": args.seeds, "device": args.device, "search_steps": args.search_steps,
             "meta_steps": args.meta_steps, "train_epochs": args.train_epochs,
             "targets": tuple(args.targets) if args.targets else None}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if isinstance(settings.get("targets"), list):
        settings["targets"] = tuple(settings["targets"])
    return ExperimentConfig.preset(args.preset, **settings)


def machine() -> dict[str, Any]:
    import os

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def run(cfg: Any, out: Path, *, data_dir: Path | None, progress: bool) -> dict[str, Any]:
    """The whole experiment; returns what results.json holds."""
    from pyro_base.inference.evaluate.train import train_genotype
    from pyro_base.inference.report.experiment_report import op_preference
    from pyro_base.inference.run.experiment import build_targets, meta_train, search_genotypes

    started = time.perf_counter()
    targets = build_targets(cfg, data_dir=data_dir)
    meta = meta_train(cfg, progress=progress, run_dir=out / "meta_training")
    report: dict[str, Any] = {
        "config": cfg.to_dict(), "machine": machine(), "targets": {},
        "meta_training": {"seconds": meta.seconds, "images": meta.images,
                          "steps": cfg.meta_steps, "final_loss": meta.losses[-1:],
                          "sources": ["procedural"] + (["digits 0-4"] if cfg.meta_digits
                                                       else [])},
        "rows": [], "op_preference": {}}
    posteriors = {}
    for target in targets:
        t0 = time.perf_counter()
        task = target.task
        report["targets"][target.key] = {"task": task.name, "n_classes": task.n_classes,
                                         "n_train": len(task.support[0]),
                                         "n_test": len(task.query[0])}
        for found in search_genotypes(cfg, meta, target, progress=progress):
            if found.method == "base_adapt":
                posteriors[target.key] = found.posterior
                report["op_preference"][target.key] = op_preference(
                    found.posterior.op_probs(), meta.space.ops, target.family)
            for seed in range(cfg.seeds):
                res = train_genotype(found.genotype, task, cfg.train_config(seed=seed),
                                     progress=False)
                report["rows"].append({
                    "target": target.key, "task": task.name, "method": found.method,
                    "seed": seed, "accuracy": res.top1, "search_seconds": found.seconds,
                    "search_images": found.images, "search_passes": found.passes,
                    "train_seconds": res.seconds, "params_M": res.params_M,
                    "genotype": found.genotype.to_dict(), **found.extra})
        logging.getLogger("experiment").info("%s done in %.1f s", target.key,
                                             time.perf_counter() - t0)
        (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    report["posteriors"] = posteriors
    report["model"] = meta.model
    report["target_objects"] = targets
    report["wall_seconds"] = time.perf_counter() - started
    return report


def write_outputs(report: dict[str, Any], out: Path, cfg: Any, argv: Sequence[str]) -> dict:
    from pyro_base.inference.report.experiment_report import (
        claim_verdict,
        plot_accuracy_vs_cost,
        plot_family_heatmaps,
        summarise,
        write_markdown,
    )

    posteriors = report.pop("posteriors")
    model, targets = report.pop("model"), report.pop("target_objects")
    summary = summarise(report["rows"])
    n = max(len(summary), 1)
    meta = report["meta_training"]
    verdicts = {t: claim_verdict(m, meta_seconds_per_target=meta["seconds"] / n,
                                 meta_images_per_target=meta["images"] / n)
                for t, m in summary.items()}
    report.update(summary=summary, verdicts=verdicts)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_accuracy_vs_cost(summary, out / "accuracy_vs_cost.png",
                          meta_seconds_per_target=meta["seconds"] / n)
    heatmaps = plot_family_heatmaps(model, posteriors, targets, out,
                                    temperature=cfg.adapt_temperature)
    m = report["machine"]
    header = [f"Command: `python scripts/experiment.py {' '.join(argv)}`  ",
              f"Machine: {m['platform']}, {m['cpus']} CPUs, torch {m['torch']} "
              f"({m['torch_threads']} threads), CUDA: {m['cuda']}; wall "
              f"{report['wall_seconds']:.0f} s.  ",
              f"Budgets: S = {cfg.search_steps} supernet passes (BASE adaptation steps; DARTS "
              f"{cfg.search_steps // 2} steps of 2 passes; DARTS-10x "
              f"{cfg.darts_multiplier * cfg.search_steps // 2} steps; SNAS {cfg.search_steps} "
              f"steps; random {cfg.random_candidates} candidates), batch {cfg.search_batch}, "
              f"space `{cfg.space}`. Training: {cfg.train_epochs} epochs, C={cfg.train_channels}"
              f", {cfg.train_layers} cells, seeds 0..{cfg.seeds - 1} (std over training seeds "
              "of one searched genotype).", "",
              "![accuracy vs cost](accuracy_vs_cost.png)", "",
              *[f"![{p.stem}]({p.name})" for p in heatmaps]]
    write_markdown(out / "results.md", summary=summary, verdicts=verdicts,
                   preferences=report["op_preference"], meta=meta, header=header)
    return summary


def main(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: "
                                                             "%(message)s")
    try:
        cfg = resolve_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / time.strftime(f"experiment-{args.preset}-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = run(cfg, out, data_dir=args.data_dir, progress=args.progress)
    except (ValueError, FileNotFoundError, MemoryError) as e:  # InsufficientMemoryError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = write_outputs(report, out, cfg, argv)
    meta = report["meta_training"]
    print(f"meta-training: {meta['seconds']:.1f} s, {meta['images']:,} images")
    print(f"{'target':15s} {'method':14s} {'acc':>6s} {'std':>6s} {'search s':>9s} "
          f"{'images':>9s}")
    for target, methods in summary.items():
        for method, m in methods.items():
            print(f"{target:15s} {method:14s} {m['mean']:6.3f} {m['std']:6.3f} "
                  f"{m['search_seconds']:9.1f} {m['search_images']:9d}")
        v = report["verdicts"][target]
        print(f"{target:15s} claim {'holds' if v['holds'] else 'does not hold'} "
              f"(cost ratio {v['cost_ratio_seconds']:.3f})")
    print(f"wall {report['wall_seconds']:.0f} s; results in {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(build_parser().parse_args(argv), argv)
