"""Tests for pyro_base.tasks.transforms: resize, normalisation, augmentation."""

import pytest
import torch

from pyro_base.tasks.transforms import (
    Augment,
    as_generator,
    channel_stats,
    cutout,
    normalize,
    random_crop,
    random_hflip,
    resize,
)

torch.set_num_threads(1)


def _batch(n=6, c=3, h=8, w=8, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_resize_shapes_and_identity():
    x = _batch()
    assert resize(x, 16).shape == (6, 3, 16, 16)
    assert resize(x, (12, 20)).shape == (6, 3, 12, 20)
    assert resize(x[0], 4).shape == (3, 4, 4)
    assert resize(x, 8) is x or torch.equal(resize(x, 8), x)
    assert resize(x, 16, mode="nearest").shape == (6, 3, 16, 16)
    const = torch.full((2, 3, 8, 8), 0.7)
    assert torch.allclose(resize(const, 13), torch.full((2, 3, 13, 13), 0.7), atol=1e-6)


def test_resize_bad_input():
    with pytest.raises(ValueError, match="size"):
        resize(_batch(), 0)
    with pytest.raises(ValueError, match="images must be"):
        resize(torch.zeros(8, 8), 4)


def test_normalize_and_channel_stats():
    x = _batch(n=64) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 1.0
    mean, std = channel_stats(x)
    assert mean.shape == std.shape == (3,)
    z = normalize(x, mean.tolist(), std.tolist())
    m2, s2 = channel_stats(z)
    assert torch.allclose(m2, torch.zeros(3), atol=1e-5)
    assert torch.allclose(s2, torch.ones(3), atol=1e-5)
    assert torch.allclose(normalize(x[0], 1.0, 2.0), (x[0] - 1.0) / 2.0)
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(x, 0.0, 0.0)
    with pytest.raises(ValueError, match="mean must have"):
        normalize(x, [0.0, 0.0], 1.0)


def test_random_crop_is_a_shift_with_zero_fill():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop(x, 2, generator=0)
    assert out.shape == x.shape
    for i in range(2):  # every output is the padded image cropped at some offset
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(
            torch.equal(out[i], padded[:, a : a + 6, b : b + 6]) for a in range(5) for b in range(5)
        )
    assert torch.equal(random_crop(x, 0), x)
    with pytest.raises(ValueError, match="padding"):
        random_crop(x, -1)


def test_hflip_and_cutout():
    x = _batch(n=200)
    flipped = random_hflip(x, 1.0, generator=0)
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(random_hflip(x, 0.0, generator=0), x)
    some = random_hflip(x, 0.5, generator=0)
    n_flipped = sum(torch.equal(some[i], x[i].flip(-1)) for i in range(200))
    assert 60 < n_flipped < 140
    cut = cutout(x, 4, generator=0)
    zeros = (cut == 0).all(1).sum((1, 2))  # pixels zeroed per image
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 4  # clipped at borders
    assert torch.equal(cutout(x, 0), x)
    with pytest.raises(ValueError, match="p must"):
        random_hflip(x, 1.5)


def test_augment_deterministic_and_validated():
    x = _batch(n=16, h=16, w=16)
    aug = Augment(crop_padding=2, flip=True, cutout=4)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(x, generator=3)
    c = aug(x, generator=4)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert isinstance(as_generator(None), torch.Generator)
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)
    with pytest.raises(ValueError, match="cutout"):
        Augment(cutout=-2)
    with pytest.raises(TypeError):
        Augment(2)  # keyword-only
