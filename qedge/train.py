"""The whole pipeline behind ``qedge train`` (:func:`train_model`): index and split the data,
build the datasets and the model from the recipe, train with :func:`qedge.fit.fit`, write the
model and the resume file (:mod:`qedge.resume`) after every epoch, profile and save the result.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from qedge.errors import QedgeError
from qedge.evaluate import evaluate_metric
from qedge.fit import FitState, TrainConfig, _metric_name, _seed_everything, fit
from qedge.recipes import recipe_for, wave_augmentations
from qedge.resume import load_resume, save_resume

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["train_model", "HEADS"]

#: Output heads of :func:`train_model`: softmax (one class per clip; the open set's background
#: class) or sigmoid (one-vs-rest; the open set's "nothing" is all scores low).
HEADS: tuple[str, ...] = ("softmax", "sigmoid")


# ----------------------------------------------------------------------------------------------
# The pipeline behind `qedge train`
# ----------------------------------------------------------------------------------------------
def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def train_model(
    data: str | Path,
    *,
    format: str | None = None,
    arch: str | None = None,
    width: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    clip_seconds: float | None = None,
    train_seconds: float | None = None,
    features: dict[str, Any] | None = None,
    mixup: float | None = None,
    specaugment: bool | None = None,
    mean_norm: bool | None = None,
    trim: float | None = None,
    endpoint: float | None = None,
    gain_db: tuple[float, float] | None = None,
    noise_snr_db: tuple[float, float] | None = None,
    open_set: bool | None = None,
    background: Sequence[str | Path] = (),
    head: str | None = None,
    out: str | Path = "model.qedge",
    seed: int = 0,
    device: str = "auto",
    amp: str = "auto",
    workers: int = 0,
    clip_sv: float | None = None,
    clip_every: int = 50,
    test_fold: str | None = None,
    test_speaker: str | None = None,
    val_fraction: float | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple["nn.Module", dict[str, Any]]:
    """Index ``data``, split it, train, save the best model to ``out`` and return ``(model, meta)``.

    Unset options come from :data:`qedge.recipes.RECIPES` (per bundled dataset, else by format). Features:
    :class:`~qedge.runtime.features.FeatureConfig` with the recipe's overrides, then ``features``.
    Training items are random crops of ``train_seconds`` (default ``clip_seconds``), evaluation
    items the centred ``clip_seconds`` crop (``None``: the longest clip). After every epoch rank 0
    writes ``out`` (best weights so far + history) and ``<out>.resume`` atomically; ``resume=True``
    continues from the latter (same result as an uninterrupted run). The resume file is removed
    once training completes. ``meta['history'][-1]`` records settings, per-epoch figures, final
    accuracy/mAP, params and MACs (:func:`qedge.profile.profile` on one ``clip_seconds`` window).

    Epoch selection: ``val_fraction`` (recipe default 0.2) of the training half's recordings
    (:meth:`qedge.data.index.ClipIndex.validation_split`) are held back; the epoch with the best
    validation accuracy/mAP is kept, and the held-out test clips are scored once, on the kept
    weights (``accuracy``/``map`` in the record; ``val_*`` the validation figures). With
    ``val_fraction=0`` all training clips are fitted and the last epoch is kept. The test split
    never chooses anything.

    Open set (``open_set``, recipe default; implied by ``background`` folders): a single-label
    model gets one more output, :data:`~qedge.data.background.BACKGROUND_LABEL`, trained on
    event-free audio (:mod:`qedge.data.background`), so it can say that none of its classes sounds.

    Output head (``head``, recipe default): ``softmax`` (single-label data; with the open set, the
    explicit background class) or ``sigmoid`` (one-vs-rest scores trained with BCE, as PANNs and
    DCASE systems do: a single-label dataset's clips become one-hot targets, the open set's
    event-free items all-zero ones, and "nothing" is every score under its threshold). Multi-label
    data always takes ``sigmoid``.
    """
    import torch

    from qedge import checkpoint
    from qedge.data import ClipDataset, find_dataset
    from qedge.data.background import (BACKGROUND_LABEL, MixBackground, open_set_labels, open_set_settings,
                                       training_bank, with_negatives)
    from qedge.distributed import context
    from qedge.models import build, check_arch
    from qedge.profile import profile
    from qedge.runtime.features import FeatureConfig

    say = log or (lambda _msg: None)
    started = time.perf_counter()
    out = Path(out)
    index = find_dataset(data, format)
    recipe_name, recipe = recipe_for(data, format, index.format)
    head = str(_pick(head, recipe.get("head", "sigmoid" if index.multilabel else "softmax")))
    if head not in HEADS:
        raise QedgeError(f"unknown output head '{head}' (choose from {', '.join(HEADS)})")
    if head == "softmax" and index.multilabel:
        raise QedgeError("a multi-label dataset needs --head sigmoid (clips carry several labels)")
    if head == "sigmoid" and not index.multilabel:
        index = dataclasses.replace(index, multilabel=True)  # one-hot targets, BCE, sigmoid scores
    train_idx, test_idx = index.split(test_fold=test_fold, test_speaker=test_speaker)
    val_fraction = float(_pick(val_fraction, recipe.get("val_fraction", 0.2)))
    train_idx, val_idx = train_idx.validation_split(val_fraction)
    feat_cfg = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **recipe.get("features", {}), **(features or {})})
    clip_seconds = _pick(clip_seconds, recipe.get("clip_seconds"))
    train_seconds = _pick(train_seconds, _pick(recipe.get("train_seconds"), clip_seconds))
    config = TrainConfig(
        epochs=int(_pick(epochs, recipe["epochs"])), batch_size=int(_pick(batch_size, recipe["batch_size"])),
        lr=float(_pick(lr, recipe["lr"])), mixup=float(_pick(mixup, recipe.get("mixup", 0.0))),
        specaugment=bool(_pick(specaugment, recipe.get("specaugment", True))),
        weight_decay=float(recipe.get("weight_decay", 1e-2)), warmup_epochs=float(recipe.get("warmup_epochs", 1.0)),
        label_smoothing=float(recipe.get("label_smoothing", 0.0)),
        device=device, amp=amp, workers=int(workers), seed=int(seed), clip_sv=clip_sv, clip_every=int(clip_every),
    )
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise QedgeError("--epochs and --batch-size must be ≥ 1 and --lr > 0")
    ctx = context(device)
    if clip_seconds is None:
        from qedge.data import longest_clip_seconds

        clip_seconds = longest_clip_seconds(index.clips)
    clip_seconds = float(clip_seconds)
    wave_settings = {"trim": _pick(trim, recipe.get("trim")), "endpoint": _pick(endpoint, recipe.get("endpoint")),
                     "gain_db": _pick(gain_db, recipe.get("gain_db")),
                     "noise_snr_db": _pick(noise_snr_db, recipe.get("noise_snr_db"))}
    wave_aug = wave_augmentations(wave_settings, sample_rate=feat_cfg.sample_rate)
    arch = str(_pick(arch, recipe["arch"]))
    check_arch(arch)  # before the open set's background bank is read
    open_set = bool(background) or bool(_pick(open_set, recipe.get("open_set", False)))
    labels = open_set_labels(index.labels, index.task) if open_set else list(index.labels)
    bank, open_cfg = None, open_set_settings(recipe)
    if open_set:
        bank = training_bank(feat_cfg.sample_rate, index.format, background, cache_dir)
        wave_aug = [*wave_aug, MixBackground(bank, tuple(open_cfg["mix_snr_db"]), open_cfg["mix_p"])]
    eval_set = ClipDataset(test_idx, feat_cfg, clip_seconds=clip_seconds, train=False, cache_dir=cache_dir,
                           labels=labels)
    val_set = ClipDataset(val_idx, feat_cfg, clip_seconds=clip_seconds, train=False, cache_dir=cache_dir,
                          labels=labels) if len(val_idx) else None
    train_set: Any = ClipDataset(train_idx, feat_cfg, clip_seconds=_pick(train_seconds, clip_seconds), train=True,
                                 cache_dir=cache_dir, augment=wave_aug or None, labels=labels, event_crops=open_set)
    train_crop = float(train_set.clip_seconds)
    open_settings: dict[str, Any] = {"open_set": open_set}
    if bank is not None:
        clips = len(train_set)
        train_set = with_negatives(train_set, bank, feat_cfg, labels, open_cfg["negatives"])
        size = len(train_set) - clips
        open_settings.update({"background_items": size, **open_cfg, "bank": bank.describe(),
                              "background_dirs": [str(p) for p in background]})
        say(f"open set: {size} background items per epoch ({', '.join(bank.kinds)}); events mixed into "
            f"beds at {open_cfg['mix_snr_db'][0]:g}–{open_cfg['mix_snr_db'][1]:g} dB SNR")
    width = float(_pick(width, recipe["width"]))
    _seed_everything(config.seed)
    mean_norm = bool(_pick(mean_norm, recipe.get("mean_norm", False)))
    model = build(arch, num_classes=len(labels), width=width, n_mels=feat_cfg.n_mels, mean_norm=mean_norm)
    meta: dict[str, Any] = {
        "arch": model.arch, "arch_kwargs": model.arch_kwargs, "labels": labels,
        "features": feat_cfg.to_dict(), "clip_seconds": float(clip_seconds), "task": index.task,
        "history": [],
    }
    if open_set:
        meta["background_label"] = BACKGROUND_LABEL
    settings = {
        "data": str(data), "format": index.format, "recipe": recipe_name, "train_clips": len(train_idx),
        "test_clips": len(test_idx), "test_fold": test_fold, "test_speaker": test_speaker,
        "val_fraction": val_fraction, "val_clips": len(val_idx),
        "selected_on": "validation" if val_set is not None else "last epoch",
        "train_seconds": train_crop, "head": head, "arch": arch, "width": width, "mean_norm": mean_norm,
        "wave_augment": [type(t).__name__ for t in wave_aug], **wave_settings, **open_settings,
        "train_config": config.to_dict(), "world_size": ctx.world_size, "device": ctx.device,
    }
    rpath = checkpoint.resume_path(out)
    resume_state = None
    if resume:
        if rpath.exists():
            resume_state = load_resume(rpath)
            saved = resume_state.get("extra", {}).get("settings", {})
            for key in ("arch", "width", "mean_norm", "format", "train_clips", "test_clips", "val_clips",
                        "open_set", "head"):
                if key in saved and saved[key] != settings[key]:
                    raise QedgeError(f"{rpath}: saved run has {key}={saved[key]!r}, this one {settings[key]!r}: "
                                     "resume with the same options or start afresh without --resume")
            if int(saved.get("train_config", {}).get("epochs", config.epochs)) != config.epochs:
                raise QedgeError(f"{rpath}: saved run was for {saved['train_config']['epochs']} epochs, "
                                 f"this one for {config.epochs}: the schedule would differ")
            say(f"resuming from {rpath} after epoch {resume_state['epoch']}")
        else:
            say(f"no resume state at {rpath}: starting from scratch")

    def entry(history: list[dict[str, Any]], best_epoch: int | None, final: bool) -> dict[str, Any]:
        rec: dict[str, Any] = {"step": "train", **settings, "epochs_run": len(history), "best_epoch": best_epoch,
                               "completed": final, "epochs": history}
        if best_epoch is not None and history:  # per-epoch figures are on the validation clips
            best = history[best_epoch - 1]
            for key in ("accuracy", "map", "eval_loss"):
                if key in best:
                    rec["val_" + key] = best[key]
                if key in history[-1]:
                    rec["last_val_" + key] = history[-1][key]
        return rec

    def on_epoch_end(state: FitState) -> None:
        if not state.is_main:
            return
        checkpoint.save_state(out, state.best_state or state.model.state_dict(),
                              {**meta, "history": [entry(state.history, state.best_epoch, False)]})
        save_resume(rpath, state, extra={"settings": settings})

    history = fit(model, train_set, val_set, config, task=index.task, on_epoch_end=on_epoch_end,
                  resume_state=resume_state, progress=progress)
    model.to("cpu").eval()
    prof = profile(model, (1, *eval_set.feature_shape))
    metric = _metric_name(index.task)
    scores = [r.get(metric) for r in history]
    best_epoch = (scores.index(max(scores)) + 1) if history and None not in scores else len(history)
    record = entry(history, best_epoch, True)
    record[metric] = evaluate_metric(model, eval_set, index.task, batch_size=config.eval_batch_size)
    say(f"held-out {metric} {record[metric]:.4f} on {len(eval_set)} test clips (epoch {best_epoch}, chosen on "
        + (f"{len(val_idx)} validation clips)" if val_set is not None else "nothing: the last epoch)"))
    record.update({"params": int(prof.params), "macs": int(prof.macs),
                   "window_frames": int(eval_set.feature_shape[1]),
                   "seconds": round(time.perf_counter() - started, 1)})
    meta["history"] = [record]
    if open_set and ctx.is_main:
        from qedge.stream.tune import choose_listen_settings

        meta["listen"], record["listen_tuning"] = choose_listen_settings(model, meta, str(data), log=say)
        say(f"listen defaults: smoothing {meta['listen']['smooth']}, thresholds "
            + ", ".join(f"{k} {v:g}" for k, v in meta["listen"]["thresholds"].items()))
    if ctx.is_main:
        checkpoint.save(out, model, meta)
        rpath.unlink(missing_ok=True)
    ctx.barrier()
    return model, meta
