"""The benchmark cases of :mod:`benchmarks.cases` as pytest-benchmark tests (one per case).

Each test times the mode's call (``benchmark.pedantic``: grads reset outside the timed region, CUDA
synchronized inside it) and records the case, its bytes-moved floor and its peak memory in ``extra_info``.
Backends group per (op, mode, shape, dtype) so ``--benchmark-compare`` lines them up.
"""
import pytest
import torch

from benchmarks import ops, runner


@pytest.fixture
def device(request):
    from benchmarks.conftest import bench_device

    return bench_device(request.config)


def test_case(benchmark, case, device, request):
    why = ops.unsupported_reason(case.op, case.backend, device, case.shape)
    if why is not None:
        pytest.skip(why)
    inputs = ops.make_inputs(case.op, case.shape, case.dtype, device)
    fn = ops.make_callable(case.op, case.backend, case.shape)
    prepare = runner.mode_runner(fn, inputs, case.mode)
    peak_above_inputs, _ = (runner.memory_gpu if device.type == "cuda" else runner.memory_cpu)(prepare)
    call, leaves = prepare()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def setup():
        for t in leaves:
            t.grad = None

    def timed():
        call()
        sync()

    rounds = request.config.getoption("--bench-rounds") or (20 if device.type == "cuda" else 3)
    benchmark.group = f"{case.op}-{case.mode}-{case.shape.name}-{case.dtype}"
    benchmark.extra_info.update(
        op=case.op, mode=case.mode, backend=case.backend, shape=case.shape.name, dtype=case.dtype,
        batch=case.shape.batch, channels=case.shape.channels, height=case.shape.height, width=case.shape.width,
        floor_bytes=ops.floor_bytes(case.op, case.mode, case.shape, case.dtype),
        peak_above_inputs_bytes=peak_above_inputs, device=runner.device_name(device))
    benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)
