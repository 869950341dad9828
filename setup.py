"""Build script: the Python packages plus (see csrc/) the native extension."""
from setuptools import find_packages, setup

setup(
    name="hssn",
    version="0.1.0",
    description="Fused kernels and a training stack for hierarchical semantic segmentation (HSSN, CVPR 2022)",
    packages=find_packages(include=["hssn_kernels*", "hssn*", "benchmarks*"]),
    package_data={"hssn_kernels": ["py.typed"], "hssn": ["hierarchies/data/*", "configs/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "tqdm>=4.60",
    ],
    extras_require={
        "triton": ["triton>=3.0"],
        "train": [
            "timm>=1.0",
            "torchvision>=0.19",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "pillow>=9.0",
            "tensorboard>=2.12",
        ],
        "test": [
            "pytest>=7.4",
            "hypothesis>=6.80",
            "pytest-benchmark>=4.0",
            "pytest-xdist>=3.3",
            "timm>=1.0",
            "torchvision>=0.19",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "pillow>=9.0",
            "tensorboard>=2.12",
        ],
    },
    entry_points={"console_scripts": ["hssn=hssn.cli:main"]},
)
