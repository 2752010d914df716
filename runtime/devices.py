"""Capture devices for ``qedge listen``: listing and choosing PortAudio inputs, and quieting
PortAudio's native diagnostics.

``sounddevice`` (and the PortAudio library under it) is imported only when a device is listed or
opened (:func:`_sounddevice`), so file and stdin input work without it; a missing package or
library becomes one :class:`~qedge.errors.QedgeError` naming the fix. :func:`list_input_devices`
backs ``qedge listen --list-devices``; :func:`resolve_input_device` turns ``--device`` (index,
exact name or unique name substring, or None for the default input) into a device record for
:class:`~qedge.runtime.sources.MicrophoneSource`. :class:`quiet_native_stderr` filters the C-level
noise PortAudio and ALSA print on file descriptor 2 while devices are probed or open.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from qedge.errors import QedgeError

__all__ = ["list_input_devices", "resolve_input_device", "quiet_native_stderr"]


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # PortAudio shared library missing
        raise QedgeError(f"microphone input needs PortAudio ({exc}): apt install libportaudio2") from exc
    except ImportError as exc:
        raise QedgeError("microphone input needs the Python package 'sounddevice': pip install sounddevice") from exc
    return sd


def list_input_devices() -> list[dict[str, Any]]:
    """Capture devices PortAudio sees: index, name, channels, default_samplerate, hostapi."""
    sd = _sounddevice()
    hostapis = sd.query_hostapis()
    out = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            out.append({
                "index": index,
                "name": dev["name"],
                "channels": int(dev["max_input_channels"]),
                "default_samplerate": float(dev["default_samplerate"]),
                "hostapi": hostapis[dev["hostapi"]]["name"],
            })
    return out


def _describe(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "no input devices found"
    return "available inputs: " + "; ".join(f"{d['index']}: {d['name']}" for d in devices)


def resolve_input_device(device: str | int | None) -> dict[str, Any]:
    """Find a capture device by index, exact name or unique case-insensitive name substring.

    ``None`` means PortAudio's default input. An unknown device raises QedgeError listing the
    available inputs.
    """
    sd = _sounddevice()
    devices = list_input_devices()
    if device is None:
        default = sd.default.device[0] if isinstance(sd.default.device, (list, tuple)) else sd.default.device
        if default is None or int(default) < 0:
            if devices:
                return devices[0]
            raise QedgeError(f"no default input device: {_describe(devices)}")
        device = int(default)
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        device = int(device)
    if isinstance(device, int):
        for d in devices:
            if d["index"] == device:
                return d
        raise QedgeError(f"no input device with index {device}: {_describe(devices)}")
    exact = [d for d in devices if d["name"] == device]
    if exact:
        return exact[0]
    partial = [d for d in devices if str(device).lower() in d["name"].lower()]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        raise QedgeError(f"input device name {device!r} is ambiguous: {_describe(partial)}")
    raise QedgeError(f"no input device named {device!r}: {_describe(devices)}")


class quiet_native_stderr:
    """Context manager: filter PortAudio's and ALSA's C-level diagnostics ("Expression '…' failed
    in 'src/hostapi/alsa/…'", "ALSA lib …") out of file descriptor 2, so a user sees one clear
    line per problem; everything else written to stderr passes through unchanged."""

    PATTERNS = (b"Expression '", b"ALSA lib ", b"Cannot connect to server", b"jack server",
                b"JackShmReadWritePtr", b"PaAlsaStream", b"snd_pcm_")

    def __enter__(self) -> "quiet_native_stderr":
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
        self._thread.start()
        return self

    def _pump(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                if not any(p in line for p in self.PATTERNS):
                    os.write(self._saved, line)

    def __exit__(self, *exc: Any) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the pump sees EOF
        self._thread.join(1.0)
        os.close(self._saved)
