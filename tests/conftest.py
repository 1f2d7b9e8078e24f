"""Test-suite setup: Triton's CPU interpreter where no GPU is present, and a fixed seed per test."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is defined, i.e. before flowkit.kernels loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "flowkit",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("flowkit")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same random state, so failures reproduce."""
    torch.manual_seed(0)
