"""Offline IMU-like data: accelerometer traces, pictures and captions of six activities.

Six classes = 3 movement patterns x 2 tempos. A trace is a 3-axis accelerometer window of 128
samples at 50 Hz (2.56 s), float32 ``[3, 128]``, saved as one ``.npy`` per item:

- ``walking``: a vertical sinusoid at the step rate ``f`` plus its second harmonic forward;
- ``jumping``: sharp vertical impulses (narrow Gaussian bumps) at rate ``f``;
- ``cycling``: a rotation in the horizontal plane (sine on x, cosine on y) at rate ``f``.

Tempo: ``slow`` ``f`` ~ 1.0 Hz, ``fast`` ``f`` ~ 2.2 Hz (+-12% per item). Every trace has a random
phase (so where the pattern starts in the window says nothing), an amplitude of 0.6-1.4, a small
random rotation of the axes, a gravity offset and noise of std 0.25: the class is in the pattern
and the tempo, not in any fixed sample.

The picture (32x32 PNG) shows the pattern as a shape (wave, dots, ring) and the tempo as a colour
(blue slow, red fast) at a random place and size on a noisy background; the caption says the
activity and the tempo in one of several wordings ("someone walking slowly", ...).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["ACTIVITIES", "TEMPOS", "make_imu_data", "trace"]

ACTIVITIES = ["walking", "jumping", "cycling"]
TEMPOS = ["slow", "fast"]
RATE, LENGTH = 50.0, 128
_ADVERBS = {
    "slow": ["slowly", "at an easy pace", "leisurely", "without hurry"],
    "fast": ["quickly", "at a fast pace", "briskly", "in a hurry"],
}
_TEMPLATES = [
    "someone {act} {adv}",
    "a person {act} {adv}",
    "{adv}, a person is {act}",
    "sensor data of {act} {adv}",
]


def trace(activity: int, tempo: int, rng: np.random.Generator) -> np.ndarray:
    """One accelerometer window ``[3, 128]`` (float32) of class ``(activity, tempo)``."""
    f = (1.0 if tempo == 0 else 2.2) * rng.uniform(0.88, 1.12)
    t = np.arange(LENGTH) / RATE
    phase = rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi * f * t + phase
    x = np.zeros((3, LENGTH))
    if activity == 0:  # walking
        x[2] = np.sin(w)
        x[0] = 0.4 * np.sin(2 * w + rng.uniform(0, 2 * np.pi))
    elif activity == 1:  # jumping: impulses at each period
        cyc = (w / (2 * np.pi)) % 1.0
        x[2] = 2.0 * np.exp(-(((cyc - 0.5) / 0.06) ** 2)) - 0.3
    else:  # cycling: rotation in the horizontal plane
        x[0], x[1] = np.sin(w), np.cos(w)
    x *= rng.uniform(0.6, 1.4)
    a, b = rng.normal(0, 0.25, 2)  # small random orientation of the device
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    x = ry @ rx @ x
    x[2] += 1.0  # gravity
    x += rng.normal(0, 0.25, x.shape)
    return x.astype(np.float32)


def _picture(activity: int, tempo: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB picture: the pattern as a shape, the tempo as a colour."""
    img = rng.integers(0, 60, (32, 32, 3)).astype(np.float64)
    colour = np.array([40, 90, 230] if tempo == 0 else [230, 60, 40]) * rng.uniform(0.8, 1.0)
    cy, cx = rng.uniform(11, 21, 2)
    r = rng.uniform(6, 10)
    yy, xx = np.mgrid[0:32, 0:32]
    if activity == 0:  # a wave
        band = np.abs(yy - (cy + 0.5 * r * np.sin((xx - cx) / r * 2.5))) < 1.5
        shape = band & (np.abs(xx - cx) < 1.4 * r)
    elif activity == 1:  # three dots
        shape = np.zeros((32, 32), bool)
        for k in (-1, 0, 1):
            shape |= (yy - cy) ** 2 + (xx - cx - k * 0.8 * r) ** 2 < (0.3 * r) ** 2
    else:  # a ring
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        shape = np.abs(d - 0.8 * r) < 1.5
    img[shape] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def make_imu_data(root: str | Path, n: int = 600, seed: int = 0) -> Path:
    """Write ``n`` paired samples under ``root`` (``imu/*.npy``, ``image/*.png``) and the
    manifest ``manifest.csv`` (columns ``imu``, ``image``, ``caption``, ``activity``); returns
    the manifest path. Classes are balanced (``i % 6``); everything is seeded."""
    from PIL import Image

    root = Path(root)
    (root / "imu").mkdir(parents=True, exist_ok=True)
    (root / "image").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cls = i % 6
        act, tempo = cls // 2, cls % 2
        np.save(root / "imu" / f"{i:05d}.npy", trace(act, tempo, rng))
        Image.fromarray(_picture(act, tempo, rng)).save(root / "image" / f"{i:05d}.png")
        adv = _ADVERBS[TEMPOS[tempo]][int(rng.integers(0, 4))]
        caption = _TEMPLATES[int(rng.integers(0, 4))].format(act=ACTIVITIES[act], adv=adv)
        rows.append(
            {
                "imu": f"imu/{i:05d}.npy",
                "image": f"image/{i:05d}.png",
                "caption": caption,
                "activity": f"{ACTIVITIES[act]}-{TEMPOS[tempo]}",
            }
        )
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["imu", "image", "caption", "activity"])
        w.writeheader()
        w.writerows(rows)
    return path
