"""Every layer of the catalogue against every property of flowkit.testing.check_flow."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.testing import check_flow, check_memory_saving, perturb_parameters_
from flowkit.testing import strategies as fst

from .catalogue import CATALOGUE, Entry

EXAMPLES = 10


def _input(entry: Entry, data: st.DataObject, dtype: torch.dtype):
    channels = st.integers(max(entry.min_channels, 1), 5)
    if entry.multiscale:
        shapes = fst.multiscale_shapes(entry.multiscale, channels=channels)
    else:
        shapes = fst.image_shapes(channels=channels, max_size=6, multiple_of=entry.multiple_of)
    return data.draw(fst.states(shapes, dtype=dtype))


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
@settings(max_examples=EXAMPLES)
@given(data=st.data(), seed=fst.seeds(), dtype=fst.dtypes())
def test_inverse_and_logdet_exact(entry: Entry, data: st.DataObject, seed: int, dtype) -> None:
    x = _input(entry, data, dtype)
    channels = (x if isinstance(x, torch.Tensor) else x[0]).shape[1]
    torch.manual_seed(seed)
    flow = perturb_parameters_(entry.build(channels), scale=0.2, seed=seed)
    report = check_flow(flow, x)
    assert "logdet == log|det J| [eval]" in report.checked


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_check_flow_leaves_the_layer_untouched(entry: Entry) -> None:
    flow = perturb_parameters_(entry.build(4), seed=1)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    x = torch.randn(2, 4, 8, 8)
    if entry.multiscale:
        x = tuple(x[..., : 8 >> k, : 8 >> k] for k in range(entry.multiscale))
    check_flow(flow, x, rtol=1e-4)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, before[key]), key


MEMORY_SAVING = [entry for entry in CATALOGUE if "memory-saving" in entry.name]


@pytest.mark.parametrize("entry", MEMORY_SAVING, ids=lambda e: e.name)
@settings(max_examples=5, deadline=None)
@given(data=st.data(), seed=fst.seeds(), dtype=fst.dtypes())
def test_memory_saving_entries_run_the_engine_and_train_as_plain_autograd(
    entry: Entry, data: st.DataObject, seed: int, dtype
) -> None:
    x = _input(entry, data, dtype)
    channels = (x if isinstance(x, torch.Tensor) else x[0]).shape[1]
    torch.manual_seed(seed)
    flow = perturb_parameters_(entry.build(channels), scale=0.2, seed=seed)
    report = check_memory_saving(flow, x, seed=seed)
    assert report.param_grad_error is not None
