"""Speech for the demo from pip alone: espeak-ng's library and voice data as shipped by the
``espeakng-loader`` wheel (``pip install "centrobind[demo]"``, also in ``[test]``), driven with
ctypes; no system package, no subprocess.

A :class:`Speaker` renders each clip into memory (synchronous mode) and writes a 16-bit mono WAV
file.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CentrobindError

__all__ = ["Speaker"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Speaker:
    """One private copy of the espeak-ng library, initialised for synchronous synthesis.

    espeak-ng keeps state between clips in static variables (its pitch flutter, for one), so a
    clip depends on every clip spoken before it in the same library. Each Speaker loads its own
    copy of the library file, so the clips of one Speaker depend only on what it was asked to say,
    in order: the same calls give the same files, in any process.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise CentrobindError(
                "the demo speaks its captions with espeak-ng from the espeakng-loader package, "
                "which is not installed: pip install 'centrobind[demo]'"
            ) from None
        self._tmp = tempfile.TemporaryDirectory(prefix="centrobind-espeak-")
        own = Path(self._tmp.name) / "libespeak-ng.so"
        try:
            shutil.copyfile(espeakng_loader.get_library_path(), own)
            lib = ctypes.CDLL(str(own))
            lib.espeak_Initialize.argtypes = [
                ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
            ]  # fmt: skip
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            data = espeakng_loader.get_data_path().encode()
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        except (OSError, RuntimeError, AttributeError) as e:
            raise CentrobindError(f"espeak-ng (espeakng-loader) could not be loaded: {e}") from None
        if rate <= 0:
            raise CentrobindError(f"espeak-ng could not start (espeak_Initialize returned {rate})")
        self.sample_rate = int(rate)  # 22050 Hz for espeak-ng's voices
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._chunk)  # kept alive: the library holds a pointer to it
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self._lock = threading.Lock()

    def _chunk(self, samples: Any, n: int, events: Any) -> int:
        """espeak-ng's synth callback: keep ``n`` samples of the clip being rendered."""
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n,)).copy())
        return 0  # go on

    def say(
        self, text: str, path: str | Path, voice: str = "en-us", speed: int = 175, pitch: int = 50
    ) -> int:
        """Speak ``text`` into the 16-bit mono WAV file ``path`` with espeak-ng's ``voice``
        (e.g. ``en-us``, ``en-us+f2``, ``en+m3``) at ``speed`` words per minute and ``pitch``
        (0-99). Returns the number of samples written."""
        with self._lock:
            lib = self._lib
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise CentrobindError(f"espeak-ng has no voice {voice!r}")
            lib.espeak_SetParameter(_ESPEAK_RATE, int(speed), 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
            self._chunks = []
            raw = text.encode() + b"\0"
            if lib.espeak_Synth(raw, len(raw), 0, 0, 0, _CHARS_UTF8, None, None) != 0:
                raise CentrobindError(f"espeak-ng could not speak {text!r}")
            lib.espeak_Synchronize()
            x = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(x.astype("<i2").tobytes())
        return int(x.shape[0])
