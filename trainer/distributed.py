"""Data parallelism on torch.distributed: one rank per GPU (nccl), or per CPU process (gloo).

    init()            join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
                      MASTER_ADDR/PORT in the environment); a no-op in a plain process
    rank(), world()   this rank, the number of ranks (0 and 1 without a process group)
    is_main()         rank 0: the one that writes checkpoints, snapshots and results
    shard(rows)       this rank's contiguous slice of a global batch (or of any row order)
    gather(x)         every rank's slice concatenated in rank order, with gradients
    spawn(fn, n)      run fn on n local ranks without torchrun (`modx simulate --nproc n`)
    leading/follow    the service's trainer under torchrun: rank 0 runs the worker and
                      announces each train_phase; the other ranks follow and join it

The contract of data-parallel training here: every rank walks the same deterministic
global batches and takes its `shard`; features are `gather`ed, so each rank computes the
*global* batch's loss (InfoNCE, the Mod-X matrices, screening, KL) exactly as one process
would. `gather` has the semantics of open_clip's `gather_features(local_loss=False,
gather_with_grad=True)`: its backward sums every rank's gradient into the local slice, so
each rank's local gradient is world x the single-process one, and DistributedDataParallel's
averaging brings the parameter gradient back to the single-process gradient of the global
batch (tests/test_distributed.py checks it, and that `gather` agrees with open_clip's).
Unlike open_clip's it also takes ragged shards (a batch not divisible by the world size).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

log = logging.getLogger("modx.distributed")

# control messages (the trainer's leader/follower jobs) may wait hours for the next phase
CONTROL_TIMEOUT = datetime.timedelta(days=30)
_control = None


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or `modx simulate --nproc`) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> None:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU); on CUDA this rank's GPU
    (LOCAL_RANK) becomes the current device, so "cuda" means it. Idempotent; a no-op alone."""
    global _control
    if not launched() or active():
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    _control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)


def close() -> None:
    global _control
    if active():
        dist.barrier()
        dist.destroy_process_group()
    _control = None


def barrier() -> None:
    if active():
        dist.barrier()


def shard(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous part of `rows` (sizes differ by at most one)."""
    return rows.tensor_split(world())[rank()] if active() else rows


def _sizes(n: int, device: torch.device) -> list[int]:
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world())]
    dist.all_gather(sizes, torch.tensor([n], device=device))
    return [int(s) for s in sizes]


def _all_gather(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Every rank's rows of `x` (ragged allowed) in rank order, and each rank's count."""
    sizes = _sizes(len(x), x.device)
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]), sizes


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out, sizes = _all_gather(x)
        ctx.start, ctx.n = sum(sizes[: rank()]), len(x)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on every slice: sum their gradients
        return grad[ctx.start : ctx.start + ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of `x`, in rank order; gradients flow back to this rank's rows
    (without grad, e.g. teacher embeddings, a plain all-gather). Identity alone."""
    if not active():
        return x
    if x.requires_grad:
        return _GatherWithGrad.apply(x)
    return _all_gather(x)[0]


def all_reduce_sum_(tensors) -> None:
    """Sum tensors in place over the ranks (e.g. the parts of a Fisher estimate)."""
    if active():
        for t in tensors:
            dist.all_reduce(t)


def broadcast(obj):
    """Rank 0's `obj` on every rank (picklable objects, over the gloo control group)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` under DistributedDataParallel when there are several ranks (it averages the
    gradients over ranks during backward), else itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


_leading = False


@contextmanager
def leading():
    """Rank 0 of a leader/follower run (the service's trainer under torchrun) runs the block;
    each `announce`d call inside it starts on the followers too; at the end they are released."""
    global _leading
    _leading = True
    try:
        yield
    finally:
        _leading = False
        broadcast(None)


def announce(fn: Callable, *args, **kwargs) -> None:
    """Inside `leading()`: have every follower call `fn(*args, **kwargs)` (picklable) too."""
    if _leading and active():
        broadcast((fn, args, kwargs))


def follow() -> None:
    """Ranks > 0 of a leader/follower run: make each call rank 0 announces, until it ends."""
    while (job := broadcast(None)) is not None:
        fn, args, kwargs = job
        fn(*args, **kwargs)


@contextmanager
def together():
    """A block every rank runs in step (a data-parallel phase). Under torch.distributed an
    exception on one rank would leave the others waiting in a collective for good, so it
    ends this process instead: torchrun then ends the other ranks (and restarts the job
    with --max-restarts, or the pod restarts), and the phase resumes from its checkpoint."""
    try:
        yield
    except BaseException:
        if not active():
            raise
        log.exception("rank %d failed inside a data-parallel block; ending this rank", rank())
        logging.shutdown()
        os._exit(1)


@contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes a file), then the others (which find it)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn: Callable, nproc: int, *args, device: str = "cpu", **kwargs):
    """Run `fn(*args, **kwargs)` on `nproc` local ranks, as `torchrun --nproc_per_node nproc`
    would (gloo on CPU, nccl on CUDA), and return rank 0's result. `fn` must be importable."""
    if nproc == 1:
        return fn(*args, **kwargs)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="modx-ranks-") as tmp:
        result = Path(tmp) / "result.pt"
        level = logging.getLogger().getEffectiveLevel()  # the ranks log as this process does
        ranks = (nproc, port, device, level, fn, args, kwargs, result)
        torch.multiprocessing.spawn(_rank_main, args=ranks, nprocs=nproc)
        return torch.load(result, weights_only=False)


def _rank_main(local_rank: int, nproc: int, port: int, device: str, level: int, fn, args, kwargs, result: Path):
    env = {"RANK": local_rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": nproc, "LOCAL_WORLD_SIZE": nproc}
    os.environ.update({k: str(v) for k, v in env.items()}, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    logging.basicConfig(level=level, format=f"%(asctime)s rank {local_rank} %(name)s %(levelname)s %(message)s")
    init(device)
    out = fn(*args, **kwargs)  # an exception ends this process; spawn then ends the others
    if is_main():
        torch.save(out, result)
    close()
