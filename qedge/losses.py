"""Training losses: the task loss and the knowledge-distillation term (design.md §6).

task_loss: cross-entropy (single-label; class indices or soft targets, optional label smoothing)
or BCE-with-logits (multi-label, multi-hot targets).
kd_loss: T²·KL(softmax(t/T) ‖ softmax(s/T)) for single-label, and the sigmoid form (the mean over
classes of the Bernoulli KL between σ(t/T) and σ(s/T)) for multi-label, as the authors apply it to
AudioSet; the teacher's logits are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qedge.errors import QedgeError

__all__ = ["task_loss", "kd_loss"]


def task_loss(logits: "torch.Tensor", target: "torch.Tensor", task: str, smoothing: float) -> "torch.Tensor":
    """Cross-entropy (indices or soft targets) or BCE-with-logits (multi-hot targets)."""
    logits = logits.float()
    if task == "multi-label":
        return F.binary_cross_entropy_with_logits(logits, target.float())
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 2.0,
            task: str = "single-label") -> torch.Tensor:
    """Distillation loss T²·KL(teacher ‖ student) at temperature ``T`` (see the module docstring).

    Gradients flow into ``student_logits`` only (the teacher's logits are detached).
    """
    if T <= 0:
        raise QedgeError(f"distillation temperature must be positive, got {T}")
    if student_logits.shape != teacher_logits.shape:
        raise QedgeError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} "
                         f"vs {tuple(teacher_logits.shape)}")
    s = student_logits / T
    t = teacher_logits.detach() / T
    if task == "single-label":
        kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean",
                      log_target=True)
    elif task == "multi-label":
        log_p, log_1p = F.logsigmoid(t), F.logsigmoid(-t)
        log_q, log_1q = F.logsigmoid(s), F.logsigmoid(-s)
        kl = (log_p.exp() * (log_p - log_q) + log_1p.exp() * (log_1p - log_1q)).mean()
    else:
        raise QedgeError(f"task must be 'single-label' or 'multi-label', got {task!r}")
    return kl * (T * T)
