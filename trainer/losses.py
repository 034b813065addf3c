"""Losses: CLIP InfoNCE, the Mod-X cognition-align KL, and the EWC penalty.

All functions take L2-normalised features.

Expert-embedding Mod-X (beyond the paper, dark experience replay in Mod-X form): replayed
rows carry the stored embeddings of the snapshot that trained them (their expert);
`grouped_modx_loss` applies the screened KL per source snapshot, and `feature_loss` the
feature term beta * (1 - cos(student, stored)) on both towers.

Mod-X (Ni et al., ICML 2023). M[i, j] = <image_i, text_j> for the teacher (previous
snapshot) and the student, on the current batch. Each row is softmaxed; a teacher row whose
argmax is not its diagonal (the old model misretrieves that sample) is *screened*: replaced
by the student's own row (detached), so it adds neither loss nor gradient. The loss is
KL(teacher row || student row), image->text rows and text->image rows averaged.

Defaults follow the authors' code: softmax of raw cosines (temperature 1) and the KL
summed over rows, with alpha = 20. Scale equivalences, for choosing alpha under the
options: `reduction="mean"` divides the loss by the batch size B, so alpha_mean = B *
alpha_sum gives the same objective; a temperature T sharpens both distributions, which
multiplies the KL's gradients by roughly 1/T (the "logit-scaled" form uses T = 1 /
logit_scale, e.g. 0.01), so alpha must shrink accordingly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (open_clip's ClipLoss on one device)."""
    logits = logit_scale * image @ text.T
    labels = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def screen(teacher: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace teacher rows whose argmax is off the diagonal by the detached student row.

    Returns the screened teacher matrix and the boolean mask of replaced rows.
    """
    diagonal = torch.arange(len(teacher), device=teacher.device)
    wrong = teacher.argmax(dim=1) != diagonal
    return torch.where(wrong[:, None], student.detach(), teacher), wrong


def row_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    screening: bool = True,
    forgotten_only: bool = False,
) -> torch.Tensor:
    """Per row: KL(softmax(teacher row) || softmax(student row)) of two similarity matrices.

    `forgotten_only` (beyond the paper) also screens the rows whose match the student
    already gives at least the teacher's probability: the KL then only restores what the
    student has forgotten, and never holds back a row the student has learnt better."""
    student = student.float() / temperature
    teacher = teacher.detach().float() / temperature
    if screening:
        teacher, _ = screen(teacher, student)
    log_p = F.log_softmax(teacher, dim=1)
    log_q = F.log_softmax(student, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if forgotten_only:
        kl = torch.where(log_q.detach().diagonal() < log_p.diagonal(), kl, torch.zeros_like(kl))
    return kl


def reduce_rows(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.mean() if len(per_row) else per_row.sum()
    raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")


def cognition_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    reduction: str = "sum",
    screening: bool = True,
    rows: torch.Tensor | None = None,
    forgotten_only: bool = False,
) -> torch.Tensor:
    """KL(softmax(teacher row) || softmax(student row)) over rows of similarity matrices
    (only the rows where the boolean mask `rows` is true, when given)."""
    per_row = row_kl(student, teacher, temperature, screening, forgotten_only)
    if rows is not None:
        per_row = per_row[rows]
        if not len(per_row):
            return student.new_zeros((), dtype=torch.float32)
    return reduce_rows(per_row, reduction)


def modx_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    reduction: str = "sum",
    screening: bool = True,
    rows: torch.Tensor | None = None,
    forgotten_only: bool = False,
) -> torch.Tensor:
    """Cognition-align loss, both directions averaged. `screening=False` is LwF-style.

    `rows` (a boolean mask over the batch) restricts the KL to those samples' rows, e.g.
    the replayed pairs; every pair of the batch is still a column of each row.
    """
    student = image @ text.T
    teacher = teacher_image @ teacher_text.T
    i2t = cognition_kl(student, teacher, temperature, reduction, screening, rows, forgotten_only)
    t2i = cognition_kl(student.T, teacher.T, temperature, reduction, screening, rows, forgotten_only)
    return (i2t + t2i) / 2


def grouped_modx_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    groups: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "sum",
    scales: torch.Tensor | None = None,
    forgotten_only: bool = False,
) -> torch.Tensor:
    """Mod-X's screened KL inside each group of rows, both directions averaged.

    `groups[i]` names the snapshot whose embeddings `teacher_*[i]` are: the parent for new
    rows, the pair's expert (the snapshot that trained it) for replayed rows. Embeddings of
    different snapshots do not share a space, so each group's teacher and student matrices
    are built over that group's rows and columns only: rows of different groups never share
    a softmax. Each group's matrix is screened by its own argmax. The rows' KLs are then
    summed (or averaged) over every group, as Mod-X does over one batch.

    `scales` (per row, the same within a group): each group's teacher logit scale; its
    softmaxes then use temperature 1 / scale (the retrieval distribution that snapshot
    served) instead of `temperature`.
    """
    per_row = []
    for g in torch.unique(groups):
        rows = groups == g
        t = temperature if scales is None else 1.0 / scales[rows][0]  # a tensor: no device sync
        student = image[rows] @ text[rows].T
        teacher = teacher_image[rows] @ teacher_text[rows].T
        i2t, t2i = (
            row_kl(student, teacher, t, True, forgotten_only),
            row_kl(student.T, teacher.T, t, True, forgotten_only),
        )
        per_row.append((i2t + t2i) / 2)
    if not per_row:
        return image.new_zeros(())
    return reduce_rows(torch.cat(per_row), reduction)


def feature_loss(image, text, stored_image, stored_text) -> torch.Tensor:
    """Mean over rows of (1 - cos) between student and stored embeddings, both towers summed."""
    cos_i = (image * stored_image.detach()).sum(dim=1)
    cos_t = (text * stored_text.detach()).sum(dim=1)
    return ((1 - cos_i) + (1 - cos_t)).mean() if len(cos_i) else image.new_zeros(())


def ewc_penalty(
    model: torch.nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]
) -> torch.Tensor:
    """1/2 * sum_i F_i (theta_i - theta*_i)^2 over the parameters that have a Fisher."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, param in model.named_parameters():
        if name in fisher:
            total = total + (fisher[name] * (param - anchor[name]) ** 2).sum()
    return total / 2
