"""The run context (device, AMP, backend, threads, this process's place in the job, built once per command
from the config), torch.distributed setup from torchrun's environment, collectives, samplers."""
from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

from hssn.errors import UserError


@dataclass(frozen=True)
class RunContext:
    """Where and how this process runs: ``rank`` of ``world_size`` on ``device``; ``amp`` = bf16 autocast
    (``train.amp`` on CUDA); ``backend`` = ``loss.backend`` (checked against the device); ``progress`` = tqdm bars
    (``train.progress``, main process only); ``threads`` = torch CPU threads. Built by :func:`start_run`."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    amp: bool = False
    backend: str = "auto"
    progress: bool = False
    threads: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def show_progress(self) -> bool:
        return self.progress and self.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when ``amp``, else nothing."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()


def choose_threads(environ=os.environ) -> tuple[int, str]:
    """(torch CPU threads for this process, why): ``OMP_NUM_THREADS`` when set; otherwise this process's
    share of the cores it may run on (divided among torchrun's ``LOCAL_WORLD_SIZE`` processes) minus the
    cores other jobs keep busy (the 1-minute load average), at least 1."""
    if environ.get("OMP_NUM_THREADS", "").strip():
        try:
            n = int(environ["OMP_NUM_THREADS"])
        except ValueError:
            raise UserError(f"OMP_NUM_THREADS must be a positive integer, got {environ['OMP_NUM_THREADS']!r}") from None
        if n < 1:
            raise UserError(f"OMP_NUM_THREADS must be a positive integer, got {n}")
        return n, "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    procs = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = max(1, int(cores - load + 0.5))
    n = max(1, min(cores // procs, free // procs))
    return n, f"{cores} cores, load {load:.1f}, {procs} process(es) per machine"


def set_threads(environ=os.environ) -> int:
    """Apply :func:`choose_threads` to torch and print the choice; returns the thread count."""
    n, why = choose_threads(environ)
    torch.set_num_threads(n)
    print(f"torch CPU threads: {n} ({why}; set OMP_NUM_THREADS to choose)")
    return n


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """"cpu", "cuda" (RuntimeError without a GPU) or "auto" (CUDA when available)."""
    if preference not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available: use train.device=cpu or auto")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def start_run(cfg) -> RunContext:
    """The :class:`RunContext` of a config (``train.device`` / ``amp`` / ``progress``, ``loss.backend``): joins
    the process group torchrun describes (:func:`init_distributed`); a backend that cannot run on the device is a
    :class:`UserError`."""
    from hssn_kernels import backends

    ctx = init_distributed(cfg.train.device)
    why = backends.unavailable_reason(cfg.loss.backend, ctx.device) if cfg.loss.backend != "auto" else None
    if why is not None:
        raise UserError(f"loss.backend={cfg.loss.backend!r}: {why}")
    return replace(ctx, amp=cfg.train.amp and ctx.device.type == "cuda", backend=cfg.loss.backend,
                   progress=cfg.train.progress, threads=torch.get_num_threads())


def init_distributed(preference: str = "auto") -> RunContext:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL on GPU, gloo on CPU; the context's
    place in the job and device (the other fields at their defaults: :func:`start_run` sets them).

    Without torchrun (or with one process) nothing is initialised. Calling it again reuses the group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        from torch.distributed.rendezvous import rendezvous

        store, rank, world = next(rendezvous("env://", rank, world))
        # torchrun --max-restarts keeps its store across a restart: a restarted round reading the group keys of
        # the round before (a killed worker's address) fails to connect, so each round gets its own key prefix
        store = dist.PrefixStore(f"hssn/round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=world)
    return RunContext(rank, world, local_rank, device)


def cleanup(finished: bool) -> None:
    """Leave the process group if one was joined. ``finished``: this rank's command ended normally, so every
    rank first meets at a barrier (none shuts its connections while a peer still completes the last
    collective, a documented cause of gloo / NCCL teardown hangs); after an error at once (a barrier would
    wait for ranks that may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    """The element-wise max of ``value`` over every process (a collective: every rank must call it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    out = value.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a one-element list outside torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class ResumableDistributedSampler(DistributedSampler):
    """A :class:`DistributedSampler` (works with one process too) that can start mid-epoch.

    ``set_start(n)`` skips the first ``n`` indices of this rank's share of the epoch (only the
    indices: no sample is loaded), so a resumed run sees the samples the interrupted one had not.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} out of range [0, {self.num_samples}]")
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of the first ``length`` items, in order, without padding
    (every item is evaluated exactly once across the ranks)."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
