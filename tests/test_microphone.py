"""The real PortAudio capture path (design.md §9): a private PulseAudio daemon with a
``module-pipe-source`` fed in real time is the "microphone"; ``qedge listen --device vmic`` runs in a
subprocess (torch made unimportable) and must tag what is fed.

The test starts and stops its own daemon (PULSE_RUNTIME_PATH and HOME in a temp dir, so it touches
no user session; an ``.asoundrc`` there names the pipe sources as ALSA PCMs ``vmic``/``vmic2``, which
PortAudio lists as capture devices). It skips only when pulseaudio/pactl are not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_listen import REPO, band_module, export_onnx, tone

pytestmark = pytest.mark.audio
SR = 32000


class Pulse:
    """A private PulseAudio daemon; ``feeder(name)`` writes s16le audio into a pipe source in real time."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ, PULSE_RUNTIME_PATH=str(home), HOME=str(home), XDG_RUNTIME_DIR=str(home))
        self.modules: dict[str, str] = {}

    def pactl(self, *args: str) -> str:
        proc = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def add_source(self, name: str) -> Path:
        fifo = self.home / f"{name}.fifo"
        self.modules[name] = self.pactl("load-module", "module-pipe-source", f"source_name={name}",
                                        f"file={fifo}", "format=s16le", f"rate={SR}", "channels=1")
        return fifo

    def recording_clients(self) -> int:
        return len([ln for ln in self.pactl("list", "short", "source-outputs").splitlines() if ln.strip()])


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("pulseaudio/pactl not installed (apt-get install pulseaudio pulseaudio-utils "
                    "libasound2-plugins libportaudio2)")
    home = Path(tmp_path_factory.mktemp("pulse"))
    (home / ".asoundrc").write_text("".join(
        f"pcm.{n} {{\n  type pulse\n  device {n}\n  hint {{ show on description \"qedge test source {n}\" }}\n}}\n"
        for n in ("vmic", "vmic2")))
    p = Pulse(home)
    subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                    "--load=module-native-protocol-unix", f"--log-target=file:{home / 'pulse.log'}"],
                   env=p.env, check=True, timeout=20)
    try:
        for _ in range(100):
            if subprocess.run(["pactl", "info"], env=p.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        p.fifos = {name: p.add_source(name) for name in ("vmic", "vmic2")}
        yield p
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=p.env, timeout=20)


@pytest.fixture(scope="module")
def band_model(tmp_path_factory) -> Path:
    return export_onnx(band_module(), tmp_path_factory.mktemp("mic") / "band.onnx", ["low", "high"])


@pytest.fixture(scope="module")
def notorch(tmp_path_factory) -> Path:
    shim = tmp_path_factory.mktemp("notorch_mic")
    (shim / "torch").mkdir()
    (shim / "torch" / "__init__.py").write_text("raise ImportError('qedge listen must not import torch')\n")
    return shim


class Feeder(threading.Thread):
    """Writes silence at real-time pace; once a recording client is attached, writes ``content``
    (then silence again). ``gap`` = (start s, length s) of content during which nothing is written."""

    def __init__(self, pulse: Pulse, name: str, content: np.ndarray, gap: tuple[float, float] | None = None):
        super().__init__(daemon=True)
        self.pulse, self.fifo, self.content, self.gap = pulse, pulse.fifos[name], content, gap
        self.stop = threading.Event()
        self.content_started: float | None = None

    def run(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)
        block = 320
        silence = np.zeros(block, dtype="<i2").tobytes()
        pcm = (np.clip(self.content, -1, 1) * 32767).astype("<i2")
        t0 = time.monotonic()
        sent = 0
        pos = None
        try:
            while not self.stop.is_set():
                if pos is None and sent % (block * 5) == 0 and self.pulse.recording_clients() > 0:
                    pos, self.content_started = 0, time.monotonic()
                if pos is not None and pos < len(pcm):
                    if self.gap and pos == int(self.gap[0] * SR):
                        time.sleep(self.gap[1])  # the source delivers nothing: audio is lost
                        t0 += self.gap[1]
                    data, pos = pcm[pos:pos + block].tobytes(), pos + block
                else:
                    data = silence
                delay = t0 + sent / SR - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.05:  # blocked on a full fifo: resume the real-time pace, never burst
                    t0 -= delay
                os.write(fd, data)
                sent += block
        except OSError:
            pass  # the source was unloaded
        finally:
            os.close(fd)


def listen(pulse: Pulse, notorch: Path, args: list[str], timeout: float = 40) -> subprocess.CompletedProcess:
    env = dict(pulse.env, PYTHONPATH=str(notorch) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "qedge", "listen", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def parse(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines and "summary" in lines[-1], stdout[-500:]
    return lines[:-1], lines[-1]["summary"]


def test_devices_listed_and_unknown_device_refused(pulse, band_model, notorch):
    proc = listen(pulse, notorch, ["--list-devices", "--json"])
    assert proc.returncode == 0, proc.stderr
    names = [d["name"] for d in json.loads(proc.stdout)]
    assert "vmic" in names and "vmic2" in names
    proc = listen(pulse, notorch, [str(band_model), "--device", "no-such-mic"])
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "no input device named 'no-such-mic'" in proc.stderr and "vmic" in proc.stderr


def test_microphone_tags_with_low_latency(pulse, band_model, notorch):
    """2.5 s of 440 Hz then 2.5 s of 6 kHz through the pipe source: tags low … then high …; end-to-end
    latency under hop + 100 ms; a 0.6 s gap in delivery is reported as dropped audio."""
    content = np.concatenate([tone(440, 2.5), tone(6000, 2.5)])
    feeder = Feeder(pulse, "vmic", content, gap=(3.5, 0.6))
    feeder.start()
    try:
        proc = listen(pulse, notorch, [str(band_model), "--device", "vmic", "--seconds", "7.5", "--json",
                                       "--hop", "0.25", "--threshold", "0.6", "--top-k", "1", "--threads", "1"])
    finally:
        feeder.stop.set()
        feeder.join(5)
    assert proc.returncode == 0, proc.stderr
    results, summary = parse(proc.stdout)
    assert summary["error"] is None and summary["source"].startswith("vmic")
    top = [r["tags"][0]["label"] if r["tags"] else None for r in results]
    labelled = [t for t in top if t]
    # order: silence, low, (mixed), high, silence — low strictly before high, both well represented
    assert labelled.count("low") >= 4 and labelled.count("high") >= 4, top
    assert max(i for i, t in enumerate(top) if t == "low") < min(i for i, t in enumerate(top) if t == "high"), top
    hop_ms = summary["hop_s"] * 1000
    assert summary["latency_ms"]["end_to_end"]["p95"] < hop_ms + 100, summary["latency_ms"]
    assert 0.3 <= summary["dropped_audio_s"] <= 0.9, summary
    assert summary["windows"] >= 20


def test_device_vanishing_is_reported(pulse, band_model, notorch):
    """Unloading the source mid-stream: a one-line error, the summary still printed, non-zero exit."""
    feeder = Feeder(pulse, "vmic2", tone(440, 30.0))
    feeder.start()

    def unplug():
        deadline = time.monotonic() + 20
        while feeder.content_started is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        pulse.pactl("unload-module", pulse.modules["vmic2"])

    killer = threading.Thread(target=unplug, daemon=True)
    killer.start()
    try:
        proc = listen(pulse, notorch, [str(band_model), "--device", "vmic2", "--seconds", "25", "--json"])
    finally:
        feeder.stop.set()
        killer.join(5)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "vmic2" in err[0], proc.stderr
    results, summary = parse(proc.stdout)
    assert summary["error"] and len(results) >= 1 and summary["audio_s"] < 10


RATE_FALLBACK = """
import json, sys
import sounddevice as sd
real = sd.check_input_settings
def no_32k(*args, samplerate=None, **kwargs):  # a device that cannot capture at the model's rate
    if samplerate == 32000:
        raise sd.PortAudioError("Invalid sample rate")
    return real(*args, samplerate=samplerate, **kwargs)
sd.check_input_settings = no_32k
from qedge.runtime.backends import OrtBackend
from qedge.runtime.listen import Listener
from qedge.runtime.sources import MicrophoneSource
source = MicrophoneSource("vmic", 32000)
tags = []
summary = Listener(OrtBackend(sys.argv[1]), hop_s=0.25, threshold=0.6, top_k=1).run(
    source, seconds=3.0, on_result=lambda r: tags.append([t["label"] for t in r["tags"]]))
print(json.dumps({"rate": source.sample_rate, "tags": tags, "summary": summary}))
"""


def test_device_rate_fallback_resamples(pulse, band_model, notorch):
    """A device that refuses 32 kHz is opened at its default rate and resampled on the fly."""
    feeder = Feeder(pulse, "vmic", tone(6000, 10.0))
    feeder.start()
    try:
        env = dict(pulse.env, PYTHONPATH=str(notorch) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-c", RATE_FALLBACK, str(band_model)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=40)
    finally:
        feeder.stop.set()
        feeder.join(5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rate"] != 32000 and out["summary"]["error"] is None
    assert out["summary"]["audio_s"] == pytest.approx(3.0, abs=0.6)  # measured at the model's rate
    assert sum(t == ["high"] for t in out["tags"]) >= 4, out["tags"]


def test_microphone_soundscape_gives_the_file_path_events(pulse, notorch, tmp_path):
    """Issue #13 item 5: a seeded soundscape (tone events on a noise bed, quiet silence and noise)
    played through the pipe source and PortAudio gives the same events as the same soundscape read
    as a file: same count and labels, onsets and offsets within one hop once the start offset of
    the capture (a constant, < 0.5 s) is removed."""
    from qedge.data.background import BackgroundBank
    from qedge.runtime.model_info import ListenSettings
    from qedge.stream.soundscape import SoundscapeSpec, build_soundscape
    from test_stream import tone_clip, tone_detector_onnx

    settings = ListenSettings(window_frames=50, hop_frames=10, thresholds={"tone": 0.5}, background="background")
    model = tone_detector_onnx(tmp_path / "tone.onnx", settings)
    clips = [(tone_clip(0.8 + 0.2 * (i % 3), 1.0), "tone") for i in range(4)]
    sc = build_soundscape(clips, BackgroundBank.build(SR), seed=2,
                          spec=SoundscapeSpec(bed_kinds=("noise",), quiet_kinds=("silence", "noise"),
                                              quiet_seconds=2.0, events_per_quiet=2))
    wav = sc.write(tmp_path / "soundscape.wav")
    seconds = sc.audio.size / SR
    assert seconds < 25  # keeps the real-time part of the suite short

    def events_of(stdout: str) -> list[dict]:
        return [x for x in (json.loads(line) for line in stdout.splitlines() if line.strip()) if "event" in x]

    proc = listen(pulse, notorch, [str(model), "--file", str(wav), "--fast", "--events", "--json", "--threads", "1"])
    assert proc.returncode == 0, proc.stderr
    from_file = events_of(proc.stdout)
    assert len(from_file) == len(sc.events)  # the file path finds every event (test_stream checks timing)

    feeder = Feeder(pulse, "vmic", sc.audio)
    feeder.start()
    try:
        proc = listen(pulse, notorch, [str(model), "--device", "vmic", "--seconds", f"{seconds + 1.0:.2f}",
                                       "--events", "--json", "--threads", "1"], timeout=seconds + 30)
    finally:
        feeder.stop.set()
        feeder.join(5)
    assert proc.returncode == 0, proc.stderr
    from_mic = events_of(proc.stdout)
    assert [e["event"] for e in from_mic] == [e["event"] for e in from_file], (from_mic, from_file)
    shift = float(np.median([m["onset"] - f["onset"] for m, f in zip(from_mic, from_file)]))
    assert -0.05 <= shift < 0.5, shift
    hop = settings.hop_frames / 100
    for m, f in zip(from_mic, from_file):
        assert abs(m["onset"] - shift - f["onset"]) <= hop + 1e-6, (m, f, shift)
        assert abs(m["offset"] - shift - f["offset"]) <= hop + 1e-6, (m, f, shift)
