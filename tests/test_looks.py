"""The two looks: the sar look's lightness is the SAR's, its colour the model's; guided upsampling; Lee filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarcolor.colour import rgb_to_lab
from sarcolor.errors import SarColorError
from sarcolor.looks import (
    check_look,
    chroma_of,
    guided_upsample,
    lee_filter,
    sar_lightness,
    sar_look_from_rgb,
    with_grey,
)


def test_check_look() -> None:
    assert check_look("sar") == "sar" and check_look("optical") == "optical"
    with pytest.raises(SarColorError, match="unknown look 'fog'; use one of sar, optical"):
        check_look("fog")


def test_lee_filter_smooths_speckle_and_keeps_edges() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(1, 1, 64, 64)
    clean[..., 32:] = 1.0  # a strong edge between two flat fields
    noisy = clean + 0.12 * torch.randn(clean.shape, generator=g)
    out = lee_filter(noisy)
    assert out[..., 4:28, 4:28].std() < 0.6 * noisy[..., 4:28, 4:28].std()  # speckle in a flat field
    step = out[..., 34:].mean() - out[..., :30].mean()
    assert step == pytest.approx(1.0, abs=0.05)  # the edge survives at full height
    assert (out[..., 31] - out[..., 33]).abs().mean() > 0.5  # and stays sharp


def test_sar_lightness_keeps_water_dark_and_urban_bright() -> None:
    x = torch.tensor([-1.4, -1.0, 0.0, 1.0, 1.4]).repeat(1, 1, 8, 1).reshape(1, 1, 8, 5).repeat_interleave(5, -1)
    grey = sar_lightness(x)[0, 0, 4, ::5]
    assert torch.all(grey[1:] >= grey[:-1])  # monotonic in backscatter
    # water dark, yet lifted off black so its colour can show (L* about 17, not 3); built-up bright
    assert 0.12 < grey[0] < 0.2 and grey[-1] > 0.9


def test_guided_upsample_follows_the_guides_edges() -> None:
    guide = torch.zeros(1, 1, 64, 64)
    guide[..., 30:] = 1.0  # an edge that is not on the 4-px grid
    src = torch.nn.functional.avg_pool2d(guide * 2.0 - 1.0, 4)  # the colour, blurred at 1/4 resolution
    up = guided_upsample(guide, src, 4, eps=1e-4)
    bilinear = torch.nn.functional.interpolate(src, size=(64, 64), mode="bilinear", align_corners=False)
    truth = guide * 2.0 - 1.0
    assert (up - truth).abs().mean() < 0.5 * (bilinear - truth).abs().mean()


def test_swapping_the_grey_keeps_the_colour() -> None:
    rgb = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    grey = torch.full((1, 1, 16, 16), 0.5)
    out = (with_grey(grey, chroma_of(rgb)) + 1) / 2
    torch.testing.assert_close(chroma_of(out), chroma_of(rgb), atol=1e-5, rtol=0)  # in gamut: same chroma
    luma = (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(luma, grey[:, 0], atol=1e-5, rtol=0)


def test_sar_look_of_an_rgb_model_takes_the_sars_structure() -> None:
    x = torch.linspace(-1, 1, 32).repeat(32, 1)[None, None]  # a SAR ramp
    flat = torch.tensor([0.2, 0.5, -0.3]).view(1, 3, 1, 1).expand(1, 3, 32, 32)  # a uniform green prediction
    out = sar_look_from_rgb(x, flat)
    lab = rgb_to_lab(out)
    light = lab[0, 0].mean(0)
    assert float(light[-4] - light[3]) > 35  # lightness follows the ramp (vivid green: its ends held in gamut)
    assert torch.all(light[1:] >= light[:-1] - 1e-3)
    assert float(lab[0, 1].mean()) < -5  # and the colour stays green (negative a*)
    assert np.isfinite(out.numpy()).all() and out.min() >= -1 and out.max() <= 1


def test_a_colour_too_vivid_for_its_grey_moves_the_grey_not_the_colour() -> None:
    tan = torch.tensor([0.85, 0.65, 0.35]).view(1, 3, 1, 1)  # a vivid tan: out of gamut near black and white
    chroma = chroma_of(tan).expand(1, 2, 1, 3)
    grey = torch.tensor([0.02, 0.5, 0.98]).view(1, 1, 1, 3)  # dark, mid and bright ground
    out = (with_grey(grey, chroma) + 1) / 2
    torch.testing.assert_close(chroma_of(out), chroma, atol=1e-5, rtol=0)  # the colour survives everywhere
    luma = (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)[0, 0]
    assert luma[1] == pytest.approx(0.5, abs=1e-5)  # where it fits, the grey is the SAR's
    # at the extremes the grey moves only as far as it must: until its darkest (brightest) channel touches 0 (1)
    assert float(out[0, :, 0, 0].min()) == pytest.approx(0.0, abs=1e-5) and luma[0] > 0.02
    assert float(out[0, :, 0, 2].max()) == pytest.approx(1.0, abs=1e-5) and luma[2] < 0.98
    assert torch.all(luma[1:] > luma[:-1])  # and the order of the greys is kept


def test_sar_lightness_tone_maps_the_input_range() -> None:
    x = torch.linspace(-1, 1, 40).repeat(1, 1, 8, 1)
    torch.testing.assert_close(sar_lightness(x, (1.0, 0.0)), sar_lightness(x))
    # a tone range twice as wide, centred lower: every grey darker, the order kept
    dark = sar_lightness(x, (0.5, -0.5))[0, 0, 4, 2:-2]
    plain = sar_lightness(x)[0, 0, 4, 2:-2]
    assert torch.all(dark < plain) and torch.all(dark[1:] >= dark[:-1])
