"""Tasks and task distributions (see :mod:`pyro_base.tasks.base`).

Importing this package registers every task source; ``get_task_distribution(name, **options)``
builds one by name.

Usage::

    from pyro_base.tasks import get_task_distribution, list_task_distributions
    list_task_distributions()                 # ['digits', 'procedural', ...]
    dist = get_task_distribution("procedural", families=("motif",), image_size=16)
"""

from .base import (
    SPLITS,
    Task,
    TaskDistribution,
    get_task_distribution,
    list_task_distributions,
    register_task_distribution,
)

# Task sources: each import registers its distributions (one line per module).
from . import procedural  # noqa: E402,F401  isort: skip
from . import digits  # noqa: E402,F401  isort: skip
from . import cifar, fewshot, folder, idx, imagenet_ds  # noqa: E402,F401  isort: skip
from .mixture import MixtureTasks  # noqa: E402  isort: skip

__all__ = [
    "MixtureTasks",
    "SPLITS",
    "Task",
    "TaskDistribution",
    "get_task_distribution",
    "list_task_distributions",
    "register_task_distribution",
]
