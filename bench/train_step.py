"""Training-step benchmark: plain contrastive vs Mod-X (live teacher, cached teacher, expert embeddings).

    python -m bench.train_step --model ViT-B-32 --batch 512 --device cuda --peak-tflops 780
    python -m bench.train_step --preset cpu            # tiny model, anyone can run it

All variants run in one process on the same random batch through trainer.objective.phase_loss
(the code that trains). Reports ms/step, samples/s, peak memory, and MFU = model FLOPs per
step (counted by torch's FlopCounterMode on one step) / step time / the device's measured
bf16 GEMM rate. Writes JSON with the machine and the command. `modx-expert`: half the batch is
replayed pairs from two source snapshots (stored embeddings, KL per source at each one's logit
scale, forgotten rows only: the default recipe), the other half new pairs against the cached parent.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.common import apply_preset, command, machine, write_result
from trainer.config import PAPER_LOSS, TrainConfig
from trainer.loop import make_optimizer
from trainer.model import clamp_logit_scale, create_model
from trainer.objective import phase_loss
from trainer.phase import freeze

PRESETS = {
    "cpu": dict(model="modx-tiny", batch=64, steps=10, warmup=3, device="cpu"),
    "gpu": dict(model="ViT-B-32", batch=512, steps=30, warmup=10, device="cuda"),
}
VARIANTS = ("plain", "modx-live", "modx-cached", "modx-expert")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_batch(model_name: str, batch: int, device: torch.device):
    model, _, tokenizer = create_model(model_name)
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    tokens = tokenizer([f"a photo of object number {i}" for i in range(batch)]).to(device)
    return images, tokens


def setup_variant(variant: str, args, images, tokens):
    """(step function, optimizer) of one variant, warmed up."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    student, _, _ = create_model(args.model, device=device)
    # plain: ct; live / cached: the paper's Mod-X; expert: the default recipe (expert-embedding Mod-X)
    cfg = TrainConfig(device=args.device, batch_size=args.batch)
    if variant == "plain":
        cfg = cfg.with_(method="ct")
    elif variant != "modx-expert":
        cfg = cfg.with_(**PAPER_LOSS)
    teacher = freeze(copy.deepcopy(student)) if variant != "plain" else None
    teacher_emb, sources, scales = None, None, None
    if variant == "modx-expert":  # rows 0..B/2: new (parent, -1); then two source snapshots 1 and 2
        quarter = args.batch // 4
        sources = torch.tensor([-1] * (args.batch - 2 * quarter) + [1] * quarter + [2] * quarter, device=device)
        scales = torch.tensor([20.0] * (args.batch - 2 * quarter) + [30.0] * quarter + [40.0] * quarter, device=device)
    if variant in ("modx-cached", "modx-expert"):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            teacher_emb = (
                F.normalize(teacher.encode_image(images), dim=-1).float(),
                F.normalize(teacher.encode_text(tokens), dim=-1).float(),
            )
        teacher = None
    student.train()
    opt = make_optimizer(student, cfg, device)
    model = torch.compile(student) if args.compile else student

    def step():
        loss = phase_loss(
            model,
            student,
            images,
            tokens,
            cfg,
            teacher=teacher,
            teacher_emb=teacher_emb,
            sources=sources,
            scales=scales if cfg.teacher_scale else None,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clamp_logit_scale(student)
        return loss

    for _ in range(args.warmup):
        step()
    return step, opt


def timed(step, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def run_variants(variants: list[str], args, images, tokens) -> list[dict]:
    """Every variant timed in interleaved rounds (the median round counts), so a machine whose
    load changes over time slows every variant alike."""
    device = torch.device(args.device)
    setups = {v: setup_variant(v, args, images, tokens) for v in variants}
    flops = {}
    for v, (step, _) in setups.items():
        with FlopCounterMode(display=False) as counter:
            step()
        flops[v] = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rounds = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v, (step, _) in setups.items():
            rounds[v].append(timed(step, args.steps, device))
    return [result_row(v, args, sorted(rounds[v])[len(rounds[v]) // 2], flops[v], setups[v][1]) for v in variants]


def result_row(variant: str, args, seconds: float, flops: float, opt) -> dict:
    device = torch.device(args.device)
    out = {
        "variant": variant,
        "ms_per_step": round(seconds * 1e3, 2),
        "samples_per_s": round(args.batch / seconds, 1),
        "tflop_per_step": round(flops / 1e12, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "fused_adamw": bool(opt.defaults.get("fused")),  # trainer.loop.make_optimizer: fused on CUDA
        "compiled": bool(args.compile),
    }
    if args.peak_tflops:
        out["mfu"] = round(flops / seconds / (args.peak_tflops * 1e12), 4)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--model")
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int, help="steps per variant per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median counts")
    p.add_argument("--warmup", type=int)
    p.add_argument("--device")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None, help="measured bf16 GEMM rate for MFU (H100: 780)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    apply_preset(args, PRESETS[args.preset or "cpu"])
    images, tokens = make_batch(args.model, args.batch, torch.device(args.device))
    rows = run_variants(args.variants.split(","), args, images, tokens)
    plain = next((r for r in rows if r["variant"] == "plain"), None)
    for r in rows:
        r["vs_plain"] = round(r["ms_per_step"] / plain["ms_per_step"], 3) if plain else None
    print(f"{args.model} batch {args.batch} on {args.device}{' compiled' if args.compile else ''}")
    print(f"{'variant':<12}{'ms/step':>10}{'samples/s':>12}{'vs plain':>10}{'peak GiB':>10}{'MFU':>8}")
    for r in rows:
        print(
            f"{r['variant']:<12}{r['ms_per_step']:>10}{r['samples_per_s']:>12}{r['vs_plain']:>10}"
            f"{str(r['peak_mem_gib']):>10}{str(r.get('mfu', '-')):>8}"
        )
    result = {
        "benchmark": "train_step",
        "args": vars(args),
        "rows": rows,
        "machine": machine(args.device, command("bench.train_step", argv)),
    }
    if args.out:
        write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
