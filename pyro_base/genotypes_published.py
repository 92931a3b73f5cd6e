"""Published cells, as plain data (``(op, input)`` pairs, two per intermediate node).

This module holds data only; :mod:`pyro_base.genotype` turns it into validated
:class:`~pyro_base.genotype.Genotype` objects (``PUBLISHED_GENOTYPES``, ``get_genotype``).

Usage::

    from pyro_base.genotype import get_genotype
    g = get_genotype("DARTS_V2")          # also "darts-v2", "NASNet-A", "amoebanet-a", ...

Sources (copied verbatim, only re-formatted):

* NASNet, AmoebaNet, DARTS_V1, DARTS_V2: quark0/darts ``cnn/genotypes.py`` (identical in
  chenxin061/pdarts and yuhuixu1993/PC-DARTS ``genotypes.py``).
* PNAS: the PNASNet-5 cell as transcribed in D-X-Y/AutoDL-Projects (from
  chenxi116/PNASNet.pytorch); the same cell is used for both cell types.
* ENAS: ianwhale/nsga-net ``models/micro_genotypes.py``. (Other transcriptions disagree on one
  pair of the normal cell, node 5: ``avg_pool_3x3`` from input 0 here, input 1 elsewhere.)
* SNAS: ``SNAS_mild`` of SNAS-Series/SNAS-Series ``SNAS/genotypes.py``.
* BASE_CIFAR, BASE_IMAGENET: ``CIFAR_TUNED`` and ``IMAGENET_TUNED`` of the released BASE code,
  ashaw596/meta_architecture_search ``our_models.py``; that code concatenates all four
  intermediate nodes (``concat = range(2, 6)``).

References:

* Zoph et al., "Learning Transferable Architectures for Scalable Image Recognition", CVPR 2018.
* Real et al., "Regularized Evolution for Image Classifier Architecture Search", AAAI 2019.
* Liu et al., "Progressive Neural Architecture Search", ECCV 2018.
* Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018.
* Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
* Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019.
* Shaw et al., "Meta Architecture Search", NeurIPS 2019.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

_PNAS_CELL = (
    ("sep_conv_5x5", 0), ("max_pool_3x3", 0),
    ("sep_conv_7x7", 1), ("max_pool_3x3", 1),
    ("sep_conv_5x5", 1), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 4), ("max_pool_3x3", 1),
    ("sep_conv_3x3", 0), ("skip_connect", 1),
)

PUBLISHED_DATA: MappingProxyType[str, dict[str, Any]] = MappingProxyType({
    "NASNet": dict(
        normal=(("sep_conv_5x5", 1), ("sep_conv_3x3", 0),
                ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
                ("avg_pool_3x3", 1), ("skip_connect", 0),
                ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
                ("sep_conv_3x3", 1), ("skip_connect", 1)),
        normal_concat=(2, 3, 4, 5, 6),
        reduce=(("sep_conv_5x5", 1), ("sep_conv_7x7", 0),
                ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
                ("avg_pool_3x3", 1), ("sep_conv_5x5", 0),
                ("skip_connect", 3), ("avg_pool_3x3", 2),
                ("sep_conv_3x3", 2), ("max_pool_3x3", 1)),
        reduce_concat=(4, 5, 6),
    ),
    "AmoebaNet": dict(
        normal=(("avg_pool_3x3", 0), ("max_pool_3x3", 1),
                ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
                ("sep_conv_3x3", 0), ("avg_pool_3x3", 3),
                ("sep_conv_3x3", 1), ("skip_connect", 1),
                ("skip_connect", 0), ("avg_pool_3x3", 1)),
        normal_concat=(4, 5, 6),
        reduce=(("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
                ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
                ("sep_conv_7x7", 0), ("avg_pool_3x3", 1),
                ("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)),
        reduce_concat=(3, 4, 6),
    ),
    "PNAS": dict(
        normal=_PNAS_CELL, normal_concat=(2, 3, 4, 5, 6),
        reduce=_PNAS_CELL, reduce_concat=(2, 3, 4, 5, 6),
    ),
    "ENAS": dict(
        normal=(("sep_conv_3x3", 1), ("skip_connect", 1),
                ("sep_conv_5x5", 1), ("skip_connect", 0),
                ("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0), ("avg_pool_3x3", 0),
                ("sep_conv_5x5", 1), ("avg_pool_3x3", 0)),
        normal_concat=(2, 3, 4, 5, 6),
        reduce=(("sep_conv_5x5", 0), ("avg_pool_3x3", 1),
                ("sep_conv_3x3", 1), ("avg_pool_3x3", 1),
                ("avg_pool_3x3", 1), ("sep_conv_3x3", 1),
                ("sep_conv_5x5", 4), ("avg_pool_3x3", 1),
                ("sep_conv_3x3", 5), ("sep_conv_5x5", 0)),
        reduce_concat=(2, 3, 6),
    ),
    "DARTS_V1": dict(
        normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
                ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0), ("skip_connect", 2)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("skip_connect", 2), ("max_pool_3x3", 0),
                ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("avg_pool_3x3", 0)),
        reduce_concat=(2, 3, 4, 5),
    ),
    "DARTS_V2": dict(
        normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0),
                ("skip_connect", 0), ("dil_conv_3x3", 2)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("max_pool_3x3", 1)),
        reduce_concat=(2, 3, 4, 5),
    ),
    "SNAS": dict(
        normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("dil_conv_3x3", 1),
                ("skip_connect", 0), ("skip_connect", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 0), ("dil_conv_5x5", 2)),
        reduce_concat=(2, 3, 4, 5),
    ),
    "BASE_CIFAR": dict(
        normal=(("skip_connect", 0), ("dil_conv_3x3", 1),
                ("max_pool_3x3", 0), ("dil_conv_5x5", 0),
                ("max_pool_3x3", 0), ("sep_conv_5x5", 0),
                ("max_pool_3x3", 1), ("dil_conv_5x5", 1)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("sep_conv_3x3", 0), ("sep_conv_5x5", 0),
                ("max_pool_3x3", 0), ("sep_conv_3x3", 0),
                ("skip_connect", 0), ("avg_pool_3x3", 3),
                ("max_pool_3x3", 1), ("skip_connect", 2)),
        reduce_concat=(2, 3, 4, 5),
    ),
    "BASE_IMAGENET": dict(
        normal=(("skip_connect", 0), ("max_pool_3x3", 1),
                ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
                ("sep_conv_5x5", 0), ("dil_conv_5x5", 3),
                ("sep_conv_5x5", 0), ("sep_conv_5x5", 2)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("sep_conv_5x5", 0),
                ("max_pool_3x3", 0), ("avg_pool_3x3", 0),
                ("sep_conv_5x5", 2), ("dil_conv_5x5", 2),
                ("avg_pool_3x3", 0), ("sep_conv_5x5", 3)),
        reduce_concat=(2, 3, 4, 5),
    ),
})
"""Canonical name -> the four genotype fields, as published."""

ALIASES: MappingProxyType[str, str] = MappingProxyType({
    "darts": "DARTS_V2",
    "nasnet-a": "NASNet",
    "amoebanet-a": "AmoebaNet",
    "pnasnet": "PNAS",
    "pnasnet-5": "PNAS",
    "enasnet": "ENAS",
    "snas-mild": "SNAS",
    "snas_mild": "SNAS",
    "base": "BASE_CIFAR",
})
"""Extra lower-case names accepted by ``get_genotype`` (besides case and ``-``/``_``)."""
