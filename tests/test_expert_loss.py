"""Expert-embedding Mod-X: the screened KL per source snapshot, plus the feature term."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.losses import feature_loss, grouped_modx_loss


def reference(img, txt, t_img, t_txt, groups, reduction="sum", scales=None, forgotten_only=False):
    """Float64, loops, straight from the definition: per group, per direction, per row.
    `scales`: per group, the teacher's logit scale (softmax at temperature 1 / scale)."""
    img, txt, t_img, t_txt = (np.asarray(a, np.float64) for a in (img, txt, t_img, t_txt))
    per_row = []
    for g in sorted(set(groups)):
        r = [i for i, x in enumerate(groups) if x == g]
        scale = 1.0 if scales is None else scales[g]
        s, t = scale * (img[r] @ txt[r].T), scale * (t_img[r] @ t_txt[r].T)
        rows = {}
        for name, (sm, tm) in {"i2t": (s, t), "t2i": (s.T, t.T)}.items():
            vals = []
            for i in range(len(r)):
                q = np.exp(sm[i]) / np.exp(sm[i]).sum()
                p = q if np.argmax(tm[i]) != i else np.exp(tm[i]) / np.exp(tm[i]).sum()  # screening
                if forgotten_only and q[i] >= p[i]:  # the student gives the match at least the teacher's probability
                    p = q
                vals.append(float((p * np.log(p / q)).sum()))
            rows[name] = vals
        per_row += [(a + b) / 2 for a, b in zip(rows["i2t"], rows["t2i"])]
    return sum(per_row) if reduction == "sum" else sum(per_row) / len(per_row)


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# hand-built: 5 rows in two source snapshots (3 and 7) and the parent (-1)
IMG = unit([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1])
TXT = unit([0.9, 0.1, 0], [0.1, 0.9, 0.2], [0, 0.3, 1], [1, 0.8, 0.1], [0.2, 1, 0.9])
T_IMG = unit([1, 0.2, 0], [0.3, 1, 0], [1, 0, 0.1], [1, 0.9, 0], [0, 1, 1.2])
T_TXT = unit([1, 0, 0], [0, 1, 0.3], [0.2, 0.1, 1], [0.9, 1, 0], [0.1, 0.8, 1])
GROUPS = torch.tensor([3, 3, 7, 7, -1])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_equals_a_float64_reference(reduction):
    got = grouped_modx_loss(IMG, TXT, T_IMG, T_TXT, GROUPS, reduction=reduction).item()
    want = reference(IMG, TXT, T_IMG, T_TXT, GROUPS.tolist(), reduction)
    assert want > 1e-4  # the matrices disagree, so the test measures something
    assert got == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_screening_follows_each_experts_own_argmax():
    # in group 7, T_IMG[2] is closest to T_TXT[3]: the expert misretrieves row 2, so it adds nothing
    t_img = T_IMG.clone()
    t_img[2] = unit([0.9, 1, 0])[0]
    full = grouped_modx_loss(IMG, TXT, t_img, T_TXT, GROUPS).item()
    assert full == pytest.approx(reference(IMG, TXT, t_img, T_TXT, GROUPS.tolist()), rel=1e-4)


def test_rows_of_different_sources_never_share_a_softmax():
    torch.manual_seed(0)
    near = lambda x, s: F.normalize(x + s * torch.randn(x.shape), dim=-1)  # noqa: E731
    img = F.normalize(torch.randn(8, 16), dim=-1)
    txt = near(img, 0.08)  # matched pairs: the experts retrieve them, so no row is screened
    t_img, t_txt = near(img, 0.08), near(txt, 0.08)
    groups = torch.tensor([0, 0, 0, 1, 1, 1, -1, -1])
    together = grouped_modx_loss(img, txt, t_img, t_txt, groups)
    apart = sum(
        grouped_modx_loss(
            img[groups == g],
            txt[groups == g],
            t_img[groups == g],
            t_txt[groups == g],
            torch.zeros(int((groups == g).sum()), dtype=torch.long),
        )
        for g in (0, 1, -1)
    )
    assert together.item() == pytest.approx(apart.item(), rel=1e-6)
    # moving a row of source 1 anywhere changes nothing in source 0's terms: its softmax never sees it
    moved_txt = txt.clone()
    moved_txt[3] = -txt[0]
    zeros = torch.zeros(3, dtype=torch.long)
    only0 = lambda t: grouped_modx_loss(img[:3], t[:3], t_img[:3], t_txt[:3], zeros)  # noqa: E731
    assert only0(moved_txt).item() == only0(txt).item()
    assert grouped_modx_loss(img, moved_txt, t_img, t_txt, groups).item() != together.item()
    # one shared softmax over the whole batch would differ
    assert grouped_modx_loss(img, txt, t_img, t_txt, torch.zeros(8, dtype=torch.long)).item() != pytest.approx(
        together.item(), rel=1e-3
    )


def test_gradients_reach_the_student_only():
    img, txt = IMG.clone().requires_grad_(), TXT.clone().requires_grad_()
    t_img, t_txt = T_IMG.clone().requires_grad_(), T_TXT.clone().requires_grad_()
    old = GROUPS >= 0
    loss = grouped_modx_loss(img, txt, t_img, t_txt, GROUPS) + 0.5 * feature_loss(
        img[old], txt[old], t_img[old], t_txt[old]
    )
    loss.backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0
    assert t_img.grad is None and t_txt.grad is None


def test_feature_term_is_one_minus_cosine_on_both_towers():
    img, txt = unit([1, 0], [0, 1]), unit([1, 1], [0, 1])
    s_img, s_txt = unit([0, 1], [0, 1]), unit([1, 1], [1, 0])
    # rows: image cos 0 and 1, text cos 1 and 0 -> ((1 - 0) + (1 - 1) + (1 - 1) + (1 - 0)) / 2 rows
    assert feature_loss(img, txt, s_img, s_txt).item() == pytest.approx(1.0, abs=1e-6)
    assert feature_loss(img, txt, img, txt).item() == pytest.approx(0.0, abs=1e-6)


SCALES = {3: 20.0, 7: 50.0, -1: 10.0}  # each source snapshot's logit scale


def test_each_group_softmaxes_at_its_teachers_own_logit_scale():
    scales = torch.tensor([SCALES[int(g)] for g in GROUPS])
    got = grouped_modx_loss(IMG, TXT, T_IMG, T_TXT, GROUPS, reduction="mean", scales=scales).item()
    want = reference(IMG, TXT, T_IMG, T_TXT, GROUPS.tolist(), "mean", scales=SCALES)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-7)
    # a sharper teacher is a different target: the scales are used, not the temperature
    assert want != pytest.approx(reference(IMG, TXT, T_IMG, T_TXT, GROUPS.tolist(), "mean"), rel=1e-2)


def test_forgotten_only_keeps_just_the_rows_the_student_gives_less_than_its_teacher():
    scales = torch.tensor([SCALES[int(g)] for g in GROUPS])
    kw = dict(reduction="sum", scales=scales)
    forgot = TXT[[1, 0, 2, 3, 4]]  # the student has swapped the texts of source 3's two pairs
    got = grouped_modx_loss(IMG, forgot, T_IMG, T_TXT, GROUPS, forgotten_only=True, **kw).item()
    want = reference(IMG, forgot, T_IMG, T_TXT, GROUPS.tolist(), "sum", SCALES, forgotten_only=True)
    full = reference(IMG, forgot, T_IMG, T_TXT, GROUPS.tolist(), "sum", SCALES)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-7)
    assert 0 < want < full  # some rows are dropped, some kept: the test measures the gate
    # a student that matches every pair far more surely than its teacher is held back by nothing
    sure = grouped_modx_loss(IMG, IMG, T_IMG, T_TXT, GROUPS, forgotten_only=True, **kw).item()
    assert sure == 0.0
