"""Tensor transforms for task images: resizing, per-source normalisation, training augmentation.

Everything works on float image batches ``[N, C, H, W]`` (a single ``[C, H, W]`` image is
accepted too) and is deterministic given a ``torch.Generator`` or an integer seed. Augmentation
follows the DARTS training recipe: random crop after zero padding, horizontal flip (off by
default: it is not label-preserving for every task, e.g. angle or digit tasks), and cutout.

Usage::

    from pyro_base.tasks.transforms import Augment, normalize, resize
    x = resize(x, 32)                                   # match the search space's input size
    x = normalize(x, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    aug = Augment(crop_padding=2, flip=True, cutout=8)
    x_train = aug(x, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as TF

GeneratorLike = torch.Generator | int | None


def as_generator(generator: GeneratorLike, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator``: passed through, seeded from an int, or fresh from the global RNG."""
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator(device=device)
    if generator is None:
        g.seed()
    else:
        g.manual_seed(int(generator))
    return g


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.ndim == 3:
        return x.unsqueeze(0), True
    if x.ndim != 4:
        raise ValueError(f"images must be [C, H, W] or [N, C, H, W], got shape {tuple(x.shape)}")
    return x, False


def resize(
    x: torch.Tensor, size: int | Sequence[int], *, mode: str = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """Resize images to ``size`` (an int for square images, or ``(height, width)``)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size}")
    xb, single = _batched(x)
    if tuple(xb.shape[-2:]) != hw:
        kwargs = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
        align = False if mode in ("bilinear", "bicubic") else None
        xb = nnf.interpolate(xb.float(), size=hw, mode=mode, align_corners=align, **kwargs)
    return xb[0] if single else xb


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of an image batch (for a source's constants)."""
    xb, _ = _batched(x)
    flat = xb.transpose(0, 1).reshape(xb.shape[1], -1).double()
    return flat.mean(1).float(), flat.std(1).float()


def normalize(
    x: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]
) -> torch.Tensor:
    """``(x - mean) / std`` per channel, with fixed per-source constants."""
    xb, single = _batched(x)
    c = xb.shape[1]
    m = torch.as_tensor(mean, dtype=xb.dtype, device=xb.device).reshape(-1)
    s = torch.as_tensor(std, dtype=xb.dtype, device=xb.device).reshape(-1)
    for name, v in (("mean", m), ("std", s)):
        if v.numel() not in (1, c):
            raise ValueError(f"{name} must have 1 or {c} entries, got {v.numel()}")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be positive, got {std}")
    out = (xb - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)
    return out[0] if single else out


def random_crop(x: torch.Tensor, padding: int, generator: GeneratorLike = None) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then crop each image back at a random offset."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    xb, single = _batched(x)
    if padding:
        g = as_generator(generator)
        n, _, h, w = xb.shape
        padded = TF.pad(xb, [padding], fill=0.0)
        oy, ox = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=g).to(xb.device)
        rows = (oy + torch.arange(h, device=xb.device))[:, None, :, None]  # [N, 1, H, 1]
        cols = (ox + torch.arange(w, device=xb.device))[:, None, None, :]  # [N, 1, 1, W]
        idx_n = torch.arange(n, device=xb.device)[:, None, None, None]
        idx_c = torch.arange(xb.shape[1], device=xb.device)[None, :, None, None]
        xb = padded[idx_n, idx_c, rows, cols]
    return xb[0] if single else xb


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: GeneratorLike = None) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    xb, single = _batched(x)
    flip = (torch.rand(xb.shape[0], generator=as_generator(generator)) < p).to(xb.device)
    xb = torch.where(flip[:, None, None, None], TF.horizontal_flip(xb), xb)
    return xb[0] if single else xb


def cutout(x: torch.Tensor, length: int, generator: GeneratorLike = None) -> torch.Tensor:
    """Zero a ``length`` x ``length`` square (clipped at the border) at a random centre per
    image, as in DeVries & Taylor (2017) and the DARTS recipe."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    xb, single = _batched(x)
    if length:
        g = as_generator(generator)
        n, _, h, w = xb.shape
        cy = torch.randint(0, h, (n, 1), generator=g).to(xb.device)
        cx = torch.randint(0, w, (n, 1), generator=g).to(xb.device)
        ys, xs = torch.arange(h, device=xb.device), torch.arange(w, device=xb.device)
        in_y = (ys >= cy - length // 2) & (ys < cy - length // 2 + length)  # [N, H]
        in_x = (xs >= cx - length // 2) & (xs < cx - length // 2 + length)  # [N, W]
        keep = ~(in_y[:, :, None] & in_x[:, None, :])
        xb = xb * keep[:, None].to(xb.dtype)
    return xb[0] if single else xb


@dataclass(frozen=True, kw_only=True)
class Augment:
    """Training augmentation: random crop with ``crop_padding``, optional flip, cutout.

    Apply it to training batches only; ``flip`` defaults to False because a left-right flip
    changes the label of orientation tasks (``relation``, digits).
    """

    crop_padding: int = 2
    flip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {self.cutout}")

    def __call__(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        g = as_generator(generator)
        x = random_crop(x, self.crop_padding, g)
        if self.flip:
            x = random_hflip(x, 0.5, g)
        return cutout(x, self.cutout, g)
