"""Knowledge distillation (design.md §6): the KD loss and the paper's KD-only baseline.

Loss added to the task loss by :func:`qedge.fit.fit` when a teacher is given:

- single-label: L_KD = T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch
  ("batchmean"); the T² keeps its gradient scale independent of T (Hinton et al., 2015);
- multi-label (the authors' form for AudioSet): the binary KL per class between the teacher's and
  the student's tempered sigmoids, p = σ(t/T), q = σ(s/T),
  KL_bin(p ‖ q) = p·log(p/q) + (1−p)·log((1−p)/(1−q)), averaged over batch and classes, times T².

KD-only baseline (the paper's comparison): a SMALL student of the teacher's family, its width
chosen so that its MACs ≈ a target (the pruned model's), trained from scratch with
task loss + KD from the unpruned teacher (:func:`student_width_for_macs`, :func:`train_kd_student`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from qedge.errors import QedgeError
from qedge.losses import kd_loss

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["kd_loss", "student_width_for_macs", "train_kd_student"]  # kd_loss lives in qedge.losses


def student_width_for_macs(arch: str, target_macs: int, input_shape: tuple[int, ...],
                           num_classes: int, n_mels: int | None = None, tolerance: float = 0.02) -> float:
    """Width multiplier of ``arch`` whose MACs at ``input_shape`` are closest to ``target_macs``
    without exceeding it by more than ``tolerance`` (:func:`qedge.profile.width_for_budget`)."""
    from qedge.profile import width_for_budget

    return width_for_budget(arch, target_macs, input_shape, num_classes, measure="macs", n_mels=n_mels,
                            tolerance=tolerance)


def train_kd_student(teacher: "nn.Module", train_set: Any, eval_set: Any, config: Any, *, task: str,
                     target_macs: int, input_shape: tuple[int, ...], temperature: float = 2.0,
                     progress: bool = True) -> tuple["nn.Module", list[dict[str, Any]], float]:
    """The KD-only baseline: build ``teacher.arch`` at the width whose MACs ≈ ``target_macs`` and
    train it from scratch with task loss + :func:`kd_loss` from ``teacher`` (``qedge.fit.fit``).

    Returns ``(student, history, width)``.
    """
    from qedge.models import build
    from qedge.fit import fit

    arch = getattr(teacher, "arch", None)
    kwargs = dict(getattr(teacher, "arch_kwargs", None) or {})
    if not arch or "num_classes" not in kwargs:
        raise QedgeError("the KD baseline needs a teacher built by qedge.models.build (.arch/.arch_kwargs)")
    num_classes = int(kwargs.pop("num_classes"))
    kwargs.pop("width", None)
    width = student_width_for_macs(arch, target_macs, input_shape, num_classes, kwargs.get("n_mels"))
    student = build(arch, num_classes, width=width, **kwargs)
    history = fit(student, train_set, eval_set, config, task=task, teacher=teacher,
                  kd_temperature=temperature, progress=progress)
    return student, history, width
