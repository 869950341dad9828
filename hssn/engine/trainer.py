"""The training loop: plain PyTorch, optional DDP (torchrun), bf16 autocast on GPU, checkpoints with resume.

One step = ``train.accumulate`` micro-batches of ``batch_size / (world_size * accumulate)`` images per
process, then one optimizer step at the config's lr for that step. The loss takes the head's low-resolution logits (bf16
under AMP, not cast) and upsamples them bilinearly to the label size inside the loss (no full-resolution
logits tensor), plus beta(step) x tree-triplet on the embeddings, plus the model's auxiliary terms.

No host sync inside a step: the loss terms and a non-finite flag accumulate on the device and are read
once per ``log_interval`` (and at the end), by every rank together; a non-finite loss then raises a
``FloatingPointError`` naming the first bad step and its loss terms on all ranks.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hssn.errors import UserError
from hssn_kernels import cosine_beta

from . import builders, checkpoint as ckpt
from .config import Config, dump_config
from .distributed import (RunContext, ResumableDistributedSampler, all_reduce_max, cleanup, gather_objects,
                          start_run)
from .evaluator import evaluate
from .logger import RunLogger
from .metrics import format_report, to_json_ready


def output_dir(cfg: Config) -> Path:
    """``train.output_dir`` with ``{name}`` filled in."""
    return Path(cfg.train.output_dir.format(name=cfg.name))


def micro_batch_size(cfg: Config, world_size: int) -> int:
    """Images per process per micro-batch; :class:`UserError` when the global batch does not split evenly."""
    t = cfg.train
    parts = world_size * t.accumulate
    if t.batch_size % parts:
        raise UserError(f"train.batch_size={t.batch_size} must be a multiple of world_size x train.accumulate "
                        f"= {world_size} x {t.accumulate}")
    return t.batch_size // parts


class _Batches:
    """Endless micro-batches of one rank, epoch after epoch, with a resumable position."""

    def __init__(self, dataset, cfg: Config, ctx: RunContext, micro: int, epoch: int = 0, consumed: int = 0):
        self.dataset, self.cfg, self.ctx, self.micro = dataset, cfg, ctx, micro
        self.sampler = ResumableDistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True,
                                                   seed=cfg.train.seed)
        if self.sampler.num_samples < micro:
            raise UserError(f"dataset of {len(dataset)} items is too small for {ctx.world_size} process(es) "
                            f"x micro-batch {micro}")
        self.epoch, self.consumed = epoch, consumed
        self._it = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(self.consumed * self.micro)
        workers = self.cfg.data.num_workers
        seed = ((self.cfg.train.seed * 1009 + self.ctx.rank) * 100003 + self.epoch) * 1000003 + self.consumed
        gen = torch.Generator().manual_seed(seed % 2**63)
        loader = DataLoader(self.dataset, batch_size=self.micro, sampler=self.sampler, num_workers=workers,
                            drop_last=True, pin_memory=self.ctx.device.type == "cuda", generator=gen,
                            persistent_workers=False)
        self._it = iter(loader)

    def next(self) -> dict:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.consumed = self.epoch + 1, 0
            self._start_epoch()
            batch = next(self._it)
        self.consumed += 1
        return batch


class Trainer:
    """Builds everything from a config and runs :meth:`fit`; see the module docstring."""

    def __init__(self, cfg: Config, ctx: RunContext | None = None):
        self.cfg = cfg
        self.ctx = ctx or start_run(cfg)
        t = cfg.train
        torch.manual_seed(t.seed + self.ctx.rank)
        self.out_dir = output_dir(cfg)
        self.micro = micro_batch_size(cfg, self.ctx.world_size)
        self.train_set = builders.build_dataset(cfg, "train")
        self.hierarchy = self.train_set.hierarchy
        self.ignore_index = self.train_set.ignore_index
        self.device = self.ctx.device
        model = builders.build_model(cfg, self.hierarchy).to(self.device)
        if self.ctx.distributed and self.device.type == "cuda" and t.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.loss_fn = builders.build_loss(cfg, self.hierarchy, self.ignore_index)
        self.optimizer = builders.build_optimizer(cfg, model)
        self.step, epoch, consumed = 0, 0, 0
        self._lock = ckpt.lock_output_dir(self.out_dir) if self.ctx.is_main else None  # held until close()
        resume = ckpt.resolve_resume(t.resume, self.out_dir)
        if self.ctx.is_main:
            ckpt.remove_partial_saves(self.out_dir)
            if resume is None:
                self._claim_output_dir(t.overwrite)
        if resume is not None:
            epoch, consumed = self._restore(resume)
            if self.ctx.is_main:
                print(f"resumed from {resume} at step {self.step}", flush=True)
        self.batches = _Batches(self.train_set, cfg, self.ctx, self.micro, epoch, consumed)
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=cfg.loss.triplet is None)
        else:
            self.ddp = model
        self.logger = RunLogger(self.out_dir, enabled=self.ctx.is_main)
        self.logger.truncate_after(self.step)  # a resumed run rewrites the rows after its checkpoint
        self.last_report: dict | None = None
        self._first_bad: torch.Tensor | None = None  # see _watch / check_finite

    # ------------------------------------------------------------------ checkpoints
    def _claim_output_dir(self, overwrite: bool) -> None:
        """A fresh run needs an output folder without an earlier run's checkpoints, unless overwriting."""
        old = ckpt.list_checkpoints(self.out_dir)
        if not old:
            return
        if not overwrite:
            raise UserError(f"output folder {self.out_dir} already holds checkpoints of an earlier run (newest: "
                            f"{old[-1].name}): pass train.resume=auto to continue it, train.overwrite=true to "
                            "start over, or another train.output_dir")
        for path in old + [self.out_dir / name for name in ("train_log.csv", "eval_log.csv", "metrics.json")]:
            if path.is_file():
                path.unlink()

    def _meta(self) -> dict:
        ds = self.train_set
        return {"hierarchy": self.hierarchy.to_dict(), "palette": ds.palette.tolist(),
                "flip_pairs": [list(p) for p in ds.flip_pairs], "ignore_index": ds.ignore_index,
                "class_names": list(ds.class_names)}

    def save(self) -> Path | None:
        """Write the checkpoint of the current step (main process; every rank must call it)."""
        rng = gather_objects(ckpt.rng_state())
        if not self.ctx.is_main:
            return None
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "epoch": self.batches.epoch,
                 "consumed": self.batches.consumed, "world_size": self.ctx.world_size, "rng": rng,
                 "config": self.cfg.to_dict(), "meta": self._meta()}
        return ckpt.save_checkpoint(ckpt.checkpoint_path(self.out_dir, self.step), state,
                                    self.cfg.train.keep_checkpoints)

    def _restore(self, path: Path) -> tuple[int, int]:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        lacking = [k for k in ("model", "optimizer", "step", "epoch", "rng") if k not in state]
        if lacking:
            raise UserError(f"{path}: not a training checkpoint (no {', '.join(lacking)}: an exported state dict?); "
                            "train.resume needs a checkpoint written by hssn train")
        saved = (state.get("config") or {}).get("optim", {}).get("name")
        if saved is not None and saved != self.cfg.optim.name:
            raise UserError(f"{path}: trained with optim.name={saved}, this config has optim.name="
                            f"{self.cfg.optim.name}; resume with the same optimizer, or start a new run")
        ckpt.load_model_weights(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        builders.set_lr(self.optimizer, self.cfg, self.step)  # this config's schedule, not the saved lr
        rng = state["rng"]
        ckpt.set_rng_state(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0])
        if state.get("world_size", 1) != self.ctx.world_size:
            return int(state["epoch"]) + 1, 0  # the data order depends on the world size: start a new epoch
        return int(state["epoch"]), int(state["consumed"])

    # ------------------------------------------------------------------ one step
    def _micro_step(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)
        target = batch["label"].to(self.device, non_blocking=True)
        with self.ctx.autocast():
            out = self.ddp(images)  # images in [0, 1]: the model normalises with its buffers (model.mean / std)
        emb = out.get("embeddings")
        parts = self.loss_fn(out["logits"], target, None if emb is None else emb.float(), step=self.step)
        aux = self.model.auxiliary_losses(out, target, self.loss_fn.segmentation_loss, self.ignore_index)
        total = parts["loss"] + sum(aux.values()) if aux else parts["loss"]
        terms = {"loss": total, "seg": parts["seg"], "triplet": parts["triplet"], **aux}
        (total / self.cfg.train.accumulate).backward()
        return {k: v.detach().float() for k, v in terms.items()}

    def _watch(self, terms: dict[str, torch.Tensor]) -> None:
        """Record (on the device, no sync) the first step whose loss terms are not all finite."""
        values = torch.stack(list(terms.values()))
        bad = ~torch.isfinite(values).all()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
            self._bad_terms = torch.zeros_like(values)
        first = bad & (self._first_bad < 0)
        self._first_bad = torch.where(first, torch.full_like(self._first_bad, self.step), self._first_bad)
        self._bad_terms = torch.where(first, values, self._bad_terms)
        self._term_names = list(terms)

    def check_finite(self) -> None:
        """Read the non-finite record on every rank together (one collective, one sync); raise on all ranks."""
        if self._first_bad is None:
            return
        step = int(all_reduce_max(self._first_bad))
        if step >= 0:
            mine = self._bad_terms.tolist() if int(self._first_bad) == step else None
            found = next(v for v in gather_objects(mine) if v is not None)
            values = dict(zip(self._term_names, found))
            raise FloatingPointError(f"non-finite loss at step {step} (on at least one process): {values}; "
                                     "lower optim.lr, set optim.grad_clip or check the data")

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns the mean loss terms and the learning rate used."""
        t = self.cfg.train
        self.ddp.train()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        for i in range(t.accumulate):
            sync = i == t.accumulate - 1 or not self.ctx.distributed
            with nullcontext() if sync else self.ddp.no_sync():
                terms = self._micro_step(self.batches.next())
                self._watch(terms)
                for k, v in terms.items():
                    sums[k] += v / t.accumulate
        if self.cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.cfg.optim.grad_clip))
        lr = builders.set_lr(self.optimizer, self.cfg, self.step)  # this config's schedule at this step
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {**sums, "lr": lr, "beta": cosine_beta(self.step - 1, self.loss_fn.beta_steps, self.loss_fn.beta_max)}

    # ------------------------------------------------------------------ loop
    def validate(self, full_tta: bool = False) -> dict:
        """Metrics on the val split: single scale without flip, or the config's TTA with ``full_tta``."""
        if not hasattr(self, "val_set"):
            self.val_set = builders.build_dataset(self.cfg, "val")
            if self.val_set.hierarchy != self.hierarchy:
                raise UserError("the val data's class tree differs from the training data's (the model's): map its "
                                "classes onto the model's tree with eval.label_mapping")
        report = evaluate(self.model, self.val_set, self.cfg, self.ctx, full_tta)
        self.model.train()
        if self.ctx.is_main:
            flat = {f"mIoU{lv['k']}": lv["miou"] for lv in report["levels"]}
            flat.update({f"ECE{lv['k']}": lv["ece"] for lv in report["levels"] if "ece" in lv})
            flat.update(pixel_acc=report["pixel_acc"], mistake_severity=report["mistake_severity"],
                        violation_rate=report["violation_rate"], non_path_rate=report["non_path_rate"])
            self.logger.log("eval", self.step, flat)
        return report

    def close(self) -> None:
        """Release the output folder's lock (``fit`` does at its end; ``train`` on any exit)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def fit(self) -> dict:
        """Train to ``train.iters``; returns ``{"step", "checkpoint", "report", "seconds", "images_per_s"}``."""
        t = self.cfg.train
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(dump_config(self.cfg))
            backbone = self.model.backbone
            print(f"model {self.cfg.model.name}: backbone {backbone.name}, weights: {backbone.weights}",
                  flush=True)
        bar = tqdm(total=t.iters, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not self.ctx.show_progress)
        if self.ctx.is_main and not t.progress:
            print(f"training {self.cfg.name} from step {self.step} to {t.iters} on {self.device} "
                  f"({self.ctx.world_size} process(es)) -> {self.out_dir}", flush=True)
        window: dict = defaultdict(float)  # device tensors (loss terms) and floats (lr, beta), summed
        n_window, t_window = 0, time.perf_counter()
        start, start_step = time.perf_counter(), self.step
        path = None
        while self.step < t.iters:
            terms = self.train_step()
            for k, v in terms.items():
                window[k] = window[k] + v
            n_window += 1
            bar.update(1)
            if self.step % t.log_interval == 0 or self.step == t.iters:
                self.check_finite()
                elapsed = time.perf_counter() - t_window
                row = {k: float(v) / n_window for k, v in window.items()}
                row["images_per_s"] = n_window * t.batch_size / max(elapsed, 1e-9)
                self.logger.log("train", self.step, row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k not in ("beta",)}, refresh=False)
                if bar.disable and self.ctx.is_main:  # no bar (train.progress=false): a log line instead
                    print(f"step {self.step}/{t.iters} " + " ".join(f"{k}={v:.4g}" for k, v in row.items()),
                          flush=True)
                window, n_window, t_window = defaultdict(float), 0, time.perf_counter()
            if self.step % t.checkpoint_interval == 0 or self.step == t.iters:
                path = self.save()
            if t.eval_interval and self.step % t.eval_interval == 0 and self.step < t.iters:
                self.validate()
        bar.close()
        seconds = time.perf_counter() - start
        if path is None and self.ctx.is_main:
            found = ckpt.list_checkpoints(self.out_dir)
            path = found[-1] if found else None
        report = self.validate(full_tta=True) if t.eval_at_end else None
        self.last_report = report
        if self.ctx.is_main and report is not None:
            (self.out_dir / "metrics.json").write_text(json.dumps(to_json_ready(report), indent=1) + "\n")
        self.logger.close()
        self.close()
        done = self.step - start_step
        return {"step": self.step, "checkpoint": path, "report": report, "seconds": seconds,
                "images_per_s": done * t.batch_size / seconds if seconds > 0 and done else math.nan}


def train(cfg: Config) -> dict:
    """Run a whole training job from ``cfg`` (joins / leaves torchrun's process group); see :class:`Trainer`."""
    trainer, finished = None, False
    try:
        ctx = start_run(cfg)
        trainer = Trainer(cfg, ctx)
        result = trainer.fit()
        if ctx.is_main and result["report"] is not None:
            print(format_report(result["report"]))
        finished = True
        return result
    finally:
        if trainer is not None:
            trainer.close()
        cleanup(finished)
