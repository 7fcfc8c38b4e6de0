"""Synthetic localized-event videos: real H.264 files plus manifests, fully determined by a seed.

Each video is long (default 64–192 frames) and its class shows only inside a short *event window*
(default 10–20 % of the video) as a **motion**: one square object moves up, down, left or right.
A single frame does not reveal the class because the object's rest position is uniform and the frame
wraps around (a torus), so the position distribution at any frame is the same for every class; the
class is only visible in the displacement over several frames. Outside the window the same object
rests with a small jitter. Class-independent distractors (identical squares moving diagonally for the
whole video), a slowly drifting background and pixel noise make "any motion" useless as a cue (in a probe
without distractors, uniform and TSS sampling both reached 100 % accuracy: nothing told the samplers apart).

Variants:

* ``"multiclass"`` – labels ``up``, ``down``, ``left``, ``right`` (the first ``num_classes`` of them).
* ``"binary"`` – labels ``no_event`` / ``event`` (EER experiments, seed Table S.4). ``event`` videos
  hold a motion burst in a random direction; ``no_event`` videos only rest/jitter plus distractors,
  their event window is left empty and their frame scores are all zero.
* ``"redundancy"`` – as multiclass, but the video freezes (frame ``t`` identical to frame ``t-1``)
  on static stretches outside the event, for SGS; the manifest column ``static_fraction`` gives the
  fraction of frozen frames.
* ``"appearance"`` – the class shows in the **appearance** of an object, for SGS (whose premise is
  redundancy of appearance): during the event window a still object of the class's shape (``square``,
  ``disc``, ``cross``, ``ring``; side 30-40 % of the frame, random position, grey level 0.8-0.95) is shown,
  and absent outside it. The video freezes on stretches anywhere (inside the event too, except the frames
  where the object appears and disappears); small diagonal distractor squares, the drifting background and
  pixel noise change the dynamic frames. One event frame reveals the class. Frame scores are 1 inside the
  window, 0 outside; the ``static_fraction`` column as for ``"redundancy"``. ``event_speed`` is unused.
* ``"textured"`` – appearance data that does not flatter SGS: redundancy is partial and mixed. The class is the
  shape (as ``"appearance"``) of a textured object (a grating at a random angle and period, grey levels
  0.55-0.95), rotated, of random width (25-45 % of the frame) and position, shown during the event window
  (``event_fraction``, e.g. 30-60 % of the frames); the whole scene (a background of random gratings, the
  object, the distractors) pans with the camera (0.6-1.0 px/frame x size/32, plus a slow drift of 0.5-1.5 px);
  noise on every frame; no frozen frame. Frame scores are 1 on the object's frames, 0 elsewhere.
* ``"order"`` – as ``"textured"``, but the class is the order of two events: a disc for the first half of the
  window then a cross for the second half (``disc_then_cross``), or the reverse (``cross_then_disc``). Every
  clip holds both shapes, so no frame and no unordered set of frames reveals the class.

Layout under ``root``::

    dataset.json                      parameters + generator version (written last)
    train.csv, val.csv, test.csv      manifests (``VideoManifest`` CSV) with paths relative to root
    videos/<split>/<split>_00000.mp4  H.264 yuv420p, GOP 16, grey content stored as RGB
    scores/<split>/<split>_00000.npy  float32 [num_frames] per-frame intensity (PSPI analogue)

The per-frame score is the object's speed during the event normalised to a peak of 1 (a trapezoid:
rising over the first quarter of the window, 1 in the middle half, falling over the last quarter) and
exactly 0 outside it.

Defaults (160 train / 80 val / 80 test videos at 64×64, 64–192 frames, ≈41k frames) are the
quickstart's dataset; they generate in well under a minute on 2 cores. ``size=32`` makes a 4× cheaper
variant for CPU experiments.

Example::

    >>> import tempfile
    >>> from lightning_temporal.data.synthetic import ensure_dataset
    >>> root = tempfile.mkdtemp()
    >>> paths = ensure_dataset(root, num_train=4, num_val=0, num_test=0, size=32,
    ...                        min_frames=24, max_frames=32, progress=False)
    >>> sorted(paths)
    ['test', 'train', 'val']
    >>> open(paths["train"]).readline().strip()
    'path,label,num_frames,event_start,event_end,frame_scores'
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "VARIANTS",
    "DIRECTIONS",
    "SHAPES",
    "class_names",
    "generate_dataset",
    "ensure_dataset",
    "render_video",
]

# Bump whenever the rendered content or the layout changes, so ensure_dataset regenerates old copies.
GENERATOR_VERSION = 4
SPLITS = ("train", "val", "test")
VARIANTS = ("multiclass", "binary", "redundancy", "appearance", "textured", "order")
# (dy, dx) unit steps in image coordinates (y grows downwards).
DIRECTIONS = {"up": (-1.0, 0.0), "down": (1.0, 0.0), "left": (0.0, -1.0), "right": (0.0, 1.0)}
BINARY_CLASSES = ("no_event", "event")
SHAPES = ("square", "disc", "cross", "ring")  # the classes of the appearance and textured variants
ORDER_CLASSES = ("disc_then_cross", "cross_then_disc")  # the classes of the order variant

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_OBJECT_LEVEL = 0.9  # grey level of the object and of the distractors (identical on purpose)
_GOP = 16
_CRF = 12  # low enough that a 4-px object moving by sub-pixel steps survives (see tests)
_SEED_SALT = 0x5EED_7E37  # keeps the streams of this generator apart from other seeded users of `seed`


def class_names(variant: str, num_classes: int = 4) -> Tuple[str, ...]:
    """Label names of a variant, in class-index order (``("up", "down", "left", "right")`` by default)."""
    _check_variant(variant)
    if variant == "binary":
        return BINARY_CLASSES
    if variant == "order":
        return ORDER_CLASSES
    if variant in ("appearance", "textured"):
        if not 2 <= int(num_classes) <= len(SHAPES):
            raise ValueError(f"num_classes={num_classes!r}: the appearance classes are {SHAPES}, so pick 2 to "
                             f"{len(SHAPES)}")
        return SHAPES[: int(num_classes)]
    if not 2 <= int(num_classes) <= len(DIRECTIONS):
        raise ValueError(
            f"num_classes={num_classes!r}: the motion classes are {tuple(DIRECTIONS)}, so pick 2 to "
            f"{len(DIRECTIONS)} (diagonal motion is reserved for the distractors)"
        )
    return tuple(DIRECTIONS)[: int(num_classes)]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: choose one of {VARIANTS}")


@dataclass(frozen=True)
class _Params:
    """Everything that determines the content of a dataset (recorded in dataset.json)."""

    variant: str
    num_train: int
    num_val: int
    num_test: int
    seed: int
    size: int
    min_frames: int
    max_frames: int
    event_fraction: Tuple[float, float]
    num_classes: int
    num_distractors: Tuple[int, int]
    noise: float
    fps: int
    event_speed: float = 2.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["event_fraction"] = [float(v) for v in self.event_fraction]
        d["num_distractors"] = [int(v) for v in self.num_distractors]
        return d


def _make_params(
    variant, num_train, num_val, num_test, seed, size, min_frames, max_frames, event_fraction,
    num_classes, num_distractors, noise, fps, event_speed=2.0,
) -> _Params:
    _check_variant(variant)
    for name, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name}={v!r}: must be an integer >= 0")
    if int(seed) != seed:
        raise ValueError(f"seed={seed!r}: must be an integer")
    if int(size) != size or size < 16 or size % 2:
        raise ValueError(f"size={size!r}: must be an even integer >= 16 (H.264 yuv420p needs even sizes)")
    if int(min_frames) != min_frames or min_frames < 8 or int(max_frames) != max_frames or max_frames < min_frames:
        raise ValueError(
            f"min_frames={min_frames!r}, max_frames={max_frames!r}: need integers with 8 <= min_frames <= max_frames"
        )
    try:
        lo, hi = (float(v) for v in event_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"event_fraction={event_fraction!r}: give a pair (low, high) of fractions") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"event_fraction={event_fraction!r}: need 0 < low <= high <= 1")
    if round(lo * min_frames) < 2:
        raise ValueError(
            f"event_fraction={event_fraction!r} with min_frames={min_frames}: the shortest event would have "
            f"{round(lo * min_frames)} frame(s); a motion needs >= 2, raise min_frames or the low fraction"
        )
    try:
        dlo, dhi = (int(v) for v in num_distractors)
    except (TypeError, ValueError):
        raise ValueError(f"num_distractors={num_distractors!r}: give a pair (low, high) of integers") from None
    if not 0 <= dlo <= dhi:
        raise ValueError(f"num_distractors={num_distractors!r}: need 0 <= low <= high")
    if not (0.0 <= float(noise) <= 0.5):
        raise ValueError(f"noise={noise!r}: pixel-noise standard deviation in grey levels / 255, must be in [0, 0.5]")
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"fps={fps!r}: must be a positive integer")
    if not (0.0 < float(event_speed) <= 8.0):
        raise ValueError(f"event_speed={event_speed!r}: peak speed of the event in units of size/32 px per frame, "
                         "must be in (0, 8] (the distractors move at 0.4-0.9 units diagonally)")
    class_names(variant, num_classes)  # validates num_classes
    return _Params(
        variant, int(num_train), int(num_val), int(num_test), int(seed), int(size), int(min_frames),
        int(max_frames), (lo, hi), int(num_classes), (dlo, dhi), float(noise), int(fps), float(event_speed),
    )


# --------------------------------------------------------------------------------------------------
# Rendering (pure numpy; vectorised over frames)


@dataclass
class RenderedVideo:
    """One rendered video before encoding.

    frames: uint8 [L, S, S] grey levels. scores: float32 [L] per-frame intensity (0 outside the event).
    event: (start, end) frame indices, end exclusive, or None (binary ``no_event``).
    direction: name of the event's motion direction, or None. static_fraction: fraction of frames that
    repeat their predecessor exactly (redundancy and appearance variants; 0 otherwise).
    """

    frames: np.ndarray
    scores: np.ndarray
    event: Optional[Tuple[int, int]]
    direction: Optional[str]
    static_fraction: float


def _coverage(center: np.ndarray, side: float, size: int) -> np.ndarray:
    """Anti-aliased 1-D coverage of a segment of length `side` centred at `center` [T] on a circle of
    `size` pixels: float [T, size] in [0, 1]. Sub-pixel positions give sub-pixel motion."""
    x = np.arange(size, dtype=np.float64) + 0.5
    d = np.mod(x[None, :] - center[:, None] + size / 2.0, size) - size / 2.0  # wrapped distance
    return np.clip(side / 2.0 + 0.5 - np.abs(d), 0.0, 1.0)


def _static_mask(rng: np.random.Generator, length: int, event: Optional[Tuple[int, int]]) -> np.ndarray:
    """bool [L]: True where the frame freezes (repeats frame t-1). Alternating dynamic / static runs;
    the event window and frame 0 always stay dynamic."""
    frozen = np.zeros(length, dtype=bool)
    max_static = int(rng.integers(8, 33))  # per video, so the static fraction varies between videos
    t, static = 1, bool(rng.integers(0, 2))
    while t < length:
        run = int(rng.integers(4, max_static + 1)) if static else int(rng.integers(4, 17))
        frozen[t : t + run] = static
        t, static = t + run, not static
    if event is not None:
        frozen[event[0] : event[1]] = False
    return frozen


def render_video(
    rng: np.random.Generator,
    *,
    variant: str,
    label: str,
    size: int,
    min_frames: int,
    max_frames: int,
    event_fraction: Tuple[float, float],
    num_distractors: Tuple[int, int],
    noise: float,
    event_speed: float = 2.0,
) -> RenderedVideo:
    """Render one video for class `label` (a name from :func:`class_names`) from the generator `rng`.

    The object moves along its class direction with a trapezoidal speed profile over the window, peaking at
    ``event_speed * size/32`` px per frame (the distractors move at 0.4-0.9 ``size/32`` px per frame).
    """
    S = size
    L = int(rng.integers(min_frames, max_frames + 1))
    has_event = not (variant == "binary" and label == "no_event")
    w = max(2, int(round(rng.uniform(*event_fraction) * L)))
    w = min(w, L)
    s = int(rng.integers(0, L - w + 1))
    event = (s, s + w) if has_event else None
    if variant == "appearance":
        return _render_appearance(rng, label, S, L, (s, s + w), num_distractors, noise)
    if variant in ("textured", "order"):
        return _render_textured(rng, variant, label, S, L, (s, s + w), num_distractors, noise)
    if variant == "binary":
        direction = tuple(DIRECTIONS)[int(rng.integers(0, len(DIRECTIONS)))] if has_event else None
    else:
        direction = label

    frozen = _static_mask(rng, L, event) if variant == "redundancy" else np.zeros(L, dtype=bool)
    dyn, t = _timeline(frozen)
    T = len(t)
    side = S / 8.0
    unit = S / 32.0  # px/frame scale: 2 px at 64x64, 1 px at 32x32

    # Main object: uniform rest position (class-independent), jitter, displacement during the event.
    pos = np.broadcast_to(rng.uniform(0, S, size=2), (T, 2)).copy()  # (y, x) per dynamic frame
    pos += rng.uniform(-0.25 * unit, 0.25 * unit, size=(T, 2))
    speed = np.zeros(L, dtype=np.float64)
    if event is not None:
        shift, speed[s : s + w] = _event_motion(w, int(dyn[s]), T, event_speed * unit)
        pos += shift[:, None] * np.asarray(DIRECTIONS[direction])[None, :]

    img = _background(rng, S, L, t)
    img = _add_distractors(rng, img, t, num_distractors, side, unit)
    img = _composite(img, _square_coverage(pos, side, S), _OBJECT_LEVEL)  # main object on top
    frames = _quantise(rng, img, noise, dyn)
    return RenderedVideo(frames, speed.astype(np.float32), event, direction, float(frozen.mean()))


def _timeline(frozen: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``frozen`` bool [L] -> (``dyn`` [L], index of each frame into the dynamic (simulated) timeline;
    ``t`` float [T], the dynamic times 0..T-1)."""
    dyn = np.cumsum(~frozen) - 1
    return dyn, np.arange(int(dyn[-1]) + 1, dtype=np.float64)


def _event_motion(w: int, ds: int, T: int, peak: float) -> Tuple[np.ndarray, np.ndarray]:
    """Displacement [T] of the main object along its direction for an event of ``w`` frames starting at dynamic
    time ``ds``, and its speed on the window's frames [w] normalised to a peak of 1.

    Trapezoid speed: rises over the first quarter, full speed ``peak`` px/frame in the middle half, falls over
    the last quarter; > 0 on every window frame. (A triangle left the window's edges nearly still, so clips that
    overlap only an edge carried a label without a visible motion and uniform training stalled.) The frame
    wraps (torus), so no cap on the distance is needed to keep the position distribution class-independent.
    (Version 2 moved ~1.1 unit/frame at most, about the distractors' speed: a tiny CNN with uniform clips learnt
    it only after ~40 epochs.) The window holds no frozen frame, so it maps to dynamic times [ds, ds + w).
    """
    k = np.arange(w) + 0.5
    ramp = np.minimum(1.0, np.minimum(k, w - k) / (w / 4.0))
    dist = float(peak * ramp.sum() / ramp.max())
    shift = np.zeros(T)
    shift[ds : ds + w] = np.cumsum(ramp) / ramp.sum() * dist
    shift[ds + w :] = dist
    return shift, ramp / ramp.max()


def _background(rng: np.random.Generator, S: int, L: int, t: np.ndarray) -> np.ndarray:
    """A fixed random gradient plus a slowly drifting global level: float [T, S, S] at dynamic times ``t``."""
    yy, xx = np.mgrid[0:S, 0:S] / S - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    grad = rng.uniform(0.0, 0.15) * (np.cos(theta) * xx + np.sin(theta) * yy)
    period = rng.uniform(1.0, 3.0) * L
    level = rng.uniform(0.15, 0.4) + 0.06 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return level[:, None, None] + grad[None]  # [T, S, S]


def _square_coverage(p: np.ndarray, side: float, S: int) -> np.ndarray:
    """Coverage [T, S, S] of a square of width ``side`` at positions ``p`` [T, 2] (y, x)."""
    return _coverage(p[:, 0], side, S)[:, :, None] * _coverage(p[:, 1], side, S)[:, None, :]


def _composite(img: np.ndarray, cov: np.ndarray, level: float) -> np.ndarray:
    """Alpha-composite an object of grey ``level`` with coverage ``cov`` over ``img``."""
    return img * (1.0 - cov) + cov * level


def _add_distractors(rng: np.random.Generator, img: np.ndarray, t: np.ndarray, num_distractors: Tuple[int, int],
                     side: float, unit: float) -> np.ndarray:
    """Distractors: squares like the main object, moving diagonally for the whole video (class-independent)."""
    S = img.shape[-1]
    for _ in range(int(rng.integers(num_distractors[0], num_distractors[1] + 1))):
        start = rng.uniform(0, S, size=2)
        vel = rng.choice([-1.0, 1.0], size=2) * rng.uniform(0.4, 0.9) * unit
        img = _composite(img, _square_coverage(start[None, :] + t[:, None] * vel[None, :], side, S), _OBJECT_LEVEL)
    return img


def _quantise(rng: np.random.Generator, img: np.ndarray, noise: float, dyn: np.ndarray) -> np.ndarray:
    """Pixel noise, then uint8 grey frames [L, S, S] (dynamic frame ``dyn[i]`` at frame i)."""
    if noise > 0:
        img = img + rng.normal(0.0, noise, size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)[dyn]



def _inside(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of the points (dy, dx), relative to the shape's centre, inside `shape` of half-size `r`
    (cross: a plus sign, arms one third of the width; ring: outer radius r, inner 0.55 r)."""
    if shape == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if shape == "disc":
        return dy * dy + dx * dx <= r * r
    if shape == "cross":
        return ((np.abs(dy) <= r) & (np.abs(dx) <= r / 3)) | ((np.abs(dx) <= r) & (np.abs(dy) <= r / 3))
    if shape == "ring":
        rr = dy * dy + dx * dx
        return (rr <= r * r) & (rr >= (0.55 * r) ** 2)
    raise ValueError(f"shape={shape!r}: choose one of {SHAPES}")

def _shape_coverage(shape: str, center: np.ndarray, side: float, size: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage [S, S] in [0, 1] of a shape of width `side` centred at `center` (y, x) on a torus of
    `size` pixels, from a `supersample` x `supersample` grid per pixel."""
    o = (np.arange(size * supersample, dtype=np.float64) + 0.5) / supersample
    dy = (np.mod(o - center[0] + size / 2.0, size) - size / 2.0)[:, None]  # wrapped distance
    dx = (np.mod(o - center[1] + size / 2.0, size) - size / 2.0)[None, :]
    r = side / 2.0
    inside = _inside(shape, dy, dx, r)
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _render_appearance(
    rng: np.random.Generator, label: str, S: int, L: int, event: Tuple[int, int],
    num_distractors: Tuple[int, int], noise: float,
) -> RenderedVideo:
    """The appearance variant (module docstring): a still object of shape `label` during `event`, frozen
    stretches anywhere, diagonal distractors, drifting background, noise."""
    s, e = event
    frozen = _static_mask(rng, L, None)
    frozen[s] = False  # the object appears on a new frame ...
    if e < L:
        frozen[e] = False  # ... and disappears on one
    dyn, t = _timeline(frozen)
    img = _background(rng, S, L, t)
    img = _add_distractors(rng, img, t, num_distractors, S / 8.0, S / 32.0)

    # the class object: still, on the dynamic frames of the window (frames s and e are dynamic, so no frame
    # outside the window maps to them)
    cov = _shape_coverage(label, rng.uniform(0, S, size=2), S * rng.uniform(0.30, 0.40), S)
    shown = slice(int(dyn[s]), int(dyn[e - 1]) + 1)
    img[shown] = _composite(img[shown], cov, rng.uniform(0.8, 0.95))
    frames = _quantise(rng, img, noise, dyn)
    scores = np.zeros(L, dtype=np.float32)
    scores[s:e] = 1.0
    return RenderedVideo(frames, scores, event, None, float(frozen.mean()))


def _camera(rng: np.random.Generator, L: int, S: int) -> np.ndarray:
    """Camera offset [L, 2] (y, x) in px: a pan at 0.6-1.0 px/frame (x size/32) in a random direction plus a
    slow drift (a sinusoid of 0.5-1.5 px over 1-3 clip lengths, at most 0.3 px/frame for L = 32: the camera
    never stops, so no two frames are the same)."""
    unit = S / 32.0
    t = np.arange(L, dtype=np.float64)[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(0.6, 1.0) * unit * np.array([np.sin(angle), np.cos(angle)])
    amp = rng.uniform(0.5, 1.5, size=2) * unit
    period = rng.uniform(1.0, 3.0, size=2) * L
    return pan[None, :] * t + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi, size=2))


def _textured_background(rng: np.random.Generator, S: int, offset: np.ndarray) -> np.ndarray:
    """A panning background [L, S, S]: mean level 0.15-0.45 plus 3 random gratings (periodic on the torus,
    amplitude <= 0.06 each), seen through the camera `offset` [L, 2]."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    img = np.full((len(offset), S, S), rng.uniform(0.15, 0.45))
    for _ in range(3):
        ky, kx = rng.integers(-3, 4, size=2)
        y, x = yy[None] + offset[:, 0, None, None], xx[None] + offset[:, 1, None, None]  # [L, S, S]
        phase = 2 * np.pi * (ky * y + kx * x) / S
        img += rng.uniform(0.02, 0.06) * np.cos(phase + rng.uniform(0, 2 * np.pi))
    return img


def _textured_object(rng: np.random.Generator, shape: str, S: int, centre: np.ndarray, supersample: int = 4
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """A rotated, textured object of `shape` at positions `centre` [F, 2] (y, x) on the torus: (coverage
    [F, S, S] in [0, 1], grey level [F, S, S]). Width 25-45 % of the frame, random rotation; the texture is a
    grating at a random angle and period, grey between two random levels in 0.55-0.95 (it moves with the
    object)."""
    side = S * rng.uniform(0.25, 0.45)
    rot = rng.uniform(0, np.pi / 2)
    o = (np.arange(S * supersample, dtype=np.float64) + 0.5) / supersample
    dy = np.mod(o[None, :, None] - centre[:, 0, None, None] + S / 2.0, S) - S / 2.0  # [F, S*ss, 1]
    dx = np.mod(o[None, None, :] - centre[:, 1, None, None] + S / 2.0, S) - S / 2.0  # [F, 1, S*ss]
    v = np.cos(rot) * dy + np.sin(rot) * dx  # object coordinates
    u = -np.sin(rot) * dy + np.cos(rot) * dx
    r = side / 2.0
    inside = _inside(shape, v, u, r)
    tex_angle, period = rng.uniform(0, np.pi), rng.uniform(2.5, 6.0) * S / 32.0
    grating = 0.5 + 0.5 * np.cos(2 * np.pi * (np.cos(tex_angle) * v + np.sin(tex_angle) * u) / period)
    lo, hi = np.sort(rng.uniform(0.55, 0.95, size=2))
    f = len(centre)
    cov = inside.reshape(f, S, supersample, S, supersample).mean(axis=(2, 4))
    level = (lo + (hi - lo) * grating).reshape(f, S, supersample, S, supersample).mean(axis=(2, 4))
    return cov, level


def _render_textured(
    rng: np.random.Generator, variant: str, label: str, S: int, L: int, event: Tuple[int, int],
    num_distractors: Tuple[int, int], noise: float,
) -> RenderedVideo:
    """The textured and order variants (module docstring): a panning, drifting textured scene with noise on
    every frame and no frozen frame; a textured, rotated object of the class shape during `event` (textured),
    or a disc and a cross one after the other in the class order, each for half of `event` (order)."""
    s, e = event
    cam = _camera(rng, L, S)
    img = _textured_background(rng, S, cam)
    img = _add_distractors(rng, img, np.arange(L, dtype=np.float64), num_distractors, S / 8.0, S / 32.0)
    if variant == "textured":
        parts = [(label, s, e)]
    else:
        first, second = ("disc", "cross") if label == "disc_then_cross" else ("cross", "disc")
        mid = s + (e - s) // 2
        parts = [(first, s, mid), (second, mid, e)]
    for shape, a, b in parts:
        if b <= a:
            continue
        # still in the scene (it moves with the camera) plus a small own jitter
        centre = rng.uniform(0, S, size=2)[None, :] - cam[a:b] + rng.uniform(-0.3, 0.3, size=(b - a, 2)) * S / 32.0
        cov, level = _textured_object(rng, shape, S, centre)
        img[a:b] = img[a:b] * (1.0 - cov) + cov * level
    frames = _quantise(rng, img, noise, np.arange(L))
    scores = np.zeros(L, dtype=np.float32)
    scores[s:e] = 1.0
    return RenderedVideo(frames, scores, event, None, 0.0)


# --------------------------------------------------------------------------------------------------
# Encoding and files


def _grey_to_yuv420p(grey: np.ndarray) -> np.ndarray:
    """Grey uint8 [H, W] -> the planar yuv420p layout PyAV takes, uint8 [H * 3 / 2, W] (H, W even).

    Y is the BT.601 limited-range luma of a grey pixel, ``16 + 219 * g / 255`` rounded to nearest; chroma is the
    neutral 128. This is what swscale's rgb24 -> yuv420p conversion gives for grey (it differs by one level at
    g = 39, from its fixed-point rounding), computed here in numpy so that the encoded bytes depend on nothing
    but these frames.
    """
    h, w = grey.shape
    out = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
    out[:h] = (grey.astype(np.int32) * 438 + 255) // 510 + 16  # rint(16 + 219 g / 255), exact in integers
    return out


def _encode(path: str, frames: np.ndarray, fps: int) -> int:
    """Write grey frames uint8 [L, H, W] as H.264 yuv420p; returns the number of frames muxed.

    Deterministic: the same frames give the same bytes in any process, whatever ran before or beside it
    (single-threaded x264 without mbtree, and no colour conversion inside FFmpeg: frames go in as yuv420p).
    """
    tmp = path + ".part"
    written = 0
    with av.open(tmp, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = _GOP
        stream.codec_context.thread_count = 1
        # Determinism: one x264 thread, and no macroblock-tree rate control. With mbtree on, the first P/B
        # packets of a GOP of these tiny frames changed from process to process (3 of 6 encodes of one video
        # differed, threads=1 or not): an uninitialised read in x264's lookahead, it seems. With mbtree=0 the
        # bytes were identical in 20 of 20 processes under load. scenecut=0: regular keyframes.
        stream.options = {
            "crf": str(_CRF), "preset": "veryfast", "threads": "1",
            "x264-params": f"scenecut=0:keyint_min={_GOP}:mbtree=0",
        }
        stream.codec_context.time_base = Fraction(1, fps)
        for i, grey in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(_grey_to_yuv420p(grey), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
                written += 1
        for packet in stream.encode():
            container.mux(packet)
            written += 1
    os.replace(tmp, path)
    return written


def _video_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([_SEED_SALT, int(seed), _SPLIT_CODE[split], int(index)])


def _split_labels(params: _Params, split: str, count: int) -> List[str]:
    """Balanced labels (counts differ by at most 1), in a seeded random order."""
    names = class_names(params.variant, params.num_classes)
    idx = np.arange(count) % len(names)
    rng = np.random.default_rng(np.random.SeedSequence([_SEED_SALT, params.seed, _SPLIT_CODE[split], 2**31]))
    return [names[i] for i in rng.permutation(idx)]


def _make_one(job) -> dict:
    """Render, encode and save one video; returns its manifest row. Top level so a process pool can run it."""
    root, split, index, label, params = job
    rng = np.random.default_rng(_video_seed(params["seed"], split, index))
    video = render_video(
        rng, variant=params["variant"], label=label, size=params["size"], min_frames=params["min_frames"],
        max_frames=params["max_frames"], event_fraction=tuple(params["event_fraction"]),
        num_distractors=tuple(params["num_distractors"]), noise=params["noise"],
        event_speed=params.get("event_speed", 2.0),
    )
    name = f"{split}_{index:05d}"
    rel_video = f"videos/{split}/{name}.mp4"
    rel_scores = f"scores/{split}/{name}.npy"
    written = _encode(os.path.join(root, rel_video), video.frames, params["fps"])
    if written != len(video.frames):
        raise RuntimeError(
            f"{os.path.join(root, rel_video)}: the encoder muxed {written} packets for {len(video.frames)} frames; "
            "this PyAV/x264 build drops or merges frames, report it with `python -c 'import av; print(av.__version__)'`"
        )
    np.save(os.path.join(root, rel_scores), video.scores)
    row = {
        "path": rel_video,
        "label": label,
        "num_frames": len(video.frames),
        "event_start": "" if video.event is None else video.event[0],
        "event_end": "" if video.event is None else video.event[1],
        "frame_scores": rel_scores,
    }
    if params["variant"] in ("redundancy", "appearance"):
        row["static_fraction"] = f"{video.static_fraction:.4f}"
    return row


def _columns(variant: str) -> List[str]:
    cols = ["path", "label", "num_frames", "event_start", "event_end", "frame_scores"]
    return cols + ["static_fraction"] if variant in ("redundancy", "appearance") else cols


def _remove_previous(root: str) -> None:
    """Remove only the files this generator writes (never anything else under root)."""
    for split in SPLITS:
        for sub, ext in (("videos", ".mp4"), ("scores", ".npy")):
            folder = os.path.join(root, sub, split)
            if os.path.isdir(folder):
                for f in os.listdir(folder):
                    if f.startswith(split + "_") and (f.endswith(ext) or f.endswith(ext + ".part")):
                        os.remove(os.path.join(folder, f))
        manifest = os.path.join(root, split + ".csv")
        if os.path.exists(manifest):
            os.remove(manifest)


def _default_workers(total: int) -> int:
    # A pool only pays off beyond a handful of videos.
    return 0 if total < 16 else min(4, os.cpu_count() or 1)


def generate_dataset(
    root: str,
    *,
    variant: str = "multiclass",
    num_train: int = 160,
    num_val: int = 80,
    num_test: int = 80,
    seed: int = 0,
    size: int = 64,
    min_frames: int = 64,
    max_frames: int = 192,
    event_fraction: Sequence[float] = (0.10, 0.20),
    num_classes: int = 4,
    num_distractors: Sequence[int] = (1, 2),
    noise: float = 0.03,
    fps: int = 25,
    event_speed: float = 2.0,
    progress: bool = True,
    overwrite: bool = False,
    num_workers: Optional[int] = None,
) -> Dict[str, str]:
    """Write a synthetic dataset under `root`; returns ``{"train": csv, "val": csv, "test": csv}``.

    Args:
        variant: ``"multiclass"`` | ``"binary"`` | ``"redundancy"`` | ``"appearance"`` | ``"textured"`` |
            ``"order"`` (module docstring).
        num_train / num_val / num_test: videos per split (labels balanced within each split).
        seed: everything (lengths, windows, positions, noise, label order) follows from it; video ``i``
            of a split is seeded from ``(seed, split, i)``, so results do not depend on `num_workers`.
        size: frame height = width in pixels (even). min_frames / max_frames: video length range (frames).
        event_fraction: (low, high) fraction of the video covered by the event window.
        num_classes: number of classes (2–4): motions for multiclass/redundancy, shapes for appearance and
            textured; ignored by binary and order (2 classes).
        num_distractors: (low, high) inclusive number of diagonally moving distractor squares per video.
        noise: std of Gaussian pixel noise in grey levels / 255. fps: frame rate stored in the files.
        event_speed: peak speed of the event's motion in units of ``size/32`` px per frame.
        progress: show a tqdm bar. overwrite: replace an existing dataset under `root` (only the files
            this generator writes are removed). num_workers: processes (0 = in this process; None = auto).

    Raises:
        FileExistsError: `root` already holds a dataset and `overwrite` is False.
    """
    params = _make_params(
        variant, num_train, num_val, num_test, seed, size, min_frames, max_frames, event_fraction,
        num_classes, num_distractors, noise, fps, event_speed,
    )
    info_path = os.path.join(root, "dataset.json")
    _clear_root(root, info_path, overwrite)
    counts = {"train": params.num_train, "val": params.num_val, "test": params.num_test}
    pjson = params.to_json()
    jobs = [
        (root, split, i, label, pjson)
        for split in SPLITS
        for i, label in enumerate(_split_labels(params, split, counts[split]))
    ]
    workers = _default_workers(len(jobs)) if num_workers is None else int(num_workers)
    t0 = time.perf_counter()
    rows = _make_all(jobs, workers, progress, desc=f"synthetic {variant} videos")
    elapsed = time.perf_counter() - t0
    paths = _write_manifests(root, rows, counts, _columns(params.variant))
    _write_info(info_path, params, counts, rows, elapsed, workers)  # last: its presence means the dataset is complete
    return paths


def _write_info(path: str, params: _Params, counts: Dict[str, int], rows: List[dict], elapsed: float,
                workers: int) -> None:
    """``dataset.json``: generator version, parameters, classes, counts; written atomically (through ``.part``)."""
    info = {
        "generator": "lightning_temporal.data.synthetic",
        "version": GENERATOR_VERSION,
        "params": params.to_json(),
        "classes": list(class_names(params.variant, params.num_classes)),
        "counts": counts,
        "num_frames_total": int(sum(r["num_frames"] for r in rows)),
        "generation_seconds": round(elapsed, 2),
        "num_workers": workers,
    }
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, path)


def _clear_root(root: str, info_path: str, overwrite: bool) -> None:
    """Refuse an existing dataset unless ``overwrite``; remove what a previous run wrote; make the folders."""
    existing = [p for p in [info_path] + [os.path.join(root, f"{s}.csv") for s in SPLITS] if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(
            f"{root}: already holds a dataset ({', '.join(os.path.basename(p) for p in existing)}); pass "
            "overwrite=True to replace it, or call ensure_dataset(...) to reuse it when the parameters match"
        )
    if os.path.exists(info_path):
        os.remove(info_path)  # first: an interrupted run must not look complete
    _remove_previous(root)
    for split in SPLITS:
        os.makedirs(os.path.join(root, "videos", split), exist_ok=True)
        os.makedirs(os.path.join(root, "scores", split), exist_ok=True)


def _make_all(jobs: List[tuple], workers: int, progress: bool, desc: str) -> List[dict]:
    """Run :func:`_make_one` on every job (in a process pool when ``workers > 0``); the rows in job order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="video", disable=not progress)
    rows: List[dict] = []
    try:
        if workers > 0 and len(jobs) > 1:
            # fork where the platform has it: spawn/forkserver re-import the caller's __main__, which breaks
            # plain scripts without an `if __name__ == "__main__"` guard. The worker only runs numpy
            # elementwise code and single-threaded x264 (no OpenMP/BLAS), so threads the caller holds
            # (torch) cannot deadlock it; Python >= 3.12 warns about forking a threaded process anyway.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
                    for row in pool.map(_make_one, jobs, chunksize=4):
                        rows.append(row)
                        bar.update(1)
        else:
            for job in jobs:
                rows.append(_make_one(job))
                bar.update(1)
    finally:
        bar.close()
    return rows


def _write_manifests(root: str, rows: List[dict], counts: Dict[str, int], cols: List[str]) -> Dict[str, str]:
    """One CSV per split under ``root`` from the rows in split order; ``{split: path}``."""
    paths = {}
    offset = 0
    for split in SPLITS:
        path = os.path.join(root, f"{split}.csv")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows[offset : offset + counts[split]])
        offset += counts[split]
        paths[split] = path
    return paths


def _matches(root: str, params: _Params) -> bool:
    info_path = os.path.join(root, "dataset.json")
    try:
        with open(info_path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    if info.get("version") != GENERATOR_VERSION or info.get("params") != params.to_json():
        return False
    for split in SPLITS:
        manifest = os.path.join(root, f"{split}.csv")
        if not os.path.exists(manifest):
            return False
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        if len(rows) != info["counts"][split]:
            return False
        for r in rows:  # a deleted file means the copy is damaged: regenerate
            if not (os.path.exists(os.path.join(root, r["path"])) and os.path.exists(os.path.join(root, r["frame_scores"]))):
                return False
    return True


def ensure_dataset(root: str, *, progress: bool = True, num_workers: Optional[int] = None, **params) -> Dict[str, str]:
    """Return the manifests of the dataset under `root`, generating it only if needed.

    An existing dataset is reused when its ``dataset.json`` records the same generator version and the
    same parameters (same keyword arguments as :func:`generate_dataset`, defaults filled in) and all its
    files are present; otherwise it is regenerated in place (``overwrite=True``).
    """
    if "overwrite" in params:
        raise TypeError("ensure_dataset takes no `overwrite`: it regenerates exactly when the parameters differ")
    full = dict(_GENERATE_DEFAULTS)
    unknown = set(params) - set(full)
    if unknown:
        raise TypeError(f"ensure_dataset: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(full)}")
    full.update(params)
    p = _make_params(**full)
    if _matches(root, p):
        return {split: os.path.join(root, f"{split}.csv") for split in SPLITS}
    return generate_dataset(root, **full, progress=progress, overwrite=True, num_workers=num_workers)


_GENERATE_DEFAULTS = dict(
    variant="multiclass", num_train=160, num_val=80, num_test=80, seed=0, size=64, min_frames=64,
    max_frames=192, event_fraction=(0.10, 0.20), num_classes=4, num_distractors=(1, 2), noise=0.03, fps=25,
    event_speed=2.0,
)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m lightning_temporal.data.synthetic ROOT [--variant ...]``: generate (or reuse) a dataset."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    for k, v in _GENERATE_DEFAULTS.items():
        if isinstance(v, tuple):
            ap.add_argument(f"--{k}", type=type(v[0]), nargs=2, default=v)
        else:
            ap.add_argument(f"--{k}", type=type(v), default=v)
    ap.add_argument("--num_workers", type=int, default=None)
    args = vars(ap.parse_args(argv))
    root, workers = args.pop("root"), args.pop("num_workers")
    t0 = time.perf_counter()
    paths = ensure_dataset(root, num_workers=workers, **args)
    print(json.dumps({"manifests": paths, "seconds": round(time.perf_counter() - t0, 2)}, indent=2))


if __name__ == "__main__":
    main()
