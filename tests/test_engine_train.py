"""Training engine on CPU: a short run lowers the loss, resume continues exactly, non-finite loss stops,
and a 2-process gloo torchrun job finishes with one checkpoint."""
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hssn.engine import checkpoint as ckpt  # noqa: E402
from hssn.engine.builders import lr_schedule  # noqa: E402
from hssn.engine.config import load_config  # noqa: E402
from hssn.engine.trainer import Trainer, micro_batch_size  # noqa: E402

TINY = ["model.name=deeplabv3plus:resnet10t", "model.kwargs={head_channels: 16, aux_head: false, embed_dim: 16}",
        "data.kwargs={size: 32, seed: 1}", "data.train_kwargs={length: 64}", "data.val_kwargs={length: 4}",
        "loss.num_triplets=50", "train.batch_size=8", "train.log_interval=1", "train.progress=false",
        "eval.batch_size=4", "train.device=cpu"]  # CPU expectations (fp32, gloo); the GPU's in test_gpu_engine.py


def tiny_cfg(out: Path, *extra: str) -> dict:
    return load_config("synthetic", [*TINY, f"train.output_dir={out}", *extra])


def read_log(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_short_run_lowers_the_loss(tmp_path):
    result = Trainer(tiny_cfg(tmp_path, "train.iters=30", "optim.lr=3e-3")).fit()
    rows = read_log(tmp_path / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    first = sum(r["seg"] for r in rows[:5]) / 5
    last = sum(r["seg"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert rows[-1]["lr"] < rows[0]["lr"] and rows[-1]["beta"] > rows[1]["beta"] > 0
    assert result["step"] == 30 and result["checkpoint"] == ckpt.checkpoint_path(tmp_path, 30)
    report = result["report"]
    assert len(report["levels"]) == 3 and report["num_images"] == 4 and report["flip"] is True
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "eval_log.csv").is_file() and any((tmp_path / "tensorboard").iterdir())


def test_resume_continues_at_the_same_step_with_the_same_lr(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["train.iters=8", "train.checkpoint_interval=4", "train.keep_checkpoints=5", "train.eval_at_end=false"]
    Trainer(tiny_cfg(a, *common)).fit()
    assert [p.name for p in ckpt.list_checkpoints(a)] == ["step_0000004.pt", "step_0000008.pt"]
    full = read_log(a / "train_log.csv")
    resumed = Trainer(tiny_cfg(b, *common, f"train.resume={ckpt.checkpoint_path(a, 4)}"))
    assert resumed.step == 4
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(full[4]["lr"], rel=1e-12)
    resumed.fit()
    tail = read_log(b / "train_log.csv")
    assert [int(r["step"]) for r in tail] == [5, 6, 7, 8]
    for x, y in zip(full[4:], tail):
        assert y["lr"] == pytest.approx(x["lr"], rel=1e-12)
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)  # same data, weights and RNG: same step
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(b, 8))
    assert state["step"] == 8 and state["meta"]["hierarchy"]["names"][0] == "plain"
    # "auto" picks the newest checkpoint of the output folder; nothing is left to do
    again = Trainer(tiny_cfg(a, *common, "train.resume=auto"))
    assert again.step == 8


def test_gradient_accumulation_splits_the_batch(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.accumulate=2", "train.iters=1", "train.eval_at_end=false")
    assert micro_batch_size(cfg, 1) == 4
    with pytest.raises(ValueError, match="multiple"):
        micro_batch_size(cfg, 3)
    tr = Trainer(cfg)
    tr.fit()
    assert tr.batches.consumed == 2


def test_non_finite_loss_stops_training(tmp_path):
    tr = Trainer(tiny_cfg(tmp_path, "train.iters=2", "train.eval_at_end=false", "loss.segmentation=bce"))
    with torch.no_grad():
        for p in tr.model.head.classifier.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss at step 0"):
        tr.fit()


def run_torchrun(commands: list[list[str]], out: Path, timeout: float = 240) -> list[tuple[int, str]]:
    """Run torchrun commands (one per node) to the end: ``[(returncode, stdout + stderr)]`` per command.

    Output goes to files (no pipe left undrained can block a rank). Past ``timeout`` seconds for all of
    them the test fails with every process's Python stacks (faulthandler: SIGABRT to the agents and
    workers, found by their ``train.output_dir``), then they are killed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    pattern = f"train.output_dir={out}"
    logs = [out.parent / f"{out.name}.node{i}.log" for i in range(len(commands))]
    procs = []
    try:
        for cmd, log in zip(commands, logs):
            with log.open("w") as f:
                procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + timeout
        hung = False
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                hung = True
                break
        if hung:
            subprocess.run(["pkill", "-ABRT", "-f", pattern], check=False)
            time.sleep(5)
            stacks = "\n".join(f"--- node {i} ---\n{log.read_text()[-6000:]}" for i, log in enumerate(logs))
            pytest.fail(f"torchrun did not finish in {timeout:.0f} s; the processes' stacks:\n{stacks}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        subprocess.run(["pkill", "-9", "-f", pattern], check=False)  # workers left behind
    return [(proc.returncode, log.read_text()) for proc, log in zip(procs, logs)]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def test_a_hung_job_fails_with_its_stacks(tmp_path):
    """The helper's timeout path: a process that never ends fails the test with its Python stack."""
    out = tmp_path / "ddp"
    hang = [sys.executable, "-c", "import time\ndef stuck():\n    time.sleep(120)\nstuck()", f"train.output_dir={out}"]
    with pytest.raises(pytest.fail.Exception, match=r"did not finish in 2 s(.|\n)*in stuck"):
        run_torchrun([hang], out, timeout=2)


def test_torchrun_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    [(rc, text)] = run_torchrun([[*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "hssn", "train", "synthetic",
                                  *TINY, f"train.output_dir={out}", "train.iters=3", "data.num_workers=0"]], out)
    assert rc == 0, text[-3000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000003.pt"]
    state = ckpt.load_checkpoint(out / "checkpoints" / "step_0000003.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    rows = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # rank 0 logs once per step
    assert text.count("mIoU^1") == 1  # the final evaluation (sharded, reduced) is printed once


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_nodes_on_one_machine(tmp_path):
    """--nnodes=2 with node 0 as the master on localhost (static rendezvous: --node_rank, --master_addr/port):
    two agents (one process each) train as one job."""
    out = tmp_path / "ddp"
    port = _free_port()
    cmd = [*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    train = ["-m", "hssn", "train", "synthetic", *TINY, f"train.output_dir={out}", "train.iters=3",
             "train.eval_at_end=false", "data.num_workers=0"]
    results = run_torchrun([[*cmd, f"--node_rank={rank}", *train] for rank in range(2)], out)
    assert all(rc == 0 for rc, _ in results), [text[-2000:] for _, text in results]
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(out, 3))
    assert state["world_size"] == 2
    assert "2 process(es)" in "".join(text for _, text in results)


def test_torchrun_two_nodes_with_c10d_rendezvous_on_one_machine(tmp_path):
    """--nnodes=2 with the c10d rendezvous on localhost (no node rank, no master: the agents meet at the
    endpoint): two agents of one process each train as one job."""
    out = tmp_path / "ddp"
    port = _free_port()
    cmd = [*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
           f"--rdzv-id=hssn-test-{port}", "-m", "hssn", "train", "synthetic", *TINY, f"train.output_dir={out}",
           "train.iters=3", "train.eval_at_end=false", "data.num_workers=0"]
    results = run_torchrun([cmd, cmd], out)
    assert all(rc == 0 for rc, _ in results), [text[-2000:] for _, text in results]
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(out, 3))["world_size"] == 2


KILLED_WORKER = """
import os, signal, sys
from hssn.engine import trainer
step = trainer.Trainer.train_step
def killing_step(self):
    out = step(self)
    if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and self.ctx.rank == 1 and self.step == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # a lost worker: no exception, no cleanup
    return out
trainer.Trainer.train_step = killing_step
from hssn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_restarts_after_a_killed_worker_and_resumes(tmp_path):
    """torchrun --max-restarts=1 with train.resume=auto: rank 1 is SIGKILLed after step 3 of 6 (checkpoints
    every 2 steps); the job restarts, resumes from step 2 and ends at step 6 on the same schedule as an
    uninterrupted run (the learning rate is a function of the step)."""
    out = tmp_path / "ddp"
    script = tmp_path / "killed_worker.py"
    script.write_text(KILLED_WORKER)
    [(rc, text)] = run_torchrun([[*TORCHRUN, "--standalone", "--nproc_per_node=2", "--max-restarts=1", str(script),
                                  "train", "synthetic", *TINY, f"train.output_dir={out}", "train.iters=6",
                                  "train.checkpoint_interval=2", "train.resume=auto", "train.eval_at_end=false",
                                  "data.num_workers=0"]], out)
    assert rc == 0, text[-3000:]
    assert "resumed from" in text and "step_0000002.pt at step 2" in text
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(out, 6))
    assert state["step"] == 6 and state["world_size"] == 2
    rows = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # the rows past the checkpoint were rewritten
    cfg = load_config("synthetic", [*TINY, "train.iters=6"])
    assert rows[-1]["lr"] == pytest.approx(cfg.optim.lr * lr_schedule(cfg)(5), rel=1e-6)


SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")
CPU_ONLY_READS = ("scaled_gradient",)
"""Functions that read a tensor only when it is on the CPU (guarded by its device type): no device sync on a
GPU, so this CPU-only test does not count them (_autograd.scaled_gradient: whether grad_loss is 1)."""


def test_no_host_sync_inside_steps_between_log_intervals(tmp_path, monkeypatch):
    """Counts tensor-to-host reads (item, tolist, bool(), float(), ...) made by hssn / hssn_kernels code
    during training steps; only the log-interval read may make them."""
    import hssn
    import hssn_kernels

    roots = (str(Path(hssn.__file__).parent), str(Path(hssn_kernels.__file__).parent))
    calls = []
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def patched(self, *args, _original=original, _name=name, **kwargs):
            frame = sys._getframe(1)
            caller = frame.f_code.co_filename
            if caller.startswith(roots) and frame.f_code.co_name not in CPU_ONLY_READS:
                calls.append((_name, caller, frame.f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    tr = Trainer(tiny_cfg(tmp_path, "train.iters=4", "train.eval_at_end=false",
                          "model.kwargs={head_channels: 16, embed_dim: 16, aux_head: true}"))
    batches = [tr.batches.next() for _ in range(3)]
    tr.batches.next = lambda: batches.pop(0)
    calls.clear()
    for _ in range(3):
        tr.train_step()
    assert calls == []
    tr.check_finite()  # the log-interval read: one sync, on every rank together
    assert calls


def test_non_finite_loss_is_found_at_the_log_interval_with_its_step_and_terms(tmp_path):
    tr = Trainer(tiny_cfg(tmp_path, "train.iters=6", "train.log_interval=3", "train.eval_at_end=false"))
    tr.train_step()
    with torch.no_grad():
        for p in tr.model.head.classifier.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 1 .*'seg': nan.*'triplet'"):
        tr.fit()
    assert tr.step == 3  # read at the log interval, not before


def test_trainer_loss_equals_interpolate_then_loss(tmp_path):
    import torch.nn.functional as F

    from hssn_kernels import HierarchicalLoss

    tr = Trainer(tiny_cfg(tmp_path, "train.iters=1", "model.kwargs={head_channels: 16, embed_dim: 16, aux_head: true}"))
    batch = tr.batches.next()
    tr.model.train()
    out = tr.model(batch["image"])
    target = batch["label"]
    size = tuple(target.shape[-2:])
    assert out["logits"].shape[-2:] != size and out["aux_logits"].shape[-2:] != size
    new = tr.loss_fn(out["logits"], target, out["embeddings"], step=0)["loss"]
    new = new + tr.model.auxiliary_losses(out, target, tr.loss_fn.segmentation_loss, tr.ignore_index)["aux"]
    old_fn = HierarchicalLoss(tr.hierarchy, triplet="hierarchy", num_triplets=50, beta_steps=1,
                              ignore_index=tr.ignore_index)
    up = F.interpolate(out["logits"], size=size, mode="bilinear", align_corners=False)
    old = old_fn(up, target, out["embeddings"], step=0)["loss"]
    old = old + 0.4 * old_fn.segmentation_loss(F.interpolate(out["aux_logits"], size=size, mode="bilinear"), target)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)


def test_resume_with_more_iterations_follows_the_new_schedule(tmp_path):
    from hssn.engine.builders import lr_schedule

    a = tmp_path / "a"
    common = ["train.checkpoint_interval=4", "train.eval_at_end=false", "optim.lr=1e-3"]
    Trainer(tiny_cfg(a, "train.iters=4", *common)).fit()
    longer = tiny_cfg(a, "train.iters=8", *common, "train.resume=auto")
    tr = Trainer(longer)
    assert tr.step == 4
    expected = 1e-3 * lr_schedule(longer)(4)
    assert expected > 0 and tr.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    tr.fit()
    rows = read_log(a / "train_log.csv")
    assert [int(r["step"]) for r in rows][-4:] == [5, 6, 7, 8] and all(r["lr"] > 0 for r in rows[-4:])


def test_a_fresh_run_into_a_used_folder_is_an_error_unless_overwriting(tmp_path):
    common = ["train.iters=2", "train.checkpoint_interval=2", "train.eval_at_end=false"]
    Trainer(tiny_cfg(tmp_path, *common)).fit()
    (tmp_path / "checkpoints" / "step_0000009.pt.tmp").write_bytes(b"partial")
    with pytest.raises(ValueError, match="train.resume=auto.*train.overwrite=true"):
        Trainer(tiny_cfg(tmp_path, "train.iters=1", "train.eval_at_end=false"))
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # the killed save's leftover is gone
    result = Trainer(tiny_cfg(tmp_path, "train.iters=1", "train.eval_at_end=false", "train.overwrite=true")).fit()
    assert result["checkpoint"] == ckpt.checkpoint_path(tmp_path, 1) and result["checkpoint"].is_file()
    assert ckpt.list_checkpoints(tmp_path) == [ckpt.checkpoint_path(tmp_path, 1)]
    assert [int(r["step"]) for r in read_log(tmp_path / "train_log.csv")] == [1]


def test_two_runs_cannot_share_an_output_folder(tmp_path):
    """A second process starting a run in a folder a run holds is an error naming the folder and the holder
    (both passed the "no checkpoints yet" check before); the lock goes with its holder, however it ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hssn.engine import checkpoint as c; "
         f"h = c.lock_output_dir({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"{tmp_path}.* in use by another training run \(pid {holder.pid}\)"):
            Trainer(tiny_cfg(tmp_path, "train.iters=1", "train.eval_at_end=false"))
    finally:
        holder.kill()
        holder.wait()
    result = Trainer(tiny_cfg(tmp_path, "train.iters=1", "train.eval_at_end=false")).fit()  # killed: free again
    assert result["step"] == 1


def test_resume_with_another_optimizer_and_a_full_disk_are_named(tmp_path, monkeypatch):
    common = ["train.iters=1", "train.eval_at_end=false"]
    Trainer(tiny_cfg(tmp_path, *common)).fit()
    with pytest.raises(ValueError, match="optim.name=adamw, this config has optim.name=sgd"):
        Trainer(tiny_cfg(tmp_path, "train.iters=2", "train.eval_at_end=false", "train.resume=auto", "optim.name=sgd"))

    def full_disk(obj, f):  # what torch.save raises when the disk fills up mid-write
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: type("U", (), {"free": 1 << 20})())
    with pytest.raises(OSError, match=r"could not save checkpoint .*step_0000002.pt: the disk is full \(1 MiB free\)"):
        Trainer(tiny_cfg(tmp_path, "train.iters=2", "train.eval_at_end=false", "train.resume=auto")).fit()
    assert ckpt.list_checkpoints(tmp_path) == [ckpt.checkpoint_path(tmp_path, 1)]  # the previous one is kept
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_resume_leaves_no_duplicate_log_rows(tmp_path):
    common = ["train.checkpoint_interval=2", "train.keep_checkpoints=5", "train.eval_at_end=false"]
    Trainer(tiny_cfg(tmp_path, "train.iters=4", *common)).fit()
    Trainer(tiny_cfg(tmp_path, "train.iters=4", *common, f"train.resume={ckpt.checkpoint_path(tmp_path, 2)}")).fit()
    assert [int(r["step"]) for r in read_log(tmp_path / "train_log.csv")] == [1, 2, 3, 4]


def test_bad_checkpoint_files_are_named(tmp_path):
    for name, data in [("empty.pt", b""), ("junk.pt", b"not a checkpoint at all")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            ckpt.load_checkpoint(tmp_path / name)


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hssn", "train", "synthetic", *TINY, f"train.output_dir={out}", "train.iters=400",
           "train.checkpoint_interval=2", "train.keep_checkpoints=2", "train.eval_at_end=false",
           "data.num_workers=0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while len(ckpt.list_checkpoints(out)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(ckpt.list_checkpoints(out)) >= 2, proc.stderr.read().decode()[-2000:] if proc.poll() else "slow"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = ckpt.list_checkpoints(out)[-1]
    step = int(last.stem.split("_")[1])
    tr = Trainer(tiny_cfg(out, f"train.iters={step + 2}", "train.checkpoint_interval=2", "train.keep_checkpoints=2",
                          "train.eval_at_end=false", "train.resume=auto"))
    assert tr.step == step
    tr.fit()
    steps = [int(r["step"]) for r in read_log(out / "train_log.csv")]
    assert steps == list(range(1, step + 3))  # rows after the checkpoint were dropped, none duplicated
    assert not list((out / "checkpoints").glob("*.tmp"))
