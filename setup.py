"""Build script: the Python packages plus the native extension ``hssn_kernels._C`` (csrc/).

The extension needs the torch it links against at build time, so install without build isolation:

    pip install torch==2.14.1 torchvision==0.29.1 && pip install --no-build-isolation -e ".[test]"

Switches (environment variables):

* ``HSSN_CPU_ONLY=1``: CPU kernels only, even with a CUDA build of torch and nvcc.
* ``HSSN_FORCE_CUDA=1``: build the CUDA kernels (fails if the toolkit is missing).
* ``TORCH_CUDA_ARCH_LIST``: GPU architectures, default ``"8.0;9.0"`` (A100, H100).
* ``CUDA_HOME``: the toolkit; default: the parent of ``nvcc``'s folder if it holds ``include/cuda.h``,
  else ``/usr/local/cuda``.
* ``MAX_JOBS``: parallel compile jobs (ninja).
* ``HSSN_NO_EXTENSION=1``: pure-Python install (the "cpu"/"cuda" backends then report why they are missing).
"""
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "8.0;9.0"
STACKS = json.loads((ROOT / "hssn_kernels" / "tested_stacks.json").read_text())["stacks"]


def _oldest(package: str) -> str:
    """The oldest version of ``package`` among the stacks CI tests (the lower bound we claim). Plain
    numeric versions there; the package itself compares versions with ``packaging``, which this build
    script cannot assume is installed yet."""
    return min((s[package] for s in STACKS), key=lambda v: tuple(int(p) for p in v.split(".")))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME, nvcc's parent when it has include/cuda.h, else /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = Path(os.path.realpath(nvcc)).parent.parent
        if (root / "include" / "cuda.h").exists():
            return str(root)
    if Path("/usr/local/cuda/include/cuda.h").exists():
        return "/usr/local/cuda"
    return None


def _extensions():
    """([extension], cmdclass), or ([], {}) when torch is not importable or the build is switched off."""
    if _flag("HSSN_NO_EXTENSION"):
        return [], {}
    cuda_home = _cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension reads it
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("hssn setup: torch is not importable here (build isolation?); building without the native "
              "extension. Use: pip install --no-build-isolation -e .", file=sys.stderr)
        return [], {}

    with_cuda = torch.version.cuda is not None and cuda_home is not None and not _flag("HSSN_CPU_ONLY")
    if _flag("HSSN_FORCE_CUDA"):
        if cuda_home is None:
            raise RuntimeError("HSSN_FORCE_CUDA=1 but no CUDA toolkit found (set CUDA_HOME)")
        with_cuda = True
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS) if with_cuda else ""

    csrc = Path("csrc")
    sources = [str(csrc / "hssn.cpp")] + sorted(str(p) for d in ("ops", "cpu") for p in (csrc / d).glob("*.cpp"))
    cxx = ["-O3"]
    link = []
    if "OpenMP" in torch.__config__.parallel_info():  # at::parallel_for runs OpenMP regions in our code
        cxx += ["-fopenmp", "-DAT_PARALLEL_OPENMP"]
        link += ["-fopenmp"]
    macros = [
        ("HSSN_TORCH_VERSION", f'"{torch.__version__}"'),
        ("HSSN_CUDA_VERSION", f'"{torch.version.cuda or ""}"' if with_cuda else '""'),
        ("HSSN_CUDA_ARCHS", f'"{archs}"'),
        ("Py_LIMITED_API", "0x030A0000"),
    ]
    if with_cuda:
        sources += sorted(str(p) for p in (csrc / "cuda").glob("*.cu"))
        nvcc = ["-O3", "--expt-relaxed-constexpr"]
        if _flag("HSSN_PTXAS_VERBOSE"):
            nvcc.append("-Xptxas=-v")
        ext = cpp_extension.CUDAExtension(
            "hssn_kernels._C", sources, define_macros=macros + [("HSSN_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link, py_limited_api=True,
        )
    else:
        ext = cpp_extension.CppExtension(
            "hssn_kernels._C", sources, define_macros=macros, extra_compile_args={"cxx": cxx},
            extra_link_args=link, py_limited_api=True,
        )
    print(f"hssn setup: building hssn_kernels._C with {'CPU + CUDA (' + archs + ')' if with_cuda else 'CPU'} "
          f"kernels, CUDA_HOME={cuda_home}", file=sys.stderr)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="hssn",
    version="0.1.0",
    description="Fused kernels and a training stack for hierarchical semantic segmentation (HSSN, CVPR 2022)",
    packages=find_packages(include=["hssn_kernels*", "hssn*", "benchmarks*"]),
    package_data={"hssn_kernels": ["py.typed", "gpu_table.json", "tested_stacks.json"], "hssn": ["hierarchies/data/*", "hierarchies/mappings/*.yaml", "configs/*.yaml"]},
    python_requires=f">={_oldest('python')}",
    install_requires=[
        f"torch>={_oldest('torch')}",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "attrs>=22.2",
        "tqdm>=4.60",
        "packaging>=21",
    ],
    extras_require={
        "triton": [f"triton>={_oldest('triton')}"],
        "train": [
            "timm>=1.0",
            f"torchvision>={_oldest('torchvision')}",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "pillow>=9.0",
            "tensorboard>=2.12",
        ],
        "export": ["onnx>=1.16", "onnxruntime>=1.17", "onnxscript>=0.5"],
        "test": [
            "onnx>=1.16",
            "onnxruntime>=1.17",
            "onnxscript>=0.5",
            "pytest>=7.4",
            "hypothesis>=6.80",
            "pytest-benchmark>=4.0",
            "pytest-xdist>=3.3",
            "timm>=1.0",
            f"torchvision>={_oldest('torchvision')}",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "pillow>=9.0",
            "tensorboard>=2.12",
        ],
    },
    entry_points={"console_scripts": ["hssn=hssn.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
