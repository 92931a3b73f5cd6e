"""Device names as the configs and flags take them (no torch import: ``--help`` stays fast).

Usage::

    check_device("cuda:1")          # returns it; "gpu" raises a ValueError naming the choices
"""

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else a ValueError."""
    if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise ValueError(f"device must be one of {DEVICES} or 'cuda:N', got {device!r}")
    return device
