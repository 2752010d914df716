"""Datasets: paths, indexes and splits of every format, ClipDataset crops and cache, augmentations.

One file for the data stage's behaviour (over the ~400-line guideline on purpose): its sections follow
a clip from its dataset layout (``qedge.data.formats``) through the index and split
(``qedge.data.index``) to the cached dataset and its augmentations, each building on the one before.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from qedge.data import ClipIndex, find_dataset, load_clip_audio, resolve_data_path
from qedge.errors import QedgeError
from qedge.runtime.audio import load_audio
from qedge.runtime.features import FeatureConfig, LogMelDeltas

torch = pytest.importorskip("torch")

SMALL = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=32, fmin=20.0, fmax=4000.0)


def _tone(path, seconds=0.5, sr=8000, f0=440.0):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * f0 * t), sr)
    return path


# -- paths ------------------------------------------------------------------------------------------
def test_resolve_data_path(esc10_root, fsdd_root, tmp_path, monkeypatch):
    monkeypatch.delenv("QEDGE_DATA", raising=False)
    assert resolve_data_path("esc10").resolve() == esc10_root.resolve()
    assert resolve_data_path("fsdd").resolve() == fsdd_root.resolve()
    assert resolve_data_path(str(tmp_path)) == tmp_path
    (tmp_path / "esc10").mkdir()
    monkeypatch.setenv("QEDGE_DATA", str(tmp_path))
    assert resolve_data_path("esc10") == tmp_path / "esc10"
    with pytest.raises(QedgeError, match="fsdd"):
        resolve_data_path("fsdd")
    with pytest.raises(QedgeError, match="not found"):
        resolve_data_path(str(tmp_path / "nowhere"))


# -- shared datasets -----------------------------------------------------------------------------------
def test_esc10_index_and_fold_split():
    index = find_dataset("esc10")
    assert index.format == "esc" and not index.multilabel and len(index) == 320
    assert len(index.labels) == 10 and "Dog bark" in index.labels and "Fire crackling" in index.labels
    assert index.folds == [1, 2, 3, 4] and set(index.counts().values()) == {32}
    train, test = index.split()
    assert (len(train), len(test)) == (240, 80)
    assert {c.fold for c in test} == {4} and {c.fold for c in train} == {1, 2, 3}
    assert train.labels == test.labels == index.labels
    tr1, te1 = index.split(test_fold=1)
    assert len(te1) == 80 and {c.fold for c in te1} == {1}
    with pytest.raises(QedgeError):
        index.split(test_fold=5)


def test_fsdd_speakers_and_splits():
    index = find_dataset("fsdd")
    assert index.format == "fsdd" and len(index) == 2500
    assert index.labels == [str(d) for d in range(10)]
    assert index.speakers == ["george", "jackson", "lucas", "theo", "yweweler"]
    train, test = index.split()  # default: hold out the last speaker
    assert {c.speaker for c in test} == {"yweweler"} and len(test) == 500 and len(train) == 2000
    _, theo = index.split(test_speaker="theo")
    assert len(theo) == 500 and all(c.path.name.split("_")[1] == "theo" for c in theo)
    tr, te = index.split(test_fold="test")  # the dataset's own rule: index 0–4 is test
    assert len(te) == 250 and all(int(c.path.stem.split("_")[2]) <= 4 for c in te)
    with pytest.raises(QedgeError, match="speaker"):
        index.split(test_speaker="nobody")


# -- small layouts built here ----------------------------------------------------------------------------
def test_gtzan_and_folder_layouts(tmp_path):
    for genre, kind in (("blues", "siren"), ("jazz", "horn"), ("rock", "engine")):
        (tmp_path / "gtzan" / "genres" / genre).mkdir(parents=True)
        (tmp_path / "plain" / kind).mkdir(parents=True)
        for i in range(5):
            _tone(tmp_path / "gtzan" / "genres" / genre / f"{genre}.{i:05d}.wav", 0.2)
            _tone(tmp_path / "plain" / kind / f"{i}.wav", 0.2)
    gtzan = find_dataset(str(tmp_path / "gtzan"))
    assert gtzan.format == "gtzan" and gtzan.labels == ["blues", "jazz", "rock"] and len(gtzan) == 15
    train, test = gtzan.split()
    assert len(test) == 3 and sorted(c.labels[0] for c in test) == ["blues", "jazz", "rock"]
    assert [c.path for c in gtzan.split()[1]] == [c.path for c in test]  # deterministic
    plain = find_dataset(str(tmp_path / "plain"))
    assert plain.format == "folder" and len(plain) == 15 and plain.labels == ["engine", "horn", "siren"]
    assert find_dataset(str(tmp_path / "plain"), format="folder").labels == plain.labels


def test_csv_multilabel_layout_and_dataset(tmp_path):
    rows = []
    for i in range(6):
        _tone(tmp_path / f"c{i}.wav", 0.3, f0=300 + 50 * i)
        labels = "dog;bark" if i % 2 else "cat|meow" if i % 3 == 0 else "dog"
        rows.append([f"c{i}.wav", labels, str(1 + i % 2)])
    with open(tmp_path / "list.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "fold"], *rows])
    index = find_dataset(str(tmp_path / "list.csv"))
    assert index.format == "csv" and index.multilabel and index.labels == ["bark", "cat", "dog", "meow"]
    train, test = index.split()  # highest integer fold is test
    assert {c.fold for c in test} == {2} and len(train) == 3
    ds = torch_dataset(index, SMALL, 0.3, cache_dir=False)
    x, y = ds[1]
    assert y.dtype == torch.float32 and y.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert tuple(x.shape) == ds.feature_shape == (4, SMALL.num_frames(2400), 32)
    (tmp_path / "bad.csv").write_text("missing.wav,dog\n")
    with pytest.raises(QedgeError, match="missing.wav"):
        find_dataset(str(tmp_path / "bad.csv"))


def test_audioset_segments_and_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "audioset"
    root.mkdir()
    with open(root / "class_labels_indices.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["index", "mid", "display_name"], [0, "/m/09x0r", "Speech"],
                                  [1, "/m/0jbk", "Animal"], [2, "/m/04rlf", "Music"]])
    (root / "eval_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/04rlf"\n'
        '--ZhevVpy1s, 50.000, 60.000, "/m/0jbk"\n'
        '--aaILOrkII, 200.000, 210.000, "/m/04rlf"\n'
    )
    (root / "audio").mkdir()
    _tone(root / "audio" / "Y--PJHxphWEs.wav", 0.4)
    _tone(root / "audio" / "--ZhevVpy1s_50.wav", 0.4)  # the third clip was never downloaded
    seg = find_dataset(str(root / "eval_segments.csv"))
    assert seg.format == "audioset" and seg.multilabel and seg.missing == 1 and len(seg) == 2
    by_id = {c.name: c.labels for c in seg}
    assert by_id == {"--PJHxphWEs": ("Music", "Speech"), "--ZhevVpy1s": ("Animal",)}

    rng = np.random.default_rng(0)
    wave = (rng.standard_normal((4, 32000)) * 3000).astype(np.int16)
    target = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=bool)
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("balanced_train", "eval"):
        with h5py.File(packed / f"{name}.h5", "w") as h5:
            h5["audio_name"] = np.array([f"Y{name}{i}.wav".encode() for i in range(4)])
            h5["waveform"] = wave
            h5["target"] = target
    index = find_dataset(str(packed))
    assert index.format == "audioset" and len(index) == 8 and index.labels == ["class_000", "class_001", "class_002"]
    train, test = index.split()
    assert {c.fold for c in test} == {"eval"} and len(train) == 4
    clip = test.clips[3]
    assert clip.labels == ("class_000", "class_001", "class_002") and clip.member == 3
    np.testing.assert_allclose(load_clip_audio(clip, 32000), wave[3] / 32767.0, atol=1e-7)
    assert load_clip_audio(clip, 16000).shape == (16000,)
    ds = torch_dataset(test, FeatureConfig(), 1.0, cache_dir=tmp_path / "cache")
    x, y = ds[0]
    assert tuple(x.shape) == (4, 101, 64) and y.tolist() == [1.0, 0.0, 1.0]


def test_bad_datasets(tmp_path):
    with pytest.raises(QedgeError):
        find_dataset(str(tmp_path))  # empty folder
    (tmp_path / "empty_label").mkdir()
    with pytest.raises(QedgeError):
        find_dataset(str(tmp_path), format="folder")
    with pytest.raises(QedgeError, match="unknown dataset format"):
        find_dataset(str(tmp_path), format="mp4")
    with pytest.raises(QedgeError):
        find_dataset("no_such_dataset_name")
    one = ClipIndex([find_dataset("esc10").clips[0]])
    with pytest.raises(QedgeError, match="no test|no training"):
        one.split()


# -- ClipDataset -----------------------------------------------------------------------------------------
def torch_dataset(*args, **kwargs):
    from qedge.data import ClipDataset

    return ClipDataset(*args, **kwargs)


def test_clipdataset_eval_is_centred_and_cached(tmp_path, monkeypatch):
    import qedge.data.cache as cache_mod

    _, test = find_dataset("esc10").split()
    sub = test.subset(test.clips[:3])
    cfg = FeatureConfig()
    ds = torch_dataset(sub, cfg, clip_seconds=3.0, train=False, cache_dir=tmp_path)
    x, y = ds[1]
    assert x.dtype == torch.float32 and tuple(x.shape) == (4, 301, 64)
    assert int(y) == ds.labels.index(sub.clips[1].labels[0])
    wave = load_audio(sub.clips[1].path, cfg.sample_rate)
    start = (len(wave) - 96000) // 2
    np.testing.assert_array_equal(x.numpy(), LogMelDeltas(cfg).compute(wave[start : start + 96000]))
    assert ds.loader.computed_waveforms == 1 and ds.loader.computed_features == 1

    def no_decode(*a, **k):
        raise AssertionError("recomputed despite the cache")

    assert ds.warm_cache(progress=False) == 3 and ds.loader.computed_features == 3  # clip 1 was cached
    monkeypatch.setattr(cache_mod, "load_clip_audio", no_decode)
    np.testing.assert_array_equal(ds[1][0].numpy(), x.numpy())  # second access: a cache hit
    ds[0], ds[2]  # warmed
    fresh = torch_dataset(sub, cfg, clip_seconds=3.0, train=False, cache_dir=tmp_path)  # "next run"
    np.testing.assert_array_equal(fresh[1][0].numpy(), x.numpy())
    assert fresh.loader.computed_features == 0 and fresh.loader.cache.hits == 1
    monkeypatch.setenv("QEDGE_CACHE", str(tmp_path))
    assert torch_dataset(sub, cfg, 3.0).loader.cache.root == tmp_path
    with pytest.raises(QedgeError, match="not in the model"):
        torch_dataset(sub, cfg, 3.0, cache_dir=False, labels=["Rain"])
    with pytest.raises(QedgeError):
        torch_dataset(sub, cfg, 0.0, cache_dir=False)


def test_clipdataset_training_crops_from_cached_waveform(tmp_path, monkeypatch):
    import qedge.data.cache as cache_mod

    index = find_dataset("fsdd")
    clips = ClipIndex(index.clips[:2], labels=index.labels)
    ds = torch_dataset(clips, SMALL, clip_seconds=0.2, train=True, cache_dir=tmp_path)
    wave = load_audio(clips.clips[0].path, SMALL.sample_rate)
    assert len(wave) > 1600
    torch.manual_seed(0)
    first = ds[0][0].numpy()
    monkeypatch.setattr(cache_mod, "load_clip_audio", lambda *a, **k: pytest.fail("waveform not cached"))
    crops = {ds[0][0].numpy().tobytes() for _ in range(6)}
    assert len(crops) > 1  # random crops differ between draws
    ex = LogMelDeltas(SMALL)
    starts = [s for s in range(len(wave) - 1600 + 1)
              if np.array_equal(ex.compute(wave[s : s + 1600]), first)]
    assert starts, "a training item must be the features of an excerpt of the clip"
    monkeypatch.undo()
    short = torch_dataset(clips, SMALL, clip_seconds=2.0, train=False, cache_dir=False)
    x = short[0][0].numpy()
    assert x.shape == (4, SMALL.num_frames(16000), 32)
    assert x[0, 0].max() == -100.0 and x[0, -1].max() == -100.0  # centred in silence


def test_dataloader_workers(tmp_path):
    from torch.utils.data import DataLoader

    index = find_dataset("fsdd")
    ds = torch_dataset(ClipIndex(index.clips[:8], labels=index.labels), SMALL, 0.5, train=True, cache_dir=tmp_path)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert len(batches) == 2 and tuple(batches[0][0].shape) == (4, 4, 51, 32)
    assert batches[0][1].dtype == torch.int64


# -- augmentations ------------------------------------------------------------------------------------------
def test_specaugment_masks_all_components_alike():
    from qedge.data.augment import SpecAugment

    x = torch.randn(3, 4, 100, 32) + torch.arange(4.0).view(1, 4, 1, 1) * 10
    spec = SpecAugment(time_masks=2, time_width=20, freq_masks=2, freq_width=6)
    out = spec(x, torch.Generator().manual_seed(1))
    changed = out != x
    assert changed.any()
    for b in range(3):
        assert torch.equal(changed[b, 0], changed[b, 1]) and torch.equal(changed[b, 0], changed[b, 3])
        fill = x[b].mean(dim=(1, 2))
        for c in range(4):
            assert torch.allclose(out[b, c][changed[b, c]], fill[c].expand(int(changed[b, c].sum())))
    again = spec(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded


def test_mixup_single_and_multi_label():
    from qedge.data.augment import Mixup, batch_augmenter

    x = torch.randn(6, 4, 10, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mix = Mixup(0.4, num_classes=3)
    xm, ym = mix(x, y, torch.Generator().manual_seed(3))
    lam, perm = mix.draw(6, torch.Generator().manual_seed(3))
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    onehot = torch.nn.functional.one_hot(y, 3).float()
    assert torch.allclose(xm, lam * x + (1 - lam) * x[perm], atol=1e-6)
    assert torch.allclose(ym, lam * onehot + (1 - lam) * onehot[perm], atol=1e-6)
    assert ym.shape == (6, 3) and torch.allclose(ym.sum(1), torch.ones(6))
    multi = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    xm2, ym2 = Mixup(1.0, multilabel=True)(x[:4], multi, torch.Generator().manual_seed(0))
    assert ym2.shape == (4, 3) and float(ym2.min()) >= 0 and float(ym2.max()) <= 1
    aug = batch_augmenter(specaugment=True, mixup=0.2, num_classes=3, generator=torch.Generator().manual_seed(0))
    xa, ya = aug(x, y)
    assert xa.shape == x.shape and ya.shape == (6, 3)
    xs, ys = batch_augmenter(specaugment=True, mixup=0.0)(x, y)
    assert torch.equal(ys, y) and not torch.equal(xs, x)


def test_gain_and_noise_at_snr():
    from qedge.data.augment import AddNoise, Compose, RandomGain, mix_at_snr

    t = np.arange(16000) / 16000
    sig = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    g = torch.Generator().manual_seed(0)
    loud = RandomGain(6.0, 6.0)(sig, g)
    np.testing.assert_allclose(loud, sig * 10 ** (6 / 20), rtol=1e-6)
    noise = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    mixed = mix_at_snr(sig, np.resize(noise, sig.shape), 10.0)
    added = mixed - sig
    snr = 10 * np.log10(np.mean(sig.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.01)
    for source in (None, [noise]):
        out = AddNoise(snr_db=(3.0, 3.0), noise=source)(sig, torch.Generator().manual_seed(2))
        resid = out - sig
        assert 10 * np.log10(np.mean(sig**2) / np.mean(resid**2)) == pytest.approx(3.0, abs=0.05)
    silent = np.zeros(100, dtype=np.float32)
    assert not AddNoise(10.0)(silent).any()  # SNR undefined for silence: unchanged
    comp = Compose([RandomGain(-3, 3), AddNoise((5, 15))], seed=4)
    a = comp(sig.copy())
    b = Compose([RandomGain(-3, 3), AddNoise((5, 15))], seed=4)(sig.copy())
    np.testing.assert_array_equal(a, b)


def test_random_trim_silences_only_the_ends_of_the_sound(fsdd_root):
    from qedge.data.augment import RandomTrim
    from qedge.data.cache import crop_or_pad
    from qedge.runtime.audio import load_audio

    word = load_audio(fsdd_root / "recordings" / "6_george_0.wav", 8000)  # a spoken "six", 0.4 s
    wave = crop_or_pad(word, 8000, 2000)  # placed at sample 2000 of a one-second window
    span = np.flatnonzero(wave)
    a, b = int(span[0]), int(span[-1]) + 1
    cuts = []
    for seed in range(20):
        out = RandomTrim(0.4)(wave, torch.Generator().manual_seed(seed))
        kept = np.flatnonzero(out)
        head, tail = int(kept[0]) - a, b - int(kept[-1]) - 1
        assert 0 <= head <= 0.4 * (b - a) + 1 and 0 <= tail <= 0.4 * (b - a) + 1
        np.testing.assert_array_equal(out[kept[0]:kept[-1] + 1], wave[kept[0]:kept[-1] + 1])  # middle intact
        assert not out[:kept[0]].any() and not out[kept[-1] + 1:].any()
        cuts.append((head, tail))
    assert len(set(cuts)) == 20 and max(h for h, _ in cuts) > 0.25 * (b - a)  # random, and reaching far
    assert np.flatnonzero(wave).size == span.size  # the input is not modified
    np.testing.assert_array_equal(RandomTrim(0.0)(wave), wave)
    assert not RandomTrim(0.4)(np.zeros(100, np.float32)).any()
    with pytest.raises(QedgeError, match="max_fraction"):
        RandomTrim(1.0)


def test_random_endpoint_cuts_only_quiet_edges(fsdd_root):
    from qedge.data.augment import RandomEndpoint
    from qedge.data.cache import crop_or_pad
    from qedge.runtime.audio import load_audio

    # george's "six": ~150 ms of /s/ some 20–30 dB below the vowel, then the vowel, then /ks/
    word = load_audio(fsdd_root / "recordings" / "6_george_7.wav", 8000)
    wave = crop_or_pad(word, 8000, 2000)
    frames = wave[: wave.size // 80 * 80].reshape(-1, 80).astype(np.float64)
    energy_db = 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), 1e-30))

    def kept_span(out: np.ndarray) -> tuple[int, int]:
        kept = np.flatnonzero(out)
        np.testing.assert_array_equal(out[kept[0]:kept[-1] + 1], wave[kept[0]:kept[-1] + 1])  # middle intact
        assert not out[:kept[0]].any() and not out[kept[-1] + 1:].any()  # outside silenced
        return int(kept[0]), int(kept[-1]) + 1

    loose = kept_span(RandomEndpoint(60.0, 60.0, p=1.0)(wave))
    strict = kept_span(RandomEndpoint(12.0, 12.0, p=1.0)(wave))
    assert strict[0] - loose[0] > 800 and strict[1] < loose[1]  # the quiet /s/ (> 100 ms) and tail go
    loudest = int(np.argmax(energy_db)) * 80
    assert strict[0] <= loudest < strict[1]  # the vowel stays
    head = energy_db[loose[0] // 80 : strict[0] // 80]
    assert head.size and (head <= energy_db.max() - 12.0).all()  # only quiet frames were cut
    # p: a fraction of the clips is left alone, and the draws differ
    outs = [RandomEndpoint(10.0, 25.0, p=0.5)(wave, torch.Generator().manual_seed(s)) for s in range(40)]
    untouched = sum(np.array_equal(o, wave) for o in outs)
    assert 8 <= untouched <= 32 and len({kept_span(o) for o in outs}) > 5
    np.testing.assert_array_equal(RandomEndpoint(p=0.0)(wave), wave)
    assert not RandomEndpoint(p=1.0)(np.zeros(800, np.float32)).any()
    with pytest.raises(QedgeError, match="endpoint"):
        RandomEndpoint(p=1.5)
    with pytest.raises(QedgeError, match="endpoint"):
        RandomEndpoint(0.0, 10.0)


def test_dataset_applies_wave_and_feature_augment(tmp_path):
    from qedge.data.augment import Mixup, RandomGain, SpecAugment

    index = find_dataset("fsdd")
    clips = ClipIndex(index.clips[:1], labels=index.labels)
    plain = torch_dataset(clips, SMALL, 2.0, train=False, cache_dir=False)
    aug = torch_dataset(clips, SMALL, 2.0, train=True, cache_dir=False, augment=[RandomGain(20, 20)])
    wave = load_audio(clips.clips[0].path, 8000)
    torch.manual_seed(0)
    x = aug[0][0]
    start = int(torch.randint(0, 16000 - len(wave) + 1, (), generator=torch.Generator().manual_seed(0)))
    # +20 dB gain → log-mel +20 dB wherever the clip is not silent
    ref = LogMelDeltas(SMALL).compute(np.pad(wave, (start, 16000 - len(wave) - start)) * 10.0)
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-3)
    assert plain[0][0].shape == x.shape
    unmasked = torch_dataset(clips, SMALL, 2.0, train=True, cache_dir=False)
    masked = torch_dataset(clips, SMALL, 2.0, train=True, cache_dir=False, augment=[SpecAugment(2, 30, 2, 8)])
    torch.manual_seed(1)
    a = unmasked[0][0]
    torch.manual_seed(1)
    b = masked[0][0]
    changed = a != b
    assert changed.any() and torch.equal(changed[0], changed[2])  # same crop, masks on all components
    with pytest.raises(QedgeError, match="mixup"):
        torch_dataset(clips, SMALL, 2.0, train=True, cache_dir=False, augment=[Mixup(0.2, 10)])


def test_esc50_meta_layout(tmp_path):
    root = tmp_path / "ESC-50-master"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = [["filename", "fold", "target", "category", "esc10", "src_file", "take"]]
    for fold in (1, 2, 3, 4, 5):
        for target, cat in ((0, "dog"), (1, "rooster")):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            _tone(root / "audio" / name, 0.1)
            rows.append([name, str(fold), str(target), cat, "True", str(100 + target), "A"])
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    index = find_dataset(str(root))
    assert index.format == "esc" and index.labels == ["dog", "rooster"] and len(index) == 10
    train, test = index.split()
    assert {c.fold for c in test} == {5} and len(train) == 8
    (root / "audio" / "3-101-A-1.wav").unlink()
    with pytest.raises(QedgeError, match="missing"):
        find_dataset(str(root))
