"""flowkit without Triton: imports, every layer, both models, and the reference tests pass."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    import tests.kernels.hide_triton  # noqa: F401  (first: triton is not installed now)
    import torch
    import flowkit, flowkit.layers, flowkit.models, flowkit.kernels
    from flowkit.kernels import conv, coupling, pyramid, triton_available, use_kernels
    from flowkit.models.csflow import CSFlow
    from flowkit.models.pyramidflow import PyramidFlow

    assert not triton_available()
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("triton is not hidden")
    torch.manual_seed(0)
    for model, size in ((PyramidFlow(image_size=32, channels=4, levels=2, num_stack=1), 32),
                        (CSFlow(backbone="random", hidden=8, num_blocks=1), 128)):
        model = model.double().eval()
        features = model.features(torch.rand(2, 3, size, size, dtype=torch.float64))
        x = model.pyramid(features)[0] if hasattr(model, "pyramid") else features
        z, logdet = model.flow(x)
        back = model.flow.inverse(z)
        for a, b in zip(back, x, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        assert logdet.shape == (2,)
    with use_kernels(True):  # forcing on changes nothing on the CPU
        x, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 7, 7)
        torch.testing.assert_close(conv.large_kernel_conv2d(x, w),
                                   conv.large_kernel_conv2d_reference(x, w))
    assert "triton" not in sys.modules, "something imported triton"
    print("ok")
""")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_flowkit_layers_and_models_run_without_triton() -> None:
    result = _run(["-c", SCRIPT])
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_reference_tests_pass_without_triton() -> None:
    """The core tests (every layer, the engine, conditioning, errors, distributions) and the
    kernel package's Triton-free tests (dispatch, soft clamp), with Triton hidden."""
    tests = [
        "tests/flowkit/layers",
        "tests/flowkit/test_conditional.py",
        "tests/flowkit/test_reversible.py",
        "tests/flowkit/test_reversible_guarantees.py",
        "tests/flowkit/test_errors.py",
        "tests/flowkit/test_distribution.py",
        "tests/kernels/test_dispatch.py",
        "tests/kernels/test_soft_clamp.py",
    ]
    result = _run(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                   "-p", "tests.kernels.hide_triton", *tests])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_blocker_hides_triton() -> None:
    """The test above can fail: with the blocker, importing Triton is an ImportError."""
    result = _run(["-c", "import tests.kernels.hide_triton\nimport triton"])
    assert result.returncode != 0 and "No module named 'triton'" in result.stderr
