"""Training checkpoints: model, optimizer, step, data position, RNG states, config, class tree.

Files are ``{output_dir}/checkpoints/step_{step:07d}.pt``, loadable with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import random
import re
from pathlib import Path

import numpy as np
import torch

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .builders import build_model

CHECKPOINT_RE = re.compile(r"step_(\d+)\.pt$")


def rng_state() -> dict:
    """This process's Python, NumPy, torch CPU and CUDA RNG states (tensors and plain types only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}.pt"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints in ``output_dir``, oldest step first."""
    folder = Path(output_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := CHECKPOINT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(path: Path, state: dict, keep: int | None = None) -> Path:
    """Write ``state`` atomically (temp file, fsync, rename, fsync of the folder); then keep ``path`` and
    the newest ``keep - 1`` other step files. The file just written is never pruned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:  # a full disk surfaces from torch.save as "unexpected pos" RuntimeError
        tmp.unlink(missing_ok=True)
        usage = shutil.disk_usage(path.parent)
        full = isinstance(err, OSError) and err.errno == errno.ENOSPC or usage.free < 64 << 20
        raise OSError(errno.ENOSPC if full else getattr(err, "errno", None) or errno.EIO,
                      f"could not save checkpoint {path}: "
                      + (f"the disk is full ({usage.free >> 20} MiB free)" if full else f"{type(err).__name__}: {err}")
                      + "; the partial file was removed, the previous checkpoints are kept") from None
    tmp.replace(path)
    _fsync_dir(path.parent)
    if keep:
        others = [p for p in list_checkpoints(path.parent.parent) if p != path]
        for old in others[: max(len(others) - (keep - 1), 0)]:
            old.unlink()
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


LOCK_NAME = ".train.lock"
"""The lock file a training run holds in its output folder (its pid inside, for the error message)."""


def lock_output_dir(output_dir: str | Path):
    """Take the exclusive lock of ``output_dir`` (created if missing) for this process's run and return the
    open lock file; the lock is released when it is closed or the process ends, however it ends (a POSIX
    record lock: held per process, so one process may reopen it). Raises ``ValueError`` naming the folder
    and the holder's pid when another process holds it."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"output folder {folder} is in use by another training run (pid {holder}); wait for "
                        "it to finish or pass another train.output_dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def remove_partial_saves(output_dir: str | Path) -> list[Path]:
    """Delete the ``*.pt.tmp`` files a killed save left behind; returns them."""
    found = sorted((Path(output_dir) / "checkpoints").glob("*.pt.tmp"))
    for p in found:
        p.unlink()
    return found


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint dict; FileNotFoundError naming the path when missing, ValueError naming it when the
    file is empty, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError / EOFError / pickle errors for a bad file
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200] if str(err) else 'empty or truncated'})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint (holds a {type(state).__name__}, expected a dict)")
    return state


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """None, the newest checkpoint of ``output_dir`` for "auto" (None if there is none), or the path."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"train.resume checkpoint not found: {path}")
    return path


def model_weights(checkpoint: dict) -> dict:
    """The model state dict of a training checkpoint or an exported state dict."""
    return checkpoint["model"] if "model" in checkpoint and isinstance(checkpoint["model"], dict) else checkpoint


NORMALISATION_BUFFERS = ("pixel_mean", "pixel_std")
"""The model's input normalisation (``HSSNModel``): a checkpoint without them (written before they were
buffers) keeps the config's ``model.mean`` / ``std``; one with them brings its own."""


def load_model_weights(model: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Load the weights of ``checkpoint`` (read from ``path``) into ``model``; ``ValueError`` naming the file and
    the first missing, unexpected or differently shaped tensor (another model, head width or tree) instead of
    load_state_dict's listing. The checkpoint's input normalisation replaces the model's (the config's)."""
    if "model" in checkpoint and not isinstance(checkpoint["model"], dict):
        raise UserError(f"{path}: its 'model' entry is {type(checkpoint['model']).__name__}, not a state dict")
    weights = dict(model_weights(checkpoint))
    own = model.state_dict()
    for key in NORMALISATION_BUFFERS:  # checkpoints written before the normalisation moved into the model
        if key in own and key not in weights:
            weights[key] = own[key]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which this model lacks"
        raise UserError(f"{path}: not weights of this model ({model.__class__.__name__}): it {what} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors); check model.name / "
                        "model.kwargs and the dataset's tree")
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: weight {key!r} is a {type(value).__name__}, not a tensor")
        if value.shape != own[key].shape:
            raise UserError(f"{path}: weight {key!r} has shape {tuple(value.shape)}, this model's has "
                            f"{tuple(own[key].shape)} (another head width or class tree?)")
    model.load_state_dict(weights)


def checkpoint_meta(checkpoint: dict, path: str | Path = "checkpoint") -> dict | None:
    """``{"hierarchy": ClassHierarchy, "palette", "flip_pairs", "ignore_index", "class_names"}`` stored by
    the trainer, or None for a bare state dict; ``ValueError`` naming ``path`` when it is broken."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    if not meta:
        return None
    try:
        return {**meta, "hierarchy": ClassHierarchy.from_dict(meta["hierarchy"]),
                "palette": torch.tensor(meta["palette"], dtype=torch.uint8)}
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise UserError(f"{path}: broken meta (the tree / palette stored by hssn train): "
                        f"{type(err).__name__}: {err}") from None


def load_trained_model(cfg: dict, checkpoint: dict, checkpoint_path: str | Path, hierarchy,
                       device: torch.device) -> torch.nn.Module:
    """The config's model with the weights of ``checkpoint`` (as :func:`load_checkpoint` read it from
    ``checkpoint_path``, which errors name), no pretrained download, in eval mode."""
    model = build_model(cfg, hierarchy, pretrained=False)
    load_model_weights(model, checkpoint, checkpoint_path)
    return model.to(device).eval()
