"""The `modx` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="modx: streaming continual CLIP training with Mod-X", no_args_is_help=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("modx").setLevel(logging.DEBUG if verbose else logging.INFO)


def _parse_sweep(values: list[str]) -> dict[str, list]:
    """`alpha=5,20` -> {"alpha": [5.0, 20.0]}"""
    sweep = {}
    for item in values:
        key, _, raw = item.partition("=")
        if not raw:
            raise typer.BadParameter(f"sweep item {item!r} must look like name=v1,v2")
        sweep[key] = [json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" else v for v in raw.split(",")]
    return sweep


@app.command()
def simulate(
    dataset: str = typer.Option("synthetic", help="synthetic | emoji"),
    method: str = typer.Option("modx", help="ct | ewc | lwf | modx | joint"),
    phases: Optional[int] = typer.Option(None, help="number of domains (phase 0 included); default all"),
    out: Path = typer.Option(Path("result.json"), help="where to write the result JSON"),
    model: str = typer.Option("modx-tiny", help="open_clip model config name"),
    pretrained: Optional[str] = typer.Option(None, help="local checkpoint for CLIP_0's starting weights"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    seed: int = typer.Option(0),
    epochs: int = typer.Option(20, help="epochs per phase"),
    first_epochs: int = typer.Option(30, help="epochs for CLIP_0 on domain 0"),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(5e-4),
    alpha: float = typer.Option(20.0, help="Mod-X / LwF distillation weight"),
    temperature: float = typer.Option(1.0, help="distillation temperature (1 = raw cosines, the paper)"),
    kl_reduction: str = typer.Option("sum", help="sum (paper) | mean over rows"),
    replay: float = typer.Option(0.0, help="older pairs mixed in per new pair"),
    replay_policy: str = typer.Option("uniform", help="uniform | balanced | reservoir"),
    merge: float = typer.Option(0.0, help="WiSE-FT weight of the parent after each phase"),
    work_dir: Optional[Path] = typer.Option(None, help="where snapshots go (default: a temp dir)"),
    verbose: bool = typer.Option(False),
):
    """Run the continual protocol offline and print the recall table."""
    from trainer.config import TrainConfig
    from trainer.datasets import get_dataset
    from trainer.simulate import simulate as run, table

    setup_logging(verbose)
    cfg = TrainConfig(
        method=method, epochs=epochs, batch_size=batch_size, lr=lr, alpha=alpha, temperature=temperature,
        kl_reduction=kl_reduction, replay_fraction=replay, replay_policy=replay_policy, merge=merge,
        device=device, seed=seed,
    )  # fmt: skip
    result = run(get_dataset(dataset, seed=seed), cfg, model_name=model, phases=phases, first_epochs=first_epochs,
                 work_dir=work_dir, pretrained=pretrained)  # fmt: skip
    out.write_text(json.dumps(result, indent=1))
    typer.echo(table(result))
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
