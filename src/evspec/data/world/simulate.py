"""Event-camera simulation from rendered luminance frames (the ESIM-style pixel model).

Each pixel keeps a reference log intensity ``ref`` (initialised from the first frame).
Between two internal frames the log intensity is taken to change linearly in time.  While
``log I - ref`` reaches ``+C_on`` (``-C_off``) the pixel emits an ON (OFF) event and moves
``ref`` by one threshold, so a change spanning several thresholds emits several events.
Each event's timestamp is the time at which the linear path crosses its level::

    level_j = ref + j * C            (j = 1 .. n,  n = floor((log I_k - ref) / C))
    t_j     = t_{k-1} + (level_j - log I_{k-1}) / (log I_k - log I_{k-1}) * (t_k - t_{k-1})

Polarity 1 = brighter (ON), 0 = darker (OFF).  Only luminance enters, so events carry no
colour; a pixel whose intensity does not change never fires, hence static objects are
silent unless the camera pans.  Thresholds have a small per-pixel jitter, drawn once per
clip.  Sensor noise is modelled separately (:func:`add_noise`): background-activity
events at a low uniform rate, independent of the scene, so no clip is ever empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventConfig:
    """Contrast threshold ``C`` (log-intensity units) and its per-pixel relative jitter (std)."""

    contrast_threshold: float = 0.2
    threshold_jitter: float = 0.03
    log_eps: float = 1e-3  # log(I + eps), keeps black pixels finite
    noise_hz: float = 0.02  # background-activity events per pixel per second (0 = none)

    def __post_init__(self) -> None:
        if not 0.01 <= self.contrast_threshold <= 2.0:
            raise ValueError(
                f"EventConfig.contrast_threshold = {self.contrast_threshold}; use a value in "
                "[0.01, 2] (real sensors: 0.1-0.5)"
            )
        if not 0.0 <= self.threshold_jitter <= 0.3:
            raise ValueError(
                f"EventConfig.threshold_jitter = {self.threshold_jitter}; use a relative std in "
                "[0, 0.3]"
            )
        if not 0.0 <= self.noise_hz <= 10.0:
            raise ValueError(
                f"EventConfig.noise_hz = {self.noise_hz}; use a per-pixel rate in [0, 10] Hz "
                "(real sensors: ~0.01-1)"
            )
        if self.log_eps <= 0:
            raise ValueError(f"EventConfig.log_eps = {self.log_eps} must be > 0")


@dataclass(frozen=True)
class RawEvents:
    """Simulated events, time-ordered: ``x, y`` ``[N]`` uint16, ``t`` ``[N]`` int64 µs,
    ``p`` ``[N]`` uint8.  Ties in ``t`` keep row-major pixel order."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])


def sample_thresholds(
    rng: np.random.Generator, cfg: EventConfig, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ON and OFF thresholds, each ``[H, W]`` float64, ``C (1 + jitter * N(0, 1))``
    clipped to at least ``C / 2``."""
    c = cfg.contrast_threshold
    noise = rng.standard_normal((2, height, width))
    th = np.maximum(c * (1.0 + cfg.threshold_jitter * noise), c / 2.0)
    return th[0], th[1]


def _expand(
    idx: np.ndarray, n: np.ndarray, ref: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One entry per event for pixels ``idx`` ``[F]`` firing ``n`` ``[F]`` times.

    Returns the pixel ``[E]`` and the crossed level ``ref + j * c`` ``[E]``, ``j = 1 .. n``.
    """
    if int(n.max()) == 1:  # the common case: one threshold crossed per step
        return idx, ref + c
    rep = np.repeat(np.arange(len(idx)), n)  # [E] which firing pixel
    first = np.cumsum(n) - n  # [F] offset of each pixel's first event
    j = np.arange(rep.shape[0]) - first[rep] + 1  # [E] 1 .. n
    return idx[rep], ref[rep] + j * c[rep]


def simulate_events(
    luminance: np.ndarray,
    times_us: np.ndarray,
    thresholds: tuple[np.ndarray, np.ndarray],
    cfg: EventConfig = EventConfig(),
) -> RawEvents:
    """Events between consecutive frames of ``luminance`` ``[T, H, W]`` (values > 0) taken at
    ``times_us`` ``[T]`` (int, increasing); ``thresholds`` = (ON ``[H, W]``, OFF ``[H, W]``).
    """
    lum = np.asarray(luminance)
    times = np.asarray(times_us, dtype=np.int64)
    if lum.ndim != 3:
        raise ValueError(f"simulate_events: luminance must be [T, H, W], got shape {lum.shape}")
    n_frames, h, w = lum.shape
    if times.shape != (n_frames,):
        raise ValueError(
            f"simulate_events: times_us must be [T] = [{n_frames}], got shape {times.shape}"
        )
    if n_frames > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("simulate_events: times_us must be strictly increasing")
    c_on = np.asarray(thresholds[0], dtype=np.float32).reshape(-1)  # [P]
    c_off = np.asarray(thresholds[1], dtype=np.float32).reshape(-1)  # [P]
    if c_on.shape[0] != h * w or c_off.shape[0] != h * w:
        raise ValueError(f"simulate_events: thresholds must each be [H, W] = [{h}, {w}]")

    lum2 = lum.reshape(n_frames, -1).astype(np.float32, copy=False)  # [T, P]
    # Only pixels whose intensity changes at all can fire; the rest are skipped entirely.
    active = np.flatnonzero(lum2.max(axis=0) != lum2.min(axis=0))  # [A] pixel index
    if active.size < lum2.shape[1]:
        lum2, c_on, c_off = lum2[:, active], c_on[active], c_off[active]
    log_i = np.log(lum2 + np.float32(cfg.log_eps))  # [T, A] float32
    neg_c_off = -c_off
    ref = log_i[0].copy()  # [A] reference log intensity
    # A pixel can only fire in a step where its intensity changes (|L - ref| < C after each
    # step).  When few pixels change (no camera pan), each step looks at its changed pixels
    # only, from a (step, pixel) list sorted by step; otherwise every active pixel is tested.
    changed_mask = log_i[1:] != log_i[:-1]  # [T-1, A]
    sparse = 4 * int(changed_mask.sum()) < changed_mask.size
    if sparse:
        step_idx, pix_idx = np.nonzero(changed_mask)  # [M] each, sorted by step
        bounds = np.searchsorted(step_idx, np.arange(n_frames)).tolist()  # [T]
    # Phase 1 (sequential in time, minimal work per step): which pixels cross which levels.
    sel_parts, level_parts, step_of_part, size_of_part = [], [], [], []
    for k in range(1, n_frames):
        if sparse:
            changed = pix_idx[bounds[k - 1] : bounds[k]]  # [M_k]
            if changed.size == 0:
                continue
            diff = log_i[k, changed] - ref[changed]  # [M_k]
            hit = np.flatnonzero((diff >= c_on[changed]) | (diff <= neg_c_off[changed]))
            fire = changed[hit]  # [F] pixels firing this step
            d = diff[hit]  # [F]
        else:
            diff = log_i[k] - ref  # [A]
            fire = np.flatnonzero((diff >= c_on) | (diff <= neg_c_off))  # [F]
            d = diff[fire]
        if fire.size == 0:
            continue
        c = np.where(d > 0, c_on[fire], neg_c_off[fire])  # [F] signed threshold
        n = (d / c).astype(np.int64)  # [F] >= 1: thresholds crossed this step
        ref_f = ref[fire]
        sel, level = _expand(fire, n, ref_f, c)  # [E] each
        ref[fire] = ref_f + n * c
        sel_parts.append(sel)
        level_parts.append(level)
        step_of_part.append(k)
        size_of_part.append(sel.shape[0])
    if not sel_parts:
        z = np.zeros(0, dtype=np.uint16)
        return RawEvents(z, z.copy(), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8))
    # Phase 2 (vectorised over all events): interpolate timestamps, polarity from the slope.
    sel = np.concatenate(sel_parts)  # [N] index into the active pixels
    level = np.concatenate(level_parts)  # [N]
    k = np.repeat(np.asarray(step_of_part), size_of_part)  # [N] step (frame k-1 -> k)
    prev, cur = log_i[k - 1, sel], log_i[k, sel]  # [N]
    # |prev - ref| < C before each step, so level lies between prev and cur: frac in (0, 1].
    frac = np.minimum(np.maximum((level - prev) / (cur - prev), 0.0), 1.0)
    t = times[k - 1] + np.rint(frac * (times[k] - times[k - 1])).astype(np.int64)
    p = (cur > prev).astype(np.uint8)  # 1 = ON (brighter)
    pix = active[sel]
    order = np.lexsort((pix, t))  # by time, then row-major pixel (steps never overlap in time)
    pix, t, p = pix[order], t[order], p[order]
    return RawEvents(x=(pix % w).astype(np.uint16), y=(pix // w).astype(np.uint16), t=t, p=p)


def add_noise(
    events: RawEvents,
    rng: np.random.Generator,
    rate_hz: float,
    duration_us: int,
    height: int,
    width: int,
) -> RawEvents:
    """Merge background-activity noise into ``events``: a Poisson number of events
    (``rate_hz`` per pixel per second) at uniform pixels, times in ``[0, duration_us)`` and
    random polarity.  The result stays time-ordered (stable: signal before noise on ties)."""
    n = int(rng.poisson(rate_hz * height * width * duration_us / 1e6)) if rate_hz > 0 else 0
    if n == 0:
        return events
    pix = rng.integers(0, height * width, size=n)  # [n]
    t = np.sort(rng.integers(0, duration_us, size=n).astype(np.int64))  # [n]
    p = rng.integers(0, 2, size=n).astype(np.uint8)
    x = np.concatenate([events.x, (pix % width).astype(np.uint16)])
    y = np.concatenate([events.y, (pix // width).astype(np.uint16)])
    t_all = np.concatenate([events.t, t])
    p_all = np.concatenate([events.p, p])
    order = np.argsort(t_all, kind="stable")
    return RawEvents(x[order], y[order], t_all[order], p_all[order])
