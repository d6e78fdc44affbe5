"""Vectorized rendering of specimen scenes with numpy.

Every specimen is an implicit shape in its own frame: `u` across and `v` along the body, one
unit being about half the body length. A shape function returns an approximate signed distance
(negative inside) in those units; converting it to pixels gives anti-aliased edges without
supersampling. Examples are grouped by family and pattern so each group is one array op.

Determinism: per-pixel math uses only +, -, *, /, sqrt, floor and comparisons (all exactly
rounded in IEEE arithmetic), so a pixel never depends on how examples are batched.
"""

from __future__ import annotations

import numpy as np

from fgjax.data.specimens import taxonomy
from fgjax.data.specimens.scenes import BACKGROUNDS, BORDERS, TEXTURES, Scenes


def _circle(u, v, cu, cv, r):
    return np.sqrt((u - cu) ** 2 + (v - cv) ** 2) - r


def _ellipse(u, v, cu, cv, ru, rv):
    return (np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2) - 1) * min(ru, rv)


def _box(u, v, cu, cv, hu, hv):
    return np.maximum(np.abs(u - cu) - hu, np.abs(v - cv) - hv)


def _polar_lobes(u, v, lobes: int):
    """(radius, cos(lobes * angle)) without trigonometry: the real part of (u + iv)^lobes."""
    re, im = u, v
    for _ in range(lobes - 1):
        re, im = re * u - im * v, re * v + im * u
    r = np.sqrt(u * u + v * v) + 1e-6
    r_power = r
    for _ in range(lobes - 1):
        r_power = r_power * r  # not r**lobes: np.power need not be exactly rounded
    return r, re / r_power


def whorlshell(u, v):
    return np.minimum(_circle(u, v, 0.08, 0.18, 0.72), _circle(u, v, -0.28, -0.55, 0.4))


def shieldbeetle(u, v):
    body = np.minimum(_ellipse(u, v, 0, 0.15, 0.58, 0.78), _circle(u, v, 0, -0.72, 0.24))
    legs = _box(np.abs(u), (v + 1.2) % 0.45, 0.66, 0.225, 0.16, 0.07)  # three pairs of stubs
    return np.minimum(body, np.maximum(legs, np.abs(v - 0.2) - 0.5))


def duskmoth(u, v):
    fore = _ellipse(np.abs(u), v, 0.48, -0.25, 0.5, 0.4)
    hind = _ellipse(np.abs(u), v, 0.36, 0.4, 0.36, 0.3)
    return np.minimum(np.minimum(fore, hind), _ellipse(u, v, 0, 0.05, 0.12, 0.72))


def spearleaf(u, v):
    lens = np.maximum(_circle(u, v, 0.7, 0, 1.1), _circle(u, v, -0.7, 0, 1.1))
    return np.minimum(lens, _box(u, v, 0, 0.88, 0.05, 0.12))


def reeffish(u, v):
    body = _ellipse(u, v, 0, -0.15, 0.46, 0.75)
    tail = np.maximum(np.abs(u) - (v - 0.42) * 0.9, np.maximum(v - 0.98, 0.42 - v))
    tail = np.maximum(tail, -_circle(u, v, 0, 1.05, 0.24))  # the fork
    return np.minimum(body, tail * 0.7)


def domecap(u, v):
    cap = np.maximum(_ellipse(u, v, 0, -0.05, 0.85, 0.62), v - 0.12)
    return np.minimum(cap, _box(u, v, 0, 0.45, 0.2, 0.38))


def spirecrystal(u, v):
    return np.maximum(np.abs(u) - 0.45, (np.abs(v) + 0.8 * np.abs(u) - 0.95) * 0.78)


def brittlestar(u, v):
    r, cos5 = _polar_lobes(v, u, 5)  # (v, u): one arm points along +v
    return (r - 0.3 - 0.65 * ((1 + cos5) / 2) ** 2) * 0.6


def quillfeather(u, v):
    return np.minimum(_ellipse(u, v, 0, -0.1, 0.4, 0.85), _box(u, v, 0, 0.85, 0.04, 0.15))


def starbloom(u, v):
    r, cos3 = _polar_lobes(u, v, 3)
    return (r - 0.45 - 0.5 * cos3 * cos3) * 0.7


SHAPES = (whorlshell, shieldbeetle, duskmoth, spearleaf, reeffish, domecap, spirecrystal,
          brittlestar, quillfeather, starbloom)  # fmt: skip


def marking(pattern: str, u, v, body):
    """Signed distance of the pattern's dark markings (negative inside), or None for "plain".
    `body` is the body's distance, used by the rim."""
    if pattern == "plain":
        return None
    if pattern == "spotted":
        spots = [_circle(u, v, cu, cv, 0.16) for cu, cv in ((0.1, -0.45), (-0.1, 0), (0.1, 0.45))]
        return np.minimum(np.minimum(spots[0], spots[1]), spots[2])
    if pattern == "banded":
        return np.abs(np.abs(v) - 0.33) - 0.1
    if pattern == "striped":
        return np.abs(u) - 0.11
    if pattern == "rimmed":
        return -0.17 - body
    if pattern == "mottled":  # a checkerboard of 0.22-unit cells: 0 on dark cells, 1 on light
        parity = (np.floor(u / 0.22 + 10) + np.floor(v / 0.22 + 10)) % 2
        return parity * 10 - 5
    if pattern == "eyed":
        return _circle(u, v, 0, -0.45, 0.27)
    if pattern == "tipped":
        return 0.45 - v
    raise ValueError(f"unknown pattern {pattern!r}")


def _coverage(distance, pixels_per_unit):
    """Signed distance -> alpha in [0, 1], a one-pixel-wide ramp at the edge."""
    return np.clip(0.5 - distance * pixels_per_unit, 0.0, 1.0)


def _background(scenes: Scenes, resolution: int) -> np.ndarray:
    """f32[B, H, W, 3]: named colour times a texture (plain, gradient, stripes or grain)."""
    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
    x, y = coords[None, None, :], coords[None, :, None]
    t = scenes.texture_dir[:, 0, None, None] * x + scenes.texture_dir[:, 1, None, None] * y
    texture = scenes.texture[:, None, None]
    stripes = np.abs((t * scenes.texture_freq[:, None, None]) % 1.0 - 0.5) * 4 - 1  # triangle
    shade = np.where(texture == TEXTURES.index("gradient"), 1 + 0.3 * t, 1.0)
    shade = shade + np.where(texture == TEXTURES.index("striped"), 0.07 * stripes, 0.0)
    shade = shade + 0.06 * scenes.grain
    colours = np.asarray(list(BACKGROUNDS.values()), np.float32)[scenes.background]
    return shade[..., None].astype(np.float32) * colours[:, None, None, :]


def _local_frame(scenes: Scenes, idx, slot: int, aspect, resolution: int):
    """Pixel centres of examples `idx` in the frame of their specimen `slot`: u, v f32[n, H, W]
    (u divided by the aspect, so slender bodies come out narrower), and pixels per unit."""
    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    column = lambda a: a[idx, slot].reshape(-1, 1, 1)
    cos, sin = column(scenes.rotation[..., 0]), column(scenes.rotation[..., 1])
    dx = coords[None, None, :] - column(scenes.center[..., 0])
    dy = coords[None, :, None] - column(scenes.center[..., 1])
    scale, stretch = column(scenes.scale), aspect[idx].reshape(-1, 1, 1)
    u = (dx * cos + dy * sin) / (scale * stretch)
    v = (dy * cos - dx * sin) / scale
    return u, v, scale * stretch * resolution


def _draw_specimens(canvas, mask, scenes: Scenes, slot: int) -> None:
    """Composites specimen `slot` of every example that has one onto `canvas` and its
    coverage into `mask` (both in place)."""
    classes = [taxonomy.classes()[label] for label in scenes.label]
    family = np.array([c.family for c in classes])
    pattern = np.array([c.pattern for c in classes])
    aspect = np.array([taxonomy.SLENDER_ASPECT if c.form else 1.0 for c in classes], np.float32)
    for f, shape in enumerate(SHAPES):
        idx = np.flatnonzero((family == f) & (scenes.count > slot))
        if idx.size == 0:
            continue
        u, v, pixels_per_unit = _local_frame(scenes, idx, slot, aspect, canvas.shape[1])
        body = shape(u, v)
        colour = np.repeat(scenes.body_rgb[idx, slot, None, None, :], u.shape[1], axis=1)
        colour = np.repeat(colour, u.shape[2], axis=2)
        for p in np.unique(pattern[idx]):
            sub = np.flatnonzero(pattern[idx] == p)
            marks = marking(taxonomy.PATTERNS[p], u[sub], v[sub], body[sub])
            if marks is None:
                continue
            m = _coverage(marks, pixels_per_unit[sub])[..., None]
            if taxonomy.PATTERNS[p] == "mottled":
                m = m * 0.7  # a texture rather than a solid dark area
            colour[sub] = (1 - m) * colour[sub] + m * scenes.mark_rgb[idx[sub], slot, None, None]
        alpha = _coverage(body, pixels_per_unit)
        canvas[idx] = (1 - alpha[..., None]) * canvas[idx] + alpha[..., None] * colour
        mask[idx] = np.maximum(mask[idx], alpha)


def render(scenes: Scenes, resolution: int, with_mask: bool = False):
    """Draws the scenes. Returns images u8[B, H, W, 3] (H = W = resolution), and with
    `with_mask` also the specimens' coverage f32[B, H, W] in [0, 1]."""
    canvas = _background(scenes, resolution)
    mask = np.zeros(canvas.shape[:3], np.float32)
    for slot in range(scenes.center.shape[1]):
        _draw_specimens(canvas, mask, scenes, slot)
    canvas *= scenes.illumination[:, None, None, None]
    width = max(1, round(0.04 * resolution))
    ring = np.ones((resolution, resolution), bool)
    ring[width:-width, width:-width] = False
    border_colours = np.asarray(list(BORDERS.values()), np.float32)
    for b in np.flatnonzero(scenes.border >= 0):
        canvas[b, ring] = border_colours[scenes.border[b]]
    canvas += scenes.noise
    images = np.rint(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)
    return (images, mask) if with_mask else images
