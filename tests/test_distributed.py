"""Data-parallel training on 2 gloo ranks (CPU) equals one process on the same global batch.

One spawn of two ranks runs every distributed job (process start-up dominates); the
single-process references run here. Compared: per-step losses, the gradient of one
global batch, the weights after a few steps, EWC's Fisher, and a resume of a checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from indexer.store import load_index
from service.cli import app
from tests.distributed_jobs import GLOBAL_BATCH, RECIPES, Stop, grads_of_one_batch, reindex_gallery, run_jobs, train
from trainer import distributed
from trainer.datasets.synthetic import SyntheticDataset
from trainer.phase import train_phase
from trainer.simulate import accuracy_matrix
from trainer.snapshot import initial_snapshot, read_record

RANKS = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A parent trained a little on domain 0 (so Mod-X screening keeps some teacher rows and
    drops others), the next domain's pairs, and the 2-rank results of every job."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ddp")
    ds = SyntheticDataset(n_domains=2, pairs_per_domain=48, seed=1)
    init = initial_snapshot("modx-tiny", tmp / "init", seed=0)
    cfg0 = RECIPES["ct"].with_(epochs=3)
    parent = train_phase(init, ds.train("basic"), cfg0, tmp / "parent", version=0)
    pairs = ds.train("blocky")
    crash = tmp / "crashed"  # a single-process run cut short after the checkpoint at step 2
    with pytest.raises(Stop):
        train(parent, pairs, "modx", tmp / "never", work_dir=crash, stop_at=3)
    assert (crash / "checkpoint.pt").exists()
    ranks = distributed.spawn(run_jobs, RANKS, parent, pairs, tmp / "ranks", crash)
    return parent, pairs, tmp, ranks


def test_the_ranks_gather_like_open_clip(setup):
    gathered = setup[3]["gather"]
    assert gathered["equal_to_open_clip"] and gathered["grads_equal_to_open_clip"]
    assert gathered["ragged_sizes"] == [3, 2]  # 5 rows over 2 ranks, one world gather
    assert gathered["ragged_grad_ok"]


@pytest.mark.parametrize("method", ["ct", "modx"])
def test_one_global_batch_has_the_single_process_gradient(setup, method):
    parent, pairs, _, ranks = setup
    loss, grads = grads_of_one_batch(parent, pairs, method)
    two = ranks["grads"][method]
    assert abs(two["loss"] - loss) < 1e-5 * max(1, abs(loss)), (two["loss"], loss)
    assert two["grads"].keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["ct", "modx", "ewc"])
def test_a_few_steps_on_two_ranks_match_one_process(setup, method):
    parent, pairs, tmp, ranks = setup
    losses, out = [], tmp / f"single-{method}"
    train(parent, pairs, method, out, losses=losses)
    two = ranks["train"][method]
    assert len(losses) == len(two["losses"]) == RECIPES[method].epochs * (len(pairs) // GLOBAL_BATCH)
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(losses), rtol=1e-4, atol=1e-5)
    single, double = load_file(out / "model.safetensors"), load_file(two["out"] / "model.safetensors")
    for name, w in single.items():
        torch.testing.assert_close(double[name], w, rtol=0, atol=2e-5, msg=name)
    assert read_record(two["out"])["train"]["ranks"] == RANKS
    if method == "ewc":  # each rank estimated half the Fisher's batches; the all-reduce sums them
        f1, f2 = load_file(out / "fisher.safetensors"), load_file(two["out"] / "fisher.safetensors")
        for name, f in f1.items():
            torch.testing.assert_close(f2[name], f, rtol=1e-3, atol=1e-9, msg=name)


def test_rank_0_leads_the_training_and_the_others_follow(setup):
    parent, pairs, tmp, ranks = setup
    ref = tmp / "single-ct"
    if not ref.exists():
        train(parent, pairs, "ct", ref)
    assert read_record(ranks["led"])["train"]["ranks"] == RANKS
    single, led = load_file(ref / "model.safetensors"), load_file(ranks["led"] / "model.safetensors")
    for name, w in single.items():
        torch.testing.assert_close(led[name], w, rtol=0, atol=2e-5, msg=name)


def test_both_ranks_resume_from_rank_0s_checkpoint(setup):
    parent, pairs, tmp, ranks = setup
    resumed = ranks["resumed"]
    assert resumed["first_step"] == 3  # the checkpoint was at step 2
    ref = tmp / "single-modx"
    if not ref.exists():
        train(parent, pairs, "modx", ref)
    single, double = load_file(ref / "model.safetensors"), load_file(resumed["out"] / "model.safetensors")
    for name, w in single.items():
        torch.testing.assert_close(double[name], w, rtol=0, atol=2e-5, msg=name)
    assert not (tmp / "crashed" / "checkpoint.pt").exists()  # rank 0 removed it with the snapshot


def test_two_ranks_re_embed_the_gallery_into_the_one_worker_index(setup):
    parent, pairs, tmp, ranks = setup
    ids, vectors = reindex_gallery(parent, pairs, tmp / "one-index")
    two_ids, two_vectors = ranks["reindex"]
    assert two_ids == ids and len(ids) == 20  # the repeated id kept once, where one worker keeps it
    np.testing.assert_allclose(two_vectors, vectors, atol=1e-5)
    saved = load_index(tmp / "ranks" / "index")  # written by rank 0, the shards' staging removed
    assert saved.ids == ids and not (tmp / "ranks" / "index.shards").exists()


def test_simulate_on_two_ranks_gives_the_one_process_recall_table(tmp_path):
    """`modx simulate --nproc 2` (it spawns the ranks) against `--nproc 1`, Mod-X with replay."""
    recipe = ["--method", "modx", "--phases", "2", "--epochs", "1", "--first-epochs", "3", "--batch-size", "64"]
    results, tables = {}, {}
    for n in (1, 2):
        out = tmp_path / f"nproc{n}.json"
        args = [*recipe, "--nproc", str(n), "--out", str(out), "--work-dir", str(tmp_path / f"work{n}")]
        res = CliRunner().invoke(app, ["simulate", *args])
        assert res.exit_code == 0, res.output
        results[n], tables[n] = json.loads(out.read_text()), res.output
    one, two = (accuracy_matrix(results[n]["phases"], results[n]["domains"]) for n in (1, 2))
    assert one.shape == (2, 2) and np.abs(one - two).max() <= 0.03, (tables[1], tables[2])
    assert results[2]["phases"][1]["train"]["ranks"] == 2 and "ranks" not in results[1]["phases"][1]["train"]
    losses = [results[n]["phases"][1]["train"]["final_loss"] for n in (1, 2)]
    assert abs(losses[0] - losses[1]) < 1e-3 * abs(losses[0]), losses


def test_a_rank_failing_in_step_ends_the_job_instead_of_leaving_the_others_waiting():
    code = "from tests.distributed_jobs import fail_one_rank; from trainer import distributed; "
    code += "distributed.spawn(fail_one_rank, 2)"
    root = Path(__file__).parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "rank 1 failed inside a data-parallel block" in proc.stderr and "a fault on rank 1" in proc.stderr
