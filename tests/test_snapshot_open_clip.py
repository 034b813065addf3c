"""Snapshots open with plain open_clip ("local-dir:"), and the service's CLIP_0 starts from a
pretrained checkpoint (MODX_PRETRAINED / `modx up --pretrained`)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from service.cli import _choose_model, app
from service.training import ensure_clip0
from trainer.embed import embed_image_tensor, embed_token_tensor
from trainer.model import OPEN_CLIP_CONFIG, create_model
from trainer.snapshot import load_snapshot, read_record, save_snapshot

OPEN_CLIP_ONLY = """
import sys, numpy as np, open_clip, torch
path, out = sys.argv[1], sys.argv[2]
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + path)
tokenizer = open_clip.get_tokenizer("local-dir:" + path)
model.eval()
images = torch.load(out + "/images.pt")
with torch.no_grad():
    img = model.encode_image(images, normalize=True).numpy()
    txt = model.encode_text(tokenizer(["a red heart", "arrow left circle"]), normalize=True).numpy()
np.save(out + "/img.npy", img)
np.save(out + "/txt.npy", txt)
assert preprocess.transforms[0].size == 32, preprocess
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("trainer", "service", "indexer"))
assert not leaked, leaked
"""


def a_checkpoint(path, seed: int, model_name: str = "modx-tiny"):
    torch.manual_seed(seed)
    model, _, _ = create_model(model_name)
    return save_snapshot(model, path, model_name=model_name, version=0, parent=None, phase=None, method="init")


def test_service_snapshot_loads_with_open_clip_alone(tmp_path):
    snapshot = ensure_clip0(tmp_path / "data", "modx-tiny", None, seed=3)
    assert (snapshot / OPEN_CLIP_CONFIG).is_file()
    images = torch.rand(4, 3, 32, 32)
    torch.save(images, tmp_path / "images.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", OPEN_CLIP_ONLY, str(snapshot), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    model, _, tokenizer, _ = load_snapshot(snapshot)
    ours_img = embed_image_tensor(model.eval(), images).numpy()
    ours_txt = embed_token_tensor(model, tokenizer(["a red heart", "arrow left circle"])).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "img.npy"), ours_img, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "txt.npy"), ours_txt, atol=1e-5)


def test_a_snapshot_without_open_clip_config_still_loads(tmp_path):
    """Snapshots written before open_clip_config.json existed load by their model name."""
    snapshot = a_checkpoint(tmp_path / "old", seed=1)
    expected = load_snapshot(snapshot)[0].state_dict()
    (snapshot / OPEN_CLIP_CONFIG).unlink()
    loaded = load_snapshot(snapshot)[0].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_clip0_starts_from_a_pretrained_checkpoint(tmp_path):
    pretrained = a_checkpoint(tmp_path / "pretrained", seed=123)
    clip0 = ensure_clip0(tmp_path / "data", "modx-tiny", str(pretrained), seed=0)
    want, got = load_snapshot(pretrained)[0].state_dict(), load_snapshot(clip0)[0].state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    assert read_record(clip0)["hparams"]["pretrained"] == str(pretrained)
    fresh = ensure_clip0(tmp_path / "other", "modx-tiny", None, seed=0)
    fresh_state = load_snapshot(fresh)[0].state_dict()
    assert any(not torch.equal(fresh_state[k], v) for k, v in want.items())  # without it: a fresh init
    with pytest.raises(ValueError, match="'modx-tiny'"):
        ensure_clip0(tmp_path / "wrong", "modx-small", str(pretrained))


def test_up_refuses_a_checkpoint_of_another_model(tmp_path, monkeypatch):
    pretrained = a_checkpoint(tmp_path / "pretrained", seed=0)
    monkeypatch.setenv("MODX_MODEL", "modx-tiny")  # restored after the test: `modx up` sets both
    monkeypatch.setenv("MODX_PRETRAINED", "")
    result = CliRunner().invoke(
        app, ["up", "--pretrained", str(pretrained), "--model", "modx-small", "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 2 and "is not a 'modx-small' model" in result.output and "modx-tiny" in result.output
    assert not (tmp_path / "data").exists()  # refused before anything started
    missing = CliRunner().invoke(app, ["up", "--pretrained", str(tmp_path / "nope"), "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "not a local file or directory" in missing.output


def test_up_takes_the_model_from_the_checkpoint(tmp_path, monkeypatch):
    pretrained = a_checkpoint(tmp_path / "pretrained", seed=0, model_name="modx-small")
    monkeypatch.setenv("MODX_MODEL", "modx-tiny")
    monkeypatch.setenv("MODX_PRETRAINED", "")
    _choose_model(pretrained, None)
    assert os.environ["MODX_MODEL"] == "modx-small" and os.environ["MODX_PRETRAINED"] == str(pretrained.resolve())
