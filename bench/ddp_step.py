"""Data-parallel training step time and scaling (trainer.distributed + trainer.objective).

    torchrun --standalone --nproc_per_node N -m bench.ddp_step --preset gpu --out DIR/ddp_step_Ngpu.json
    python -m bench.ddp_step --summary DIR          # the scaling table of every ddp_step_*.json in DIR

One Mod-X step with the teacher cache (the service's default recipe) on a random batch:
each rank forwards `--batch` samples (weak scaling: the global batch is N x --batch), the
features are gathered, the loss is the global batch's, DDP averages the gradients. The
figure is the median step time over `--steps` after `--warmup`; samples/s is global.
Scaling efficiency at N ranks = samples/s(N) / (N x samples/s(1)).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import apply_preset, command, machine, write_result
from trainer import distributed
from trainer.config import TrainConfig
from trainer.loop import make_optimizer
from trainer.model import clamp_logit_scale, create_model
from trainer.objective import phase_loss

PRESETS = {
    "cpu": dict(model="modx-tiny", batch=32, steps=10, warmup=3, device="cpu"),
    "gpu": dict(model="ViT-B-32", batch=256, steps=30, warmup=10, device="cuda"),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(args) -> dict:
    distributed.init(args.device)
    device = torch.device(args.device)
    torch.manual_seed(0)
    student, _, tokenizer = create_model(args.model, device=device)
    cfg = TrainConfig(method="modx", device=args.device, batch_size=args.batch * distributed.world())
    size = student.visual.image_size
    size = size if isinstance(size, int) else size[0]
    g = torch.Generator().manual_seed(distributed.rank())
    images = torch.randn(args.batch, 3, size, size, generator=g).to(device)
    tokens = tokenizer([f"object {distributed.rank()} {i}" for i in range(args.batch)]).to(device)
    dim = student.text_projection.shape[1]
    g = torch.Generator().manual_seed(1)  # the cache: the same global teacher rows on every rank
    cached = [F.normalize(torch.randn(cfg.batch_size, dim, generator=g), dim=-1).to(device) for _ in range(2)]
    student.train()
    optimizer = make_optimizer(student, cfg, device)
    model = distributed.wrap(student, device)
    times = []
    for step in range(args.warmup + args.steps):
        sync(device)
        distributed.barrier()
        t0 = time.perf_counter()
        loss = phase_loss(model, student, images, tokens, cfg, teacher_emb=tuple(cached))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp_logit_scale(student)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {
        "benchmark": "ddp_step",
        "ranks": distributed.world(),
        "batch_per_rank": args.batch,
        "global_batch": cfg.batch_size,
        "step_s": round(step_s, 4),
        "samples_per_s": round(cfg.batch_size / step_s, 1),
        "args": vars(args),
    }


def summary(directory: Path) -> str:
    rows = sorted((json.loads(p.read_text()) for p in directory.glob("ddp_step_*.json")), key=lambda r: r["ranks"])
    if not rows:
        return f"no ddp_step_*.json in {directory}"
    one = next((r for r in rows if r["ranks"] == 1), None)
    lines = [f"{'ranks':>5}{'global batch':>14}{'step s':>9}{'samples/s':>11}{'efficiency':>12}"]
    for r in rows:
        eff = f"{r['samples_per_s'] / (r['ranks'] * one['samples_per_s']):.2f}" if one else "n/a"
        lines.append(f"{r['ranks']:>5}{r['global_batch']:>14}{r['step_s']:>9}{r['samples_per_s']:>11}{eff:>12}")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--model")
    p.add_argument("--batch", type=int, help="samples per rank per step")
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--device")
    p.add_argument("--out")
    p.add_argument("--summary", type=Path, help="print the scaling table of the results in this directory")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return None
    apply_preset(args, PRESETS[args.preset or "cpu"])
    result = measure(args)
    if distributed.is_main():
        result["machine"] = machine(args.device, command("bench.ddp_step", argv))
        print(
            f"{args.model} on {result['ranks']} x {args.device}: global batch {result['global_batch']}, "
            f"step {result['step_s']} s, {result['samples_per_s']} samples/s"
        )
        if args.out:
            write_result(args.out, result)
    distributed.close()
    return result


if __name__ == "__main__":
    main()
