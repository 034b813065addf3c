import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from trainer.config import PAPER_MODX, TrainConfig
from trainer.datasets.synthetic import SyntheticDataset
from trainer.loop import batches, make_optimizer
from trainer.losses import modx_loss
from trainer.model import create_model
from trainer.phase import freeze, prepare, teacher_cache, train_phase
from trainer.snapshot import TRAINED, initial_snapshot, load_snapshot, read_record, save_snapshot


@pytest.fixture(scope="module")
def data():
    ds = SyntheticDataset(n_domains=2, pairs_per_domain=96, seed=3)
    return ds.train("basic"), ds.train("blocky")


@pytest.fixture()
def parent(tmp_path):
    return initial_snapshot("modx-tiny", tmp_path / "init", seed=0)


def weights(path):
    return load_file(path / "model.safetensors")


def same_weights(a, b, atol=0.0):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol, rtol=0) for k in wa)


CFG = TrainConfig(**PAPER_MODX, epochs=2, batch_size=16, warmup=0.2, lr=1e-3, checkpoint_every=0)


def test_snapshot_roundtrip_loads_an_identical_model(tmp_path):
    torch.manual_seed(0)
    model, _, tok = create_model("modx-tiny")
    path = save_snapshot(
        model,
        tmp_path / "v000001",
        model_name="modx-tiny",
        version=1,
        parent=0,
        phase=1,
        method="modx",
        hparams={"alpha": 20},
    )
    loaded, _, tok2, record = load_snapshot(path)
    assert record["version"] == 1 and record["parent"] == 0 and record["method"] == "modx"
    assert record["hparams"] == {"alpha": 20} and record["model_config"]["embed_dim"] == 64 and record["created"]
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    tokens = tok(["a red circle"])
    assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000001"]  # no temp dir left behind
    with pytest.raises(FileExistsError):
        save_snapshot(model, path, model_name="modx-tiny", version=1, parent=0, phase=1, method="modx")


def test_tokenizer_context_length_follows_the_registered_config():
    _, _, tok = create_model("modx-tiny")
    assert tok(["hello"]).shape == (1, 24)


def test_pretrained_must_be_a_local_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_model("modx-tiny", pretrained="openai")


def test_student_starts_from_the_parent(parent, data, tmp_path):
    child = train_phase(parent, data[1], CFG.with_(lr=0.0, warmup=0.0), tmp_path / "child", version=1)
    assert same_weights(parent, child)
    record = read_record(child)
    assert record["parent"] is None and record["hparams"]["alpha"] == 20.0


def test_training_is_deterministic_under_a_seed(parent, data, tmp_path):
    a = train_phase(parent, data[1], CFG, tmp_path / "a", version=1)
    b = train_phase(parent, data[1], CFG, tmp_path / "b", version=1)
    c = train_phase(parent, data[1], CFG.with_(seed=1), tmp_path / "c", version=1)
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert not same_weights(parent, a)


def test_teacher_cache_gives_the_same_loss_as_a_live_teacher(parent, data):
    model, preprocess, tok, _ = load_snapshot(parent)
    teacher = freeze(load_snapshot(parent)[0])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    d = prepare(data[0], preprocess, tok)
    cache_img, cache_txt = teacher_cache(teacher, d)
    with torch.no_grad():  # perturb the student so the loss is not trivially 0
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    for idx in batches(len(d), 16, seed=0, epoch=0)[:3]:
        img = F.normalize(model.encode_image(d.images[idx]), dim=-1)
        txt = F.normalize(model.encode_text(d.tokens[idx]), dim=-1)
        with torch.no_grad():
            live = (
                F.normalize(teacher.encode_image(d.images[idx]), dim=-1),
                F.normalize(teacher.encode_text(d.tokens[idx]), dim=-1),
            )
        loss_live = modx_loss(img, txt, *live)
        loss_cached = modx_loss(img, txt, cache_img[idx], cache_txt[idx])
        assert loss_live.item() > 0
        assert loss_cached.item() == pytest.approx(loss_live.item(), rel=1e-4, abs=1e-6)


def test_cache_flag_off_trains_the_same_model(parent, data, tmp_path):
    a = train_phase(parent, data[1], CFG, tmp_path / "cached", version=1)
    b = train_phase(parent, data[1], CFG.with_(cache_teacher=False), tmp_path / "live", version=1)
    assert same_weights(a, b, atol=1e-4)


class Crash(Exception):
    pass


def test_a_crash_mid_phase_resumes_from_the_last_checkpoint(parent, data, tmp_path):
    cfg = CFG.with_(epochs=3, checkpoint_every=4)
    reference = train_phase(parent, data[1], cfg, tmp_path / "ref", version=1)

    def crash_at_7(info):
        if info["step"] == 7:
            raise Crash

    work = tmp_path / "work"
    with pytest.raises(Crash):
        train_phase(parent, data[1], cfg, tmp_path / "out", version=1, work_dir=work, on_step=crash_at_7)
    assert (work / "checkpoint.pt").exists() and not (tmp_path / "out").exists()
    steps = []
    out = train_phase(
        parent, data[1], cfg, tmp_path / "out", version=1, work_dir=work, on_step=lambda i: steps.append(i["step"])
    )
    assert steps[0] == 5  # resumed after step 4, not from scratch
    assert same_weights(reference, out, atol=1e-6)
    assert not (work / "checkpoint.pt").exists()


def test_logit_scale_is_clamped_and_norms_biases_are_not_decayed(parent, data, tmp_path):
    model, *_ = load_snapshot(parent)
    opt = make_optimizer(model, CFG.with_(weight_decay=0.5), torch.device("cpu"))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # a zero gradient: only (decoupled) weight decay moves a parameter
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert {
        "positional_embedding",
        "text_projection",
        "token_embedding.weight",
        "visual.conv1.weight",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "transformer.resblocks.1.mlp.c_fc.weight",
    } <= moved
    assert not moved & {
        "logit_scale",
        "visual.class_embedding",
        "visual.ln_pre.weight",
        "ln_final.weight",
        "transformer.resblocks.0.attn.in_proj_bias",
        "visual.transformer.resblocks.1.ln_2.bias",
    }
    child = train_phase(parent, data[1], CFG.with_(method="ct", lr=0.5, warmup=0.0), tmp_path / "hot", version=1)
    assert 0 <= weights(child)["logit_scale"].item() <= math.log(100) + 1e-6


def test_ewc_records_and_accumulates_a_fisher(parent, data, tmp_path):
    cfg = CFG.with_(method="ewc", fisher_batches=2)
    first = train_phase(parent, data[0], cfg, tmp_path / "e1", version=1)
    second = train_phase(first, data[1], cfg, tmp_path / "e2", version=2)
    f1, f2 = load_file(first / "fisher.safetensors"), load_file(second / "fisher.safetensors")
    assert all((f2[k] >= f1[k]).all() for k in f1)
    assert sum(v.sum().item() for v in f1.values()) > 0


def test_replay_mixes_in_older_pairs(parent, data, tmp_path):
    child = train_phase(parent, data[1], CFG.with_(replay_fraction=0.5), tmp_path / "r", version=1, replay=[data[0]])
    trained = json.loads((child / TRAINED).read_text())
    stats = read_record(child)["train"]
    assert len(data[1]) == 72 and stats["replayed_per_epoch"] == 36
    assert stats["replayed"] == len(trained["replayed"]) == len(set(trained["replayed"]))  # distinct, no repeats
    # each epoch draws afresh from the store: over 2 epochs more distinct pairs than one draw
    assert 36 < stats["replayed"] <= min(len(data[0]), 72)
    assert set(trained["replayed"]) <= {p.id for p in data[0]} and trained["pairs"] == [p.id for p in data[1]]
    assert stats["samples"] == 2 * ((len(data[1]) + stats["replayed_per_epoch"]) // 16 * 16)  # the budget, per epoch


def test_tower_learning_rates_scale_only_their_tower(parent, data, tmp_path):
    child = train_phase(parent, data[1], CFG.with_(method="ct", lr_image=1e-9), tmp_path / "frozen-image", version=1)
    before, after = weights(parent), weights(child)
    moved = {k: not torch.allclose(before[k], after[k], atol=1e-6, rtol=0) for k in before}
    assert not any(v for k, v in moved.items() if k.startswith("visual."))
    assert any(v for k, v in moved.items() if k.startswith("transformer."))


def test_expert_modx_on_replayed_rows_only_runs_no_parent_forward(parent, data, tmp_path):
    from trainer.experts import embed_experts

    clip0 = train_phase(parent, data[0], CFG.with_(method="ct", epochs=1), tmp_path / "v0", version=0)
    experts = embed_experts(clip0, data[0])  # every older pair has its expert
    cfg = CFG.with_(expert=True, beta=1.0, replay_fraction=0.5, teacher_scale=True, forgotten_only=True)
    stats = {}
    for on in ("all", "replay"):
        child = train_phase(
            clip0, data[1], cfg.with_(distill_on=on), tmp_path / on, version=1, replay=[data[0]], experts=experts
        )
        stats[on] = read_record(child)["train"]
        assert stats[on]["expert_rows"] == stats[on]["replayed"] > 0
    assert stats["all"]["teacher_forwards"] == len(data[1])  # the new rows are distilled against the parent
    assert stats["replay"]["teacher_forwards"] == 0  # ... or learn freely, and no teacher runs at all
    assert not same_weights(tmp_path / "all", tmp_path / "replay")
