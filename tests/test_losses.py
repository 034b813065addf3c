import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.losses import clip_loss, cognition_kl, ewc_penalty, modx_loss, screen


def test_screening_replaces_exactly_the_misretrieving_rows():
    teacher = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.3, 0.1], [0.0, 0.2, 0.7]])  # row 1 picks column 0
    student = torch.tensor([[0.5, 0.2, 0.1], [0.1, 0.6, 0.2], [0.3, 0.3, 0.4]])
    screened, wrong = screen(teacher, student)
    assert wrong.tolist() == [False, True, False]
    assert torch.equal(screened[0], teacher[0]) and torch.equal(screened[2], teacher[2])
    assert torch.equal(screened[1], student[1])


def test_screened_rows_add_neither_loss_nor_gradient():
    teacher = torch.tensor([[0.1, 0.9], [0.2, 0.8]])  # row 0 misretrieves
    student = torch.tensor([[0.7, 0.1], [0.3, 0.4]], requires_grad=True)
    loss = cognition_kl(student, teacher)
    loss.backward()
    only_row_1 = cognition_kl(student.detach()[1:], teacher[1:], screening=False)
    assert loss.item() == pytest.approx(only_row_1.item(), abs=1e-7)
    assert torch.allclose(student.grad[0], torch.zeros(2), atol=1e-7)
    assert student.grad[1].abs().sum() > 0


def test_kl_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    for reduction in ("sum", "mean"):
        for temperature in (1.0, 0.05):
            assert modx_loss(img, txt, img, txt, temperature, reduction).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_reaches_the_student_only():
    torch.manual_seed(0)
    s_img = F.normalize(torch.randn(6, 8), dim=-1).requires_grad_()
    s_txt = F.normalize(torch.randn(6, 8), dim=-1).requires_grad_()
    t_img = (s_img.detach() + 0.3 * torch.randn(6, 8)).requires_grad_()
    t_txt = (s_txt.detach() + 0.3 * torch.randn(6, 8)).requires_grad_()
    modx_loss(s_img, s_txt, t_img, t_txt, screening=False).backward()
    assert t_img.grad is None and t_txt.grad is None
    assert s_img.grad.abs().sum() > 0 and s_txt.grad.abs().sum() > 0


def reference_modx(s_img, s_txt, t_img, t_txt, temperature=1.0, reduction="sum", screening=True, only=None):
    """Loops in float64, straight from the paper's description (`only`: the rows kept)."""
    s_img, s_txt, t_img, t_txt = (np.asarray(a, np.float64) for a in (s_img, s_txt, t_img, t_txt))
    n = len(s_img)
    only = range(n) if only is None else only

    def direction(student, teacher):
        rows = []
        for i in only:
            t_row, s_row = teacher[i] / temperature, student[i] / temperature
            if screening and int(np.argmax(t_row)) != i:
                t_row = s_row
            p = np.exp(t_row - t_row.max()) / np.exp(t_row - t_row.max()).sum()
            q = np.exp(s_row - s_row.max()) / np.exp(s_row - s_row.max()).sum()
            rows.append(sum(p[j] * (math.log(p[j]) - math.log(q[j])) for j in range(n)))
        return sum(rows) if reduction == "sum" else sum(rows) / len(rows)

    s, t = s_img @ s_txt.T, t_img @ t_txt.T
    return (direction(s, t) + direction(s.T, t.T)) / 2


@pytest.mark.parametrize(
    "temperature,reduction,screening", [(1.0, "sum", True), (0.1, "mean", True), (1.0, "sum", False)]
)
def test_loss_equals_float64_reference(temperature, reduction, screening):
    torch.manual_seed(1)
    s_img, s_txt = F.normalize(torch.randn(7, 5), dim=-1), F.normalize(torch.randn(7, 5), dim=-1)
    t_img = F.normalize(s_img + 0.5 * torch.randn(7, 5), dim=-1)
    t_txt = F.normalize(s_txt + 0.5 * torch.randn(7, 5), dim=-1)
    ours = modx_loss(s_img, s_txt, t_img, t_txt, temperature, reduction, screening).item()
    ref = reference_modx(s_img, s_txt, t_img, t_txt, temperature, reduction, screening)
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-6)
    # the example must exercise screening: some teacher rows misretrieve
    assert screen(t_img @ t_txt.T, s_img @ s_txt.T)[1].any()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_kl_on_chosen_rows_only(reduction):
    """distill_on = "replay": only the replayed samples' rows count; all pairs stay columns."""
    torch.manual_seed(2)
    s_img, s_txt = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    t_img, t_txt = (
        F.normalize(s_img + 0.3 * torch.randn(6, 4), dim=-1),
        F.normalize(s_txt + 0.3 * torch.randn(6, 4), dim=-1),
    )
    rows = torch.tensor([False, True, False, True, True, False])
    ours = modx_loss(s_img, s_txt, t_img, t_txt, 1.0, reduction, True, rows).item()
    ref = reference_modx(s_img, s_txt, t_img, t_txt, 1.0, reduction, True, only=[1, 3, 4])
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-6) and ours > 0
    assert modx_loss(s_img, s_txt, t_img, t_txt, rows=torch.zeros(6, dtype=torch.bool)).item() == 0.0


def test_clip_loss_matches_hand_computation():
    img = torch.eye(3, dtype=torch.float64)
    txt = torch.eye(3, dtype=torch.float64)
    scale = torch.tensor(10.0, dtype=torch.float64)
    expected = -math.log(math.exp(10) / (math.exp(10) + 2))
    assert clip_loss(img, txt, scale).item() == pytest.approx(expected, rel=1e-6)


def test_ewc_penalty():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    fisher = {"weight": torch.tensor([[2.0, 0.5]])}
    anchor = {"weight": torch.tensor([[0.0, 0.0]])}
    assert ewc_penalty(model, fisher, anchor).item() == pytest.approx((2 * 1 + 0.5 * 4) / 2)
