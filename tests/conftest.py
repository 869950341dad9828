"""Test-session setup: Triton's CPU interpreter when no GPU, offline timm, deterministic seeds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
if os.environ.get("HSSN_TEST_GPU") != "1":
    # Must happen before triton is imported anywhere: kernels decorated afterwards run on numpy.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


MAX_AUTO_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """``pytest -n auto``: one worker per CPU, at most MAX_AUTO_WORKERS (each worker runs torch with its own
    thread pool; more of them oversubscribe the cores)."""
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


def pytest_report_header(config):
    return f"torch {torch.__version__}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}"


@pytest.fixture
def poisoned(monkeypatch):
    """Every Triton kernel output allocated NaN / -7-filled (``_triton_utils.empty``), so unwritten elements fail."""
    from hssn_kernels import _triton_utils
    from trees import poison_empty

    monkeypatch.setattr(_triton_utils, "empty", poison_empty)


@pytest.fixture
def on_device():
    """New tensors on ``trees.DEVICE`` for the test (CUDA with HSSN_TEST_GPU=1, else CPU)."""
    from trees import DEVICE

    torch.set_default_device(DEVICE)
    yield DEVICE
    torch.set_default_device("cpu")
