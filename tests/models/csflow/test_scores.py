"""CS-Flow's image scores (the paper's mean, the top-k mean of the map), colour channels and
feature standardization: properties over random shapes, dtypes, fractions and seeds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.models.csflow import CSFlow, MultiScaleFeatures, top_fraction_mean
from flowkit.models.csflow.features import IMAGENET_MEAN, IMAGENET_STD
from flowkit.testing import perturb_parameters_

DTYPES = (torch.float32, torch.float64)


def tiny(**overrides) -> CSFlow:
    config = dict(backbone="random", hidden=8, num_blocks=1, feature_stride=16)
    config.update(overrides)
    return perturb_parameters_(CSFlow(**config), scale=0.1)


@settings(deadline=None, max_examples=40)
@given(batch=st.integers(1, 4), shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1),
       fraction=st.floats(1e-3, 1.0))
def test_the_top_fraction_mean_is_between_the_mean_and_the_max_and_sorts_like_numpy(
    batch: int, shape: list[int], dtype: torch.dtype, seed: int, fraction: float
) -> None:
    maps = torch.randn(batch, *shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    flat = maps.flatten(1)
    n = flat.shape[1]
    scores = top_fraction_mean(maps, fraction)
    assert scores.shape == (batch,) and scores.dtype == dtype
    k = max(1, round(fraction * n))
    expected = flat.sort(dim=1, descending=True).values[:, :k].mean(dim=1)
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)
    # k = all positions: the mean; one position: the maximum; in between, between the two
    torch.testing.assert_close(top_fraction_mean(maps, 1.0), flat.mean(dim=1))
    assert torch.equal(top_fraction_mean(maps, 0.5 / n), flat.amax(dim=1))
    tol = 1e-12 if dtype is torch.float64 else 1e-5
    assert bool((scores >= flat.mean(dim=1) - tol).all())
    assert bool((scores <= flat.amax(dim=1) + tol).all())


@settings(deadline=None, max_examples=10)
@given(top_k=st.floats(0.01, 1.0), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 1000),
       map_mode=st.sampled_from(["finest", "all"]))
def test_topk_scores_are_the_top_fraction_of_the_models_own_maps(
    top_k: float, dtype: torch.dtype, seed: int, map_mode: str
) -> None:
    torch.manual_seed(seed)
    model = tiny(image_score="topk", top_k=top_k, map_mode=map_mode).to(dtype).eval()
    images = torch.rand(2, 3, 64, 128, dtype=dtype)
    maps, scores = model.predict(images)
    assert maps.shape == (2, 1, 64, 128) and scores.shape == (2,) and scores.dtype == dtype
    torch.testing.assert_close(scores, top_fraction_mean(maps, top_k), rtol=0, atol=0)
    paper = tiny(map_mode=map_mode, image_score="mean").to(dtype).eval()
    paper.load_state_dict(model.state_dict())
    paper_maps, paper_scores = paper.predict(images)  # the same maps, the paper's score
    torch.testing.assert_close(paper_maps, maps, rtol=0, atol=0)
    z, _ = paper.latents(images)
    expected = 0.5 * torch.cat([t.flatten(1) for t in z], dim=1).square().mean(dim=1)
    torch.testing.assert_close(paper_scores, expected)


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 1000), dtype=st.sampled_from(DTYPES),
       map_mode=st.sampled_from(["finest", "all"]))
def test_the_channel_max_map_is_the_largest_latent_of_each_position_upsampled(
    seed: int, dtype: torch.dtype, map_mode: str
) -> None:
    torch.manual_seed(seed)
    model = tiny(map_channels="max", map_mode=map_mode).to(dtype).eval()
    images = torch.rand(2, 3, 64, 128, dtype=dtype)
    z, _ = model.latents(images)
    levels = [F.interpolate(t.square().amax(dim=1, keepdim=True), size=(64, 128),
                            mode="bilinear", align_corners=False) for t in z]
    expected = levels[0] if map_mode == "finest" else levels[0] * levels[1] * levels[2]
    torch.testing.assert_close(model.anomaly_map(images), expected, rtol=0, atol=0)
    mean = tiny(map_mode=map_mode, map_channels="mean").to(dtype).eval()
    mean.load_state_dict(model.state_dict())
    # the maximum over the channels bounds their mean at every level, hence every map value
    assert bool((mean.anomaly_map(images) <= model.anomaly_map(images) * (1 + 1e-6)).all())
    with pytest.raises(ValueError, match="unknown channel reduction 'sum'; choose one of "
                       "'mean', 'max'"):
        CSFlow(backbone="random", map_channels="sum")


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, math.nan, True, "0.1"])
def test_an_invalid_top_k_or_image_score_is_refused_naming_the_choices(bad) -> None:
    with pytest.raises(ValueError, match=r"top_k .* in \(0, 1\]"):
        top_fraction_mean(torch.rand(2, 5), bad)
    with pytest.raises(ValueError, match=r"top_k .* in \(0, 1\]"):
        CSFlow(backbone="random", top_k=bad)
    with pytest.raises(ValueError, match="unknown image score 'max'; choose one of 'mean', 'topk'"):
        CSFlow(backbone="random", image_score="max")


@settings(deadline=None, max_examples=10)
@given(grid=st.sampled_from([1, 2, 4]), seed=st.integers(0, 1000),
       dtype=st.sampled_from(DTYPES))
def test_colour_channels_are_the_mean_normalized_colour_of_each_sub_cell(
    grid: int, seed: int, dtype: torch.dtype
) -> None:
    features = MultiScaleFeatures("random", stride=16, color_grid=grid).to(dtype)
    plain = MultiScaleFeatures("random", stride=16).to(dtype)
    assert features.channels == plain.channels + 3 * grid**2
    images = torch.rand(2, 3, 128, 64, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1)
    normalized = (images - mean) / std
    for k, (ours, theirs) in enumerate(zip(features(images), plain(images), strict=True)):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours[:, : plain.channels], theirs, rtol=0, atol=0)
        scaled = normalized if k == 0 else F.interpolate(
            normalized, size=(128 >> k, 64 >> k), mode="bilinear", align_corners=False,
            antialias=True)
        cell = 16 // grid
        colours = F.avg_pool2d(scaled, cell)  # [B, 3, H g / 16, W g / 16]
        b, _, h, w = ours.shape
        # channel 3 (i g + j) + c of cell (y, x) is the colour c of sub-cell (y g + i, x g + j)
        expected = colours.view(b, 3, h, grid, w, grid).permute(0, 1, 3, 5, 2, 4)
        torch.testing.assert_close(ours[:, plain.channels :], expected.reshape(b, -1, h, w))


@pytest.mark.parametrize("bad", [-1, 17, 1.5, True])
def test_an_invalid_colour_grid_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="color_grid must be an integer from 0"):
        MultiScaleFeatures("random", stride=16, color_grid=bad)


@settings(deadline=None, max_examples=8)
@given(seed=st.integers(0, 1000), dtype=st.sampled_from(DTYPES))
def test_standardization_is_set_by_the_first_training_batch_and_then_fixed(
    seed: int, dtype: torch.dtype
) -> None:
    torch.manual_seed(seed)
    model = tiny(standardize=True, color_grid=2).to(dtype)
    first, second = torch.rand(4, 3, 64, 64, dtype=dtype), torch.rand(4, 3, 64, 64, dtype=dtype)
    model.eval().predict(first)  # evaluation never sets the statistics
    assert not bool(model.standardized)
    model.train().loss(first)
    assert bool(model.standardized)
    stats = (model.feature_mean.clone(), model.feature_std.clone())
    model.loss(second)
    assert torch.equal(stats[0], model.feature_mean) and torch.equal(stats[1], model.feature_std)
    # the first batch's features, standardized, have mean 0 and standard deviation 1
    features = model.features(first)
    for k, f in enumerate(model._standardized(features)):
        tol = 1e-10 if dtype is torch.float64 else 1e-4
        torch.testing.assert_close(f.mean(dim=(0, 2, 3)), torch.zeros_like(f[0, :, 0, 0]),
                                   rtol=0, atol=tol)
        torch.testing.assert_close(f.std(dim=(0, 2, 3)), torch.ones_like(f[0, :, 0, 0]),
                                   rtol=tol, atol=tol)
        assert model.feature_mean.shape[0] == 3 and k < 3
    # the statistics travel with the state dict
    copy = tiny(standardize=True, color_grid=2).to(dtype)
    copy.load_state_dict(model.state_dict())
    torch.testing.assert_close(copy.eval().predict(first)[1], model.eval().predict(first)[1])
    copy.train().loss(second)  # loaded as set: another batch does not set them again
    assert torch.equal(copy.feature_mean, model.feature_mean)
    # a state loaded as unset over a set model: the next training batch sets them
    model.load_state_dict(tiny(standardize=True, color_grid=2).to(dtype).state_dict())
    model.train().loss(second)
    assert bool(model.standardized) and not torch.equal(model.feature_mean, stats[0])
