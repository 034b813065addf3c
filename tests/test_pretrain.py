"""`modx pretrain` at a tiny size, on fake @iconify-json packages the test builds (npm never runs)."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from typer.testing import CliRunner

from service.cli import app
from tests.fake_npm import no_network, seed_cache, write_tarballs
from tests.test_icons import ALPHA, BETA, WORDS, alpha_package, beta_package
from trainer.config import TrainConfig
from trainer.datasets.icons import PRETRAIN_SETS, IconDataset
from trainer.embed import encode_images, encode_texts
from trainer.model import create_model
from trainer.pretrain import CHECKPOINT, pretrain
from trainer.snapshot import load_snapshot, read_record

CFG = TrainConfig(method="ct", epochs=3, batch_size=8, lr=1e-3, warmup=0.2, checkpoint_every=4, augment=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    tarballs = write_tarballs(
        root / "tgz", {(ALPHA.package, ALPHA.version): alpha_package(), (BETA.package, BETA.version): beta_package()}
    )
    return seed_cache(root / "npm", tarballs)


def corpus(cache) -> IconDataset:
    return IconDataset(
        [ALPHA, BETA],
        size=32,
        test_fraction=0.2,
        validation_fraction=0.1,
        probe_fraction=0.0,
        cache_dir=cache,
        npm=no_network,
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class CutShort(Exception):
    pass


def test_pretrain_writes_a_checkpoint_open_clip_and_the_service_load(tmp_path, cache):
    out = pretrain(tmp_path / "clip0", corpus(cache), "modx-tiny", CFG, progress=False)
    record = read_record(out)
    ds = corpus(cache)
    n_train = sum(len(ds.train(d)) for d in ds.domains)
    assert record["method"] == "pretrain" and record["model"] == "modx-tiny"
    assert record["train"]["pairs"] == n_train and record["train"]["steps"] == 3 * (n_train // 8)
    assert record["corpus"]["sets"]["beta"]["license"]["spdx"] == "CC-BY-4.0"
    test = record["evaluation"]["test"]
    assert set(test["per_set"]) == {"alpha", "beta"} and 0 <= test["mean_r1"] <= 1
    assert test["pairs"] == {d: len(ds.test(d)) for d in ds.domains}
    assert not (tmp_path / ".clip0.pretrain" / CHECKPOINT).exists()

    plain, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")  # no modx code
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    ours, our_preprocess, our_tokenizer, _ = load_snapshot(out)
    pairs = ds.test("alpha") + ds.test("beta")
    images = [p.image for p in pairs]
    np.testing.assert_allclose(
        encode_images(plain, preprocess, images), encode_images(ours, our_preprocess, images), atol=1e-5
    )
    texts = [p.text for p in pairs]
    np.testing.assert_allclose(
        encode_texts(plain, tokenizer, texts), encode_texts(ours, our_tokenizer, texts), atol=1e-5
    )

    started, _, _ = create_model("modx-tiny", pretrained=out)  # what MODX_PRETRAINED=<out> does
    assert all(torch.equal(v, weights(ours)[k]) for k, v in started.state_dict().items())
    with pytest.raises(ValueError, match="'modx-tiny'"):
        create_model("modx-small", pretrained=out)
    with pytest.raises(FileExistsError):
        pretrain(out, corpus(cache), "modx-tiny", CFG, progress=False)


def test_cut_short_run_resumes_to_the_same_weights(tmp_path, cache):
    whole = pretrain(tmp_path / "whole", corpus(cache), "modx-tiny", CFG, progress=False)

    def stop_at_6(row):
        if row["step"] == 6:
            raise CutShort

    out, work = tmp_path / "cut", tmp_path / "work"
    with pytest.raises(CutShort):
        pretrain(out, corpus(cache), "modx-tiny", CFG, work_dir=work, on_step=stop_at_6, progress=False)
    assert not out.exists() and torch.load(work / CHECKPOINT, weights_only=True)["step"] == 4
    steps = []
    pretrain(
        out, corpus(cache), "modx-tiny", CFG, work_dir=work, on_step=lambda r: steps.append(r["step"]), progress=False
    )
    assert steps[0] == 5 and read_record(out)["train"]["resumed_at"] == 4
    resumed, uninterrupted = load_snapshot(out)[0], load_snapshot(whole)[0]
    for name, value in weights(uninterrupted).items():
        torch.testing.assert_close(weights(resumed)[name], value, rtol=0, atol=1e-6)
    assert not (work / CHECKPOINT).exists()


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, cache):
    work = tmp_path / "work"

    def stop_at_4(row):
        if row["step"] == 4:
            raise CutShort

    with pytest.raises(CutShort):
        pretrain(tmp_path / "a", corpus(cache), "modx-tiny", CFG, work_dir=work, on_step=stop_at_4, progress=False)
    steps = []
    pretrain(
        tmp_path / "b",
        corpus(cache),
        "modx-tiny",
        CFG.with_(lr=5e-4),
        work_dir=work,
        progress=False,
        on_step=lambda r: steps.append(r["step"]),
    )
    assert steps[0] == 1 and read_record(tmp_path / "b")["train"]["resumed_at"] == 0


def test_cli_pretrain_offline_from_the_cache(tmp_path):
    """`modx pretrain --sets bi,ri`: the named sets' packages come from a cache the test seeded."""
    tarballs = write_tarballs(
        tmp_path / "tgz",
        {
            (PRETRAIN_SETS["bi"].package, PRETRAIN_SETS["bi"].version): alpha_package(),
            (PRETRAIN_SETS["ri"].package, PRETRAIN_SETS["ri"].version): beta_package(WORDS[4:]),
        },
    )
    cache = seed_cache(tmp_path / "npm", tarballs)
    out = tmp_path / "clip0"
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--out",
            str(out),
            "--sets",
            "bi,ri",
            "--model",
            "modx-tiny",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--cache-dir",
            str(cache),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out test concepts" in result.output and f"modx up --pretrained {out}" in result.output
    record = json.loads((out / "snapshot.json").read_text())
    assert record["corpus"]["domains"] == ["bi", "ri"] and record["hparams"]["epochs"] == 1
    again = CliRunner().invoke(app, ["pretrain", "--out", str(out), "--sets", "bi", "--cache-dir", str(cache)])
    assert again.exit_code != 0 and "already exists" in again.output
