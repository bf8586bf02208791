"""Pixels for synthetic scenes: per-identity textures, a textured background, opaque occluders.

Each identity gets a canonical texture (head, patterned shirt, trousers) that is resized onto its
box every frame, so a CNN sees the same clothes at every scale, as it would on real pedestrians.
Identities come in look-alike pairs (same shirt, different trousers or stripes) so appearance
matching is exercised, not just trivially solved by colour.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

TEXTURE_HEIGHT = 120
TEXTURE_WIDTH = 48

SOLID, HORIZONTAL_STRIPES, VERTICAL_STRIPES, CHECKS, CHEST_BLOCK = range(5)
NUM_SHIRT_PATTERNS = 5

# Typical trouser colours (BGR): black, navy, denim, grey, khaki, brown, olive, dark red.
TROUSER_PALETTE = np.array(
    [
        [30, 30, 30],
        [90, 40, 20],
        [150, 100, 60],
        [120, 120, 120],
        [120, 170, 190],
        [40, 70, 110],
        [50, 110, 90],
        [40, 30, 130],
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class Appearance:
    """What one synthetic person wears; colours are BGR."""

    shirt: tuple[int, int, int]
    shirt_accent: tuple[int, int, int]
    shirt_pattern: int
    stripe_period: int
    trousers: tuple[int, int, int]
    trouser_stripes: bool
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]


def _hsv_to_bgr(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """[N] OpenCV HSV (hue 0-180, saturation/value 0-255) to [N, 3] uint8 BGR."""
    hsv = np.stack([hue, saturation, value], axis=-1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]


def _color(row: np.ndarray) -> tuple[int, int, int]:
    return (int(row[0]), int(row[1]), int(row[2]))


def random_appearances(
    rng: np.random.Generator, count: int, similar_fraction: float
) -> list[Appearance]:
    """`count` identities with stratified shirt hues; a fraction are look-alikes of another one."""
    hue = (rng.permutation(count) + rng.uniform(0.1, 0.9, count)) * (180.0 / max(count, 1))
    shirts = _hsv_to_bgr(hue, rng.uniform(120, 255, count), rng.uniform(110, 255, count))
    accent_hue = (hue + rng.uniform(40, 140, count)) % 180
    accents = _hsv_to_bgr(accent_hue, rng.uniform(60, 255, count), rng.uniform(60, 255, count))
    trouser_rows = rng.integers(0, len(TROUSER_PALETTE), count)
    skins = _hsv_to_bgr(
        rng.uniform(5, 20, count), rng.uniform(60, 150, count), rng.uniform(120, 235, count)
    )
    hairs = _hsv_to_bgr(
        rng.uniform(5, 25, count), rng.uniform(30, 200, count), rng.uniform(20, 120, count)
    )
    patterns = rng.integers(0, NUM_SHIRT_PATTERNS, count)
    periods = rng.integers(4, 12, count)
    trouser_stripes = rng.random(count) < 0.25
    appearances = [
        Appearance(
            shirt=_color(shirts[i]),
            shirt_accent=_color(accents[i]),
            shirt_pattern=int(patterns[i]),
            stripe_period=int(periods[i]),
            trousers=_color(TROUSER_PALETTE[trouser_rows[i]]),
            trouser_stripes=bool(trouser_stripes[i]),
            skin=_color(skins[i]),
            hair=_color(hairs[i]),
        )
        for i in range(count)
    ]
    # Look-alikes: copy the shirt of an earlier identity, change trousers and stripe width.
    num_similar = round(similar_fraction * count / 2)
    for pair in range(min(num_similar, count // 2)):
        source, target = 2 * pair, 2 * pair + 1
        other_trousers = (trouser_rows[source] + 1 + rng.integers(0, len(TROUSER_PALETTE) - 1)) % (
            len(TROUSER_PALETTE)
        )
        appearances[target] = replace(
            appearances[source],
            trousers=_color(TROUSER_PALETTE[other_trousers]),
            stripe_period=int(appearances[source].stripe_period + rng.integers(3, 6)),
            skin=appearances[target].skin,
            hair=appearances[target].hair,
        )
    return appearances


def person_texture(appearance: Appearance) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (TEXTURE_HEIGHT x TEXTURE_WIDTH) BGR image of one person, and its opacity mask."""
    h, w = TEXTURE_HEIGHT, TEXTURE_WIDTH
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    image = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), bool)

    head_end, shirt_end = int(0.16 * h), int(0.56 * h)
    head_cy, head_ry, head_rx = 0.08 * h, 0.08 * h, 0.2 * w
    head = ((rows - head_cy) / head_ry) ** 2 + ((cols - w / 2) / head_rx) ** 2 <= 1.0
    hair = head & (rows < head_cy - 0.02 * h)
    image[head] = appearance.skin
    image[hair] = appearance.hair
    mask |= head

    shirt = (rows >= head_end) & (rows < shirt_end) & np.ones((1, w), bool)
    period = max(appearance.stripe_period, 2)
    pattern = appearance.shirt_pattern
    if pattern == HORIZONTAL_STRIPES:
        accent = (rows // period) % 2 == 1
    elif pattern == VERTICAL_STRIPES:
        accent = (cols // period) % 2 == 1
    elif pattern == CHECKS:
        accent = (rows // period + cols // period) % 2 == 1
    elif pattern == CHEST_BLOCK:
        accent = (rows >= int(0.24 * h)) & (rows < int(0.38 * h))
        accent = accent & (cols >= int(0.3 * w)) & (cols < int(0.7 * w))
    else:
        accent = np.zeros((h, w), bool)
    accent = np.broadcast_to(accent, (h, w))
    image[shirt] = appearance.shirt
    image[shirt & accent] = appearance.shirt_accent
    mask |= shirt

    legs = (rows >= shirt_end) & ~((rows >= int(0.7 * h)) & (np.abs(cols - (w - 1) / 2) < 0.07 * w))
    image[legs] = appearance.trousers
    if appearance.trouser_stripes:
        side = legs & ((cols < int(0.1 * w)) | (cols >= w - int(0.1 * w)))
        image[side] = appearance.shirt_accent
    mask |= legs

    # Cylindrical shading: edges darker than the middle, so boxes do not look like flat stickers.
    shade = 0.75 + 0.25 * np.sin(np.pi * (cols + 0.5) / w)
    image = (image.astype(np.float32) * shade[..., None]).astype(np.uint8)
    return image, mask


def draw_person(
    frame: np.ndarray, texture: np.ndarray, mask: np.ndarray, box_xyxy: np.ndarray
) -> None:
    """Resize one canonical texture onto its box (clipped to the frame), in place."""
    x1, y1, x2, y2 = (round(float(v)) for v in box_xyxy)
    box_w, box_h = x2 - x1, y2 - y1
    frame_h, frame_w = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, frame_w), min(y2, frame_h)
    if box_w < 2 or box_h < 2 or cx1 >= cx2 or cy1 >= cy2:
        return
    resized = cv2.resize(texture, (box_w, box_h), interpolation=cv2.INTER_LINEAR)
    resized_mask = cv2.resize(
        mask.view(np.uint8), (box_w, box_h), interpolation=cv2.INTER_NEAREST
    ).astype(bool)
    window = (slice(cy1 - y1, cy2 - y1), slice(cx1 - x1, cx2 - x1))
    np.copyto(frame[cy1:cy2, cx1:cx2], resized[window], where=resized_mask[window][..., None])


def make_background(
    rng: np.random.Generator, width: int, height: int, floor_start: int
) -> np.ndarray:
    """A wall with posters above `floor_start` and a perspective tiled floor below it."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    background = np.empty((height, width, 3), np.float32)

    wall_color = rng.uniform(150, 210, 3).astype(np.float32)
    wall_gradient = 0.85 + 0.15 * (rows[:floor_start] / max(floor_start, 1))
    background[:floor_start] = wall_color * wall_gradient[..., None]
    for _ in range(int(rng.integers(3, 7))):
        poster_w = int(rng.uniform(0.04, 0.12) * width)
        poster_h = int(rng.uniform(0.25, 0.6) * floor_start)
        px = int(rng.uniform(0, width - poster_w))
        py = int(rng.uniform(0.05, 0.9) * (floor_start - poster_h))
        background[py : py + poster_h, px : px + poster_w] = rng.uniform(40, 230, 3)

    # Floor tiles in perspective: tile coordinates are x/depth and 1/depth from a vanishing line.
    vanishing_row = floor_start - 0.25 * height
    depth = np.maximum(rows[floor_start:] - vanishing_row, 1.0)
    tile_u = (cols - width / 2) / depth * 2.2
    tile_v = 0.25 * height / depth * 6.0
    checker = (np.floor(tile_u) + np.floor(tile_v)).astype(np.int64) % 2
    floor_dark = rng.uniform(70, 110, 3).astype(np.float32)
    floor_light = floor_dark + rng.uniform(25, 50, 3).astype(np.float32)
    background[floor_start:] = np.where(checker[..., None] == 1, floor_light, floor_dark)

    background += rng.normal(0.0, 5.0, (height, width, 1)).astype(np.float32)
    return np.clip(background, 0, 255).astype(np.uint8)


def make_occluder_patch(
    rng: np.random.Generator, width: int, height: int, pillar: bool
) -> np.ndarray:
    """Opaque grey concrete pillar (shaded edges) or a low brick-coloured wall."""
    cols = np.arange(width, dtype=np.float32)[None, :]
    rows = np.arange(height, dtype=np.float32)[:, None]
    if pillar:
        base = rng.uniform(95, 140)
        shade = 0.7 + 0.3 * np.sin(np.pi * (cols + 0.5) / width)
        patch = np.broadcast_to(base * shade, (height, width))[..., None] * np.ones(3, np.float32)
    else:
        base_color = np.array([70, 90, 150], np.float32) * rng.uniform(0.8, 1.1)
        mortar = (rows % 14 < 2) | ((cols + 20 * ((rows // 14) % 2)) % 40 < 2)
        patch = np.where(mortar[..., None], np.float32(180), base_color)
    patch = patch + rng.normal(0.0, 4.0, (height, width, 1)).astype(np.float32)
    return np.clip(patch, 0, 255).astype(np.uint8)
