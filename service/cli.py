"""The `modx` command line."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from service import cli_client, keys_cli
from service.cli_client import ApiKeyOption, UrlOption
from service.client import DEFAULT_URL

app = typer.Typer(help="modx: streaming continual CLIP training with Mod-X", no_args_is_help=True)
app.add_typer(keys_cli.app, name="keys")
cli_client.register(app)


def setup_logging(verbose: bool = False, role: str | None = None) -> None:
    """A role's logs: JSON lines off a terminal (service.logs), its metrics port served."""
    if role is None:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("modx").setLevel(logging.DEBUG if verbose else logging.INFO)
        return
    from service import logs, metrics
    from service.settings import Settings

    s = Settings()
    logs.setup(role, verbose, s.log_format)
    metrics.serve(role, getattr(s, f"{role}_metrics_port"), s.metrics_host)


def _parse_sweep(values: list[str]) -> dict[str, list]:
    """`alpha=5,20` -> {"alpha": [5.0, 20.0]}; `method=ct,modx` -> {"method": ["ct", "modx"]}"""
    sweep = {}
    for item in values:
        key, _, raw = item.partition("=")
        if not raw:
            raise typer.BadParameter(f"sweep item {item!r} must look like name=v1,v2")
        sweep[key.replace("-", "_")] = [
            json.loads(v) if v[:1].isdigit() or v[:1] in "-[{." else v for v in raw.split(",")
        ]
    return sweep


def with_recipe_options(command):
    """`command(..., recipe)` as a typer command with one option per TrainConfig field (its
    default and help from trainer.config), so the CLI's defaults are the default recipe."""
    from trainer.config import TrainConfig, recipe_fields

    recipe = recipe_fields()
    sig = inspect.signature(command, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "recipe"]
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=kind,
            default=typer.Option(default, help=help_, rich_help_panel="Recipe (trainer.config)"),
        )
        for name, kind, default, help_ in recipe
    ]

    @functools.wraps(command)
    def wrapper(**kw):
        return command(
            **{k: v for k, v in kw.items() if k in sig.parameters},
            recipe=TrainConfig(**{name: kw[name] for name, *_ in recipe}),
        )

    wrapper.__signature__ = sig.replace(parameters=own + options)
    wrapper.__annotations__ = {p.name: p.annotation for p in own + options}
    return wrapper


@app.command()
@with_recipe_options
def simulate(
    dataset: str = typer.Option("synthetic", help="synthetic | emoji (npm packages, cached after the first run)"),
    phases: Optional[int] = typer.Option(None, help="number of domains (phase 0 included); default all"),
    out: Path = typer.Option(Path("result.json"), help="where to write the result JSON"),
    model: str = typer.Option("modx-tiny", help="open_clip model config name"),
    pretrained: Optional[str] = typer.Option(None, help="local checkpoint for CLIP_0's starting weights"),
    first_epochs: int = typer.Option(30, help="epochs for CLIP_0 on domain 0"),
    first_lr: Optional[float] = typer.Option(None, help="CLIP_0's peak learning rate (default: --lr)"),
    joint_epochs: Optional[int] = typer.Option(None, help="epochs of joint training per phase (default: --epochs)"),
    sweep: list[str] = typer.Option(
        [],
        help="a grid axis, e.g. --sweep alpha=5,20 --sweep replay_fraction=0,0.5; "
        "every combination runs, the best on validation is chosen",
    ),
    work_dir: Optional[Path] = typer.Option(None, help="where snapshots go (default: a temp dir); reruns reuse them"),
    nproc: int = typer.Option(
        1, min=1, help="data-parallel ranks to start (gloo on CPU, one GPU each on CUDA); or run under torchrun"
    ),
    verbose: bool = typer.Option(False),
    recipe=None,
):
    """Run the continual protocol offline and print the recall table (or a sweep's front).

    With no recipe option it runs the default recipe, the one the service's trainer runs."""
    from trainer import distributed
    from trainer.datasets import get_dataset
    from trainer.simulate import simulate as run
    from trainer.simulate import table
    from trainer.tune import sweep as run_sweep
    from trainer.tune import sweep_table

    setup_logging(verbose)
    cfg = recipe
    data = get_dataset(dataset, seed=cfg.seed) if dataset == "synthetic" else get_dataset(dataset)
    kw = dict(
        model_name=model,
        phases=phases,
        first_epochs=first_epochs,
        first_lr=first_lr,
        joint_epochs=joint_epochs,
        work_dir=work_dir,
        pretrained=pretrained,
    )
    fn, args = (run_sweep, (data, cfg, _parse_sweep(sweep))) if sweep else (run, (data, cfg))
    if nproc > 1:
        result = distributed.spawn(fn, nproc, *args, device=cfg.device, **kw)
    else:
        distributed.init(cfg.device)  # under torchrun: join the other ranks
        result = fn(*args, **kw)
        if not distributed.is_main():
            return
    if sweep:
        report = sweep_table(result) + "\n\nchosen recipe:\n" + table(result["results"][result["chosen"]])
    else:
        report = table(result)
    out.write_text(json.dumps(result, indent=1))
    typer.echo(report)
    typer.echo(f"wrote {out}")


@app.command()
def pretrain(
    out: Path = typer.Option(..., help="the checkpoint directory to write (open_clip local-dir, MODX_PRETRAINED)"),
    preset: str = typer.Option("cpu", help="cpu (~30 min on 2 cores) | gpu; the options below override it"),
    model: Optional[str] = typer.Option(None, help="open_clip model config (cpu: modx-small, gpu: modx-base)"),
    sets: Optional[str] = typer.Option(
        None, help="comma-separated @iconify-json sets (default: every pretraining set)"
    ),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    max_per_set: Optional[int] = typer.Option(None, help="icons per set at most (default: all)"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda"),
    seed: int = typer.Option(0),
    cache_dir: Optional[Path] = typer.Option(None, help="npm cache (default ~/.cache/modx/npm)"),
    work_dir: Optional[Path] = typer.Option(None, help="step checkpoints (default: .<out>.pretrain beside out)"),
    verbose: bool = typer.Option(False),
):
    """Pretrain CLIP_0 on the Iconify icon corpus; a cut-short run resumes when rerun."""
    from trainer.pretrain import run_preset

    setup_logging(verbose)
    chosen = {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_per_set": max_per_set,
        "device": device,
        "seed": seed,
        "sets": sets.split(",") if sets else None,
        "cache_dir": cache_dir,
    }
    try:
        path, summary = run_preset(out, preset, work_dir=work_dir, **{k: v for k, v in chosen.items() if v is not None})
    except (ValueError, FileExistsError) as exc:
        typer.echo(f"modx pretrain: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary)
    typer.echo(f"wrote {path}\nstart the service from it: modx up --pretrained {path}")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@app.command()
def api(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000), verbose: bool = typer.Option(False)):
    """Serve the REST API (ingest, search, phases, snapshots, recall, drift, health, metrics)."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    setup_logging(verbose, "api")
    uvicorn.run(create_app(Settings()), host=host, port=port, log_level="warning", log_config=None, access_log=False)


@app.command()
def consumer(verbose: bool = typer.Option(False)):
    """Consume pairs from Kafka into fsynced phase buffers (one member of the consumer group)."""
    from service.consumer import run
    from service.settings import Settings

    setup_logging(verbose, "consumer")
    run(Settings(), _stop_on_signals())


@app.command()
def trainer(verbose: bool = typer.Option(False)):
    """Train one snapshot per sealed phase (teacher = the serving snapshot).

    Under `torchrun --nproc_per_node N`, rank 0 runs the worker and the other ranks join
    each phase's data-parallel training (trainer.distributed.follow)."""
    from service.settings import Settings
    from service.trainer_worker import run_trainer
    from trainer import distributed

    settings = Settings()
    distributed.init(settings.device)
    if not distributed.is_main():  # a follower: plain logs, no metrics port of its own
        setup_logging(verbose)
        return distributed.follow()
    setup_logging(verbose, "trainer")
    with distributed.leading():
        run_trainer(settings, _stop_on_signals())


@app.command()
def indexer(verbose: bool = typer.Option(False)):
    """Re-embed the gallery per serving snapshot into a FAISS index; add new pairs in segments."""
    from service.indexer_worker import run_indexer
    from service.settings import Settings

    setup_logging(verbose, "indexer")
    run_indexer(Settings(), _stop_on_signals())


@app.command()
def up(
    port: int = typer.Option(8000, help="API port"),
    data_dir: Optional[Path] = typer.Option(None, help="default: MODX_DATA_DIR or ./data"),
    pretrained: Optional[Path] = typer.Option(
        None, help="CLIP_0's weights: a `modx pretrain` output, a snapshot or a weights file (sets MODX_PRETRAINED)"
    ),
    model: Optional[str] = typer.Option(
        None, help="open_clip model config (sets MODX_MODEL; default: the pretrained checkpoint's, else modx-tiny)"
    ),
    verbose: bool = typer.Option(False),
):
    """Embedded stack: Tansu broker + private redis-server (unless MODX_REDIS_URL) + API + workers."""
    from service.stack import run_stack

    setup_logging(verbose)
    _choose_model(pretrained, model)
    run_stack(port=port, data_dir=data_dir, stop=_stop_on_signals(), verbose=verbose)


def _choose_model(pretrained: Path | None, model: str | None) -> None:
    """Put --pretrained / --model into MODX_PRETRAINED / MODX_MODEL for the roles, checked now."""
    import os

    from service.settings import Settings
    from trainer.model import model_name_of, pretrained_weights

    if pretrained is not None:
        os.environ["MODX_PRETRAINED"] = str(pretrained.resolve())
        model = model or model_name_of(pretrained)
    if model is not None:
        os.environ["MODX_MODEL"] = model
    settings = Settings()
    if settings.pretrained:
        try:
            pretrained_weights(settings.model, settings.pretrained)
        except (OSError, ValueError, KeyError) as exc:
            typer.echo(f"modx up: {exc}", err=True)
            raise typer.Exit(2) from exc


@app.command()
def demo(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    phases: int = typer.Option(3, help="synthetic domains to stream, one phase each"),
    pairs: int = typer.Option(300, help="pairs per phase"),
    timeout: float = typer.Option(900, help="seconds to wait for each snapshot and index"),
):
    """Stream the synthetic domains through the REST API and watch the model learn and forget."""
    from service.demo import run_demo

    setup_logging(False)
    run_demo(url, api_key, phases=phases, pairs_per_phase=pairs, timeout_s=timeout)


if __name__ == "__main__":
    app()
