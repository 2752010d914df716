"""Evaluation: metrics (numpy) and :func:`evaluate`, behind ``qedge evaluate`` and used by training.

Single-label: top-1 accuracy, the confusion matrix M[t, p] (rows truth, columns prediction) and
per-class precision/recall. Multi-label: mean average precision (mAP, the PANNs/AudioSet metric)
and per-class AP. Labels of the evaluation data are matched BY NAME to the model's vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from qedge.meta import ModelRecord

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall",
    "average_precision",
    "mean_average_precision",
    "evaluate_metric",
    "evaluate",
    "summarize",
    "plot_confusion",
]

def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy: mean of [argmax_c scores[n, c] == targets[n]] (targets are class indices)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if len(targets) == 0:
        return float("nan")
    return float(np.mean(scores.argmax(axis=1) == targets))


def confusion_matrix(predicted: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """M[t, p] = number of items of true class t predicted as p (rows: truth, columns: prediction)."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(targets, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return m


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision M[c,c]/Σ_t M[t,c] and recall M[c,c]/Σ_p M[c,p] (NaN where undefined)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / confusion.sum(axis=0)
        recall = tp / confusion.sum(axis=1)
    return precision, recall


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class: AP = Σ_k P(k)·[item k is positive] / #positives, items
    ranked by decreasing score (the non-interpolated AP of scikit-learn / PANNs). NaN when the
    class has no positive item."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets) > 0.5
    positives = int(targets.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, hits = scores[order], targets[order]
    tp = np.cumsum(hits)
    # ties: precision is evaluated at the last item of each group of equal scores
    last_of_group = np.r_[scores[1:] != scores[:-1], True]
    idx = np.nonzero(last_of_group)[0]
    tp_at, n_at = tp[idx], idx + 1
    recall_gain = np.diff(np.r_[0, tp_at]) / positives
    return float(np.sum(recall_gain * tp_at / n_at))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """mAP = mean over classes with ≥ 1 positive of :func:`average_precision`; returns (mAP, per-class AP)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    ap = np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    valid = ~np.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap


# ----------------------------------------------------------------------------------------------
# Evaluation of a model on a dataset
# ----------------------------------------------------------------------------------------------
def evaluate_metric(model: Any, dataset: Any, task: str, device: str = "cpu", batch_size: int = 64) -> float:
    """Accuracy (single-label) or mAP over sigmoid scores (multi-label) of a torch ``model`` on a
    :class:`~qedge.data.ClipDataset`: the one figure training, fine-tuning and reports quote."""
    from qedge.inference import predict

    logits, targets = predict(model, dataset, batch_size=batch_size, device=device)
    if task == "multi-label":
        return float(mean_average_precision(1.0 / (1.0 + np.exp(-logits)), targets)[0])
    return float(accuracy(logits, targets))


def _eval_dataset(meta: "Mapping[str, Any] | ModelRecord", index_or_dataset: Any, split: str, cache_dir: Any) -> Any:
    """A :class:`~qedge.data.ClipDataset` over the model's labels, features and window
    (``meta``: the model file's meta or its :class:`~qedge.meta.ModelRecord`)."""
    from qedge.data import ClipDataset, ClipIndex
    from qedge.meta import ModelRecord

    record = meta if isinstance(meta, ModelRecord) else ModelRecord.from_meta(meta)
    labels = record.labels
    if not isinstance(index_or_dataset, ClipIndex):
        ds = index_or_dataset
        if list(getattr(ds, "labels", labels)) != list(labels):
            raise QedgeError("the dataset's label list differs from the model's: build it with labels=meta['labels']")
        return ds
    index = record.as_trained(index_or_dataset)
    if split == "test":
        index = record.test_split(index)[1]
    elif split != "all":
        raise QedgeError(f"--split must be 'test' or 'all', got {split!r}")
    known = set(labels)
    unknown = sorted({lab for c in index.clips for lab in c.labels} - known)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise QedgeError(f"labels not in the model's vocabulary: {shown} (the model knows "
                         f"{len(labels)} labels: {', '.join(labels[:6])}{' …' if len(labels) > 6 else ''})")
    task = "multi-label" if index.multilabel else "single-label"
    if task == "multi-label" and record.task == "single-label":
        raise QedgeError("this dataset is multi-label but the model is single-label")
    return ClipDataset(index, record.features, clip_seconds=record.clip_seconds, train=False,
                       cache_dir=cache_dir, labels=labels)


def evaluate(
    model: "nn.Module",
    meta: dict[str, Any],
    index_or_dataset: Any,
    *,
    split: str = "test",
    batch_size: int = 32,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score ``model`` on a :class:`~qedge.data.ClipIndex` (the held-out split the model was trained
    with, :meth:`qedge.meta.ModelRecord.test_split`, or ``split="all"``)
    or on a ready dataset; labels are matched by name to ``meta['labels']``.

    Returns ``{"task", "n", "labels", "accuracy" | "map", "per_class": [...], "confusion"}``:
    single-label → accuracy, per-class precision/recall/support, confusion matrix M[t, p];
    multi-label → mAP and per-class AP/support (no confusion matrix).
    """
    from qedge.distributed import resolve_device
    from qedge.inference import predict
    from qedge.meta import ModelRecord

    record = ModelRecord.from_meta(meta)
    dataset = _eval_dataset(record, index_or_dataset, split, cache_dir)
    dev = resolve_device(device)
    model.to(dev).eval()
    logits, targets = predict(model, dataset, batch_size=batch_size, device=dev)
    labels = list(record.labels)
    result: dict[str, Any] = {"task": record.task, "n": int(len(targets)), "labels": labels}
    if targets.ndim == 2:  # multi-hot
        scores = 1.0 / (1.0 + np.exp(-logits))
        m, ap = mean_average_precision(scores, targets)
        support = targets.sum(axis=0).astype(int)
        result["map"] = m
        result["per_class"] = [{"label": lab, "ap": None if np.isnan(a) else float(a), "support": int(s)}
                               for lab, a, s in zip(labels, ap, support)]
        return result
    targets = targets.astype(np.int64)
    predicted = logits.argmax(axis=1)
    conf = confusion_matrix(predicted, targets, len(labels))
    precision, recall = precision_recall(conf)
    result["accuracy"] = accuracy(logits, targets)
    result["per_class"] = [
        {"label": lab, "precision": None if np.isnan(p) else float(p), "recall": None if np.isnan(r) else float(r),
         "support": int(s)}
        for lab, p, r, s in zip(labels, precision, recall, conf.sum(axis=1))
    ]
    result["confusion"] = conf.tolist()
    return result


def summarize(result: dict[str, Any]) -> str:
    """A short human-readable report (headline + per-class lines)."""
    lines = []
    if "accuracy" in result:
        lines.append(f"accuracy {result['accuracy']:.4f} on {result['n']} clips")
        for row in result["per_class"]:
            p = "  n/a " if row["precision"] is None else f"{row['precision']:.3f}"
            r = "  n/a " if row["recall"] is None else f"{row['recall']:.3f}"
            lines.append(f"  {row['label'][:24]:<24} precision {p}  recall {r}  n={row['support']}")
    else:
        lines.append(f"mAP {result['map']:.4f} on {result['n']} clips")
        for row in result["per_class"]:
            ap = "  n/a " if row["ap"] is None else f"{row['ap']:.3f}"
            lines.append(f"  {row['label'][:24]:<24} AP {ap}  positives={row['support']}")
    return "\n".join(lines)


def plot_confusion(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Save the confusion matrix (single-label) or the per-class AP bars (multi-label) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    labels = result["labels"]
    n = len(labels)
    if "confusion" in result:
        conf = np.asarray(result["confusion"], dtype=np.float64)
        rows = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
        size = max(4.0, 0.45 * n + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        if n <= 40:
            ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
            ax.set_yticks(range(n), labels, fontsize=8)
            for t in range(n):
                for p in range(n):
                    if conf[t, p]:
                        ax.text(p, t, int(conf[t, p]), ha="center", va="center", fontsize=7,
                                color="white" if rows[t, p] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
        ax.set_title(title or f"accuracy {result['accuracy']:.3f} (n={result['n']})")
    else:
        ap = [row["ap"] if row["ap"] is not None else np.nan for row in result["per_class"]]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * n), 4))
        ax.bar(range(n), ap)
        if n <= 60:
            ax.set_xticks(range(n), labels, rotation=75, ha="right", fontsize=7)
        ax.set_ylabel("average precision")
        ax.set_title(title or f"mAP {result['map']:.3f} (n={result['n']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
