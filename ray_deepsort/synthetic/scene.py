"""Deterministic synthetic camera scenes with ground truth, noisy detections and rendered frames.

People walk on a floor seen by a fixed camera: their box height grows with the row of their feet
(a depth cue), they move with smoothly varying velocities, cross each other, bounce off the
walls or leave the picture, and some walk in later. Opaque pillars hide people completely; a few
people ("occlusion walkers") are scripted to walk slowly behind a pillar so that they are hidden
for at least `min_hidden_frames` consecutive frames: the case DeepSORT's appearance matching is for.

Frame indices in this API are 0-based (`scene.frame(0)` is the first image); MOTChallenge files
are 1-based, so MOT frame `i + 1` is scene frame `i`.

Ground truth uses the MOT16/17 layout `frame,id,x,y,w,h,consider,class,visibility`: every person
whose box overlaps the picture has a row, `visibility` is the fraction of its box that can be
seen (occluders, nearer people and the picture border hide the rest), and `consider` is 0 when
the visibility is below `min_visibility`. Such people are never detected, and MOTChallenge
evaluation ignores `consider == 0` rows, so hidden people are neither misses nor matches.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ray_deepsort.core.detections import Detections
from ray_deepsort.io.mot import DETECTIONS_FILE, GROUND_TRUTH_FILE, SEQINFO_FILE
from ray_deepsort.synthetic.render import (
    draw_person,
    make_background,
    make_occluder_patch,
    person_texture,
    random_appearances,
)

# Raster downscale used to measure visibility (boxes are at least ~24 px wide, so 2 px is ample).
_VISIBILITY_SCALE = 2
# Frames added to min_hidden_frames for scripted walkers (absorbs box and raster rounding).
_HIDDEN_MARGIN_FRAMES = 2
# Frames a scripted walker is fully in view before it starts to disappear behind its pillar.
_VISIBLE_LEAD_FRAMES = 10


@dataclass(frozen=True)
class SceneConfig:
    """Everything that defines a scene; equal configs give bit-identical scenes."""

    seed: int = 0
    num_objects: int = 20
    num_frames: int = 300
    width: int = 960
    height: int = 540
    fps: float = 30.0
    num_occluders: int = 2  # full-height pillars: people behind them are completely hidden
    num_low_walls: int = 1  # low foreground walls: hide the legs of near people (partial)
    occluded_walkers: int = 4  # people scripted to stay fully hidden behind a pillar...
    min_hidden_frames: int = 20  # ...for at least this many consecutive frames
    min_box_height: float = 60.0  # far away (feet high in the picture)
    max_box_height: float = 160.0  # close to the camera (feet at the bottom)
    aspect_ratio: float = 0.4  # width / height of a person box
    speed_range: tuple[float, float] = (1.5, 3.5)  # px/frame for the nearest people
    entering_fraction: float = 0.25  # people who walk in from a side after the start
    bouncing_fraction: float = 0.3  # people who turn back at the picture border
    similar_fraction: float = 0.4  # people with a look-alike (same shirt)
    detection_noise_std: float = 0.03  # box noise, as a fraction of box width/height
    miss_rate: float = 0.05  # chance a visible person is not detected in a frame
    false_positives_per_frame: float = 0.5  # Poisson mean of spurious boxes
    min_visibility: float = 0.3  # below this: not detected and ignored by the metrics
    pixel_noise_std: float = 0.0  # per-frame sensor noise on the rendered image

    def __post_init__(self) -> None:
        if self.num_objects < 0 or self.num_frames < 1:
            raise ValueError("need num_objects >= 0 and num_frames >= 1")
        if self.width < 64 or self.height < 64:
            raise ValueError("frames must be at least 64x64")
        if not 0 < self.min_box_height <= self.max_box_height:
            raise ValueError("need 0 < min_box_height <= max_box_height")
        if not 0.0 <= self.miss_rate <= 1.0:
            raise ValueError("miss_rate must be in [0, 1]")


@dataclass(frozen=True)
class Occluder:
    """An opaque rectangle drawn over everything, `xyxy` in pixels (x2/y2 exclusive)."""

    xyxy: tuple[int, int, int, int]
    pillar: bool


@dataclass(eq=False)
class SyntheticScene:
    """One camera's scene: trajectories, visibility, ground truth, detections and frames."""

    config: SceneConfig
    # Filled in from the config (index = person id - 1, frames 0-based):
    boxes: np.ndarray = field(init=False, repr=False)  # [F, N, 4] float32 xyxy
    present: np.ndarray = field(init=False, repr=False)  # [F, N] bool: box overlaps the picture
    visibility: np.ndarray = field(init=False, repr=False)  # [F, N] float32, 0 where absent
    occluders: list[Occluder] = field(init=False, repr=False)
    occluded_walker_ids: np.ndarray = field(init=False, repr=False)  # ids of scripted walkers

    def __post_init__(self) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        self._floor_row = int(0.38 * cfg.height)
        self._far_row = 0.45 * cfg.height
        self._near_row = 0.98 * cfg.height
        self.occluders = self._place_occluders(rng)
        appearances = random_appearances(rng, cfg.num_objects, cfg.similar_fraction)
        textures = [person_texture(appearance) for appearance in appearances]
        self._textures = [texture for texture, _ in textures]
        self._texture_masks = [mask for _, mask in textures]
        self._background = make_background(rng, cfg.width, cfg.height, self._floor_row)
        self._occluder_patches = [
            make_occluder_patch(rng, o.xyxy[2] - o.xyxy[0], o.xyxy[3] - o.xyxy[1], o.pillar)
            for o in self.occluders
        ]
        feet_x, feet_y, alive = self._simulate(rng)
        heights = self._height_at(feet_y)
        half_widths = 0.5 * cfg.aspect_ratio * heights
        self.boxes = np.stack(
            [feet_x - half_widths, feet_y - heights, feet_x + half_widths, feet_y], axis=-1
        ).astype(np.float32)
        inside = (self.boxes[..., 0] < cfg.width) & (self.boxes[..., 2] > 0)
        self.present = alive & inside
        self.visibility = self._measure_visibility()

    # ----------------------------------------------------------------------------- geometry

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def num_objects(self) -> int:
        return self.config.num_objects

    @property
    def fps(self) -> float:
        return self.config.fps

    def _height_at(self, feet_y: np.ndarray) -> np.ndarray:
        """Box height from the row of the feet: people further away stand higher and are smaller."""
        cfg = self.config
        depth = (feet_y - self._far_row) / (self._near_row - self._far_row)
        return cfg.min_box_height + (cfg.max_box_height - cfg.min_box_height) * depth

    def _feet_row_for_height(self, height: np.ndarray) -> np.ndarray:
        cfg = self.config
        depth = (height - cfg.min_box_height) / max(cfg.max_box_height - cfg.min_box_height, 1e-6)
        return self._far_row + depth * (self._near_row - self._far_row)

    def _place_occluders(self, rng: np.random.Generator) -> list[Occluder]:
        cfg = self.config
        occluders = []
        n = cfg.num_occluders
        for k in range(n):
            center = (0.15 + 0.7 * (k + 0.5) / n + rng.uniform(-0.04, 0.04)) * cfg.width
            width = rng.uniform(0.11, 0.14) * cfg.width
            x1 = max(round(center - width / 2), 0)
            x2 = min(round(center + width / 2), cfg.width)
            occluders.append(Occluder((x1, 0, x2, cfg.height), pillar=True))
        for _ in range(cfg.num_low_walls):
            width = rng.uniform(0.18, 0.28) * cfg.width
            x1 = round(rng.uniform(0.0, cfg.width - width))
            top = round(rng.uniform(0.84, 0.9) * cfg.height)
            x2 = min(round(x1 + width), cfg.width)
            occluders.append(Occluder((x1, top, x2, cfg.height), pillar=False))
        return occluders

    # ----------------------------------------------------------------------------- motion

    def _simulate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feet positions [F, N] (x, y) and an alive mask [F, N], vectorised over people."""
        cfg = self.config
        n, num_frames, width = cfg.num_objects, cfg.num_frames, cfg.width
        pillars = [o for o in self.occluders if o.pillar]
        num_walkers = min(cfg.occluded_walkers, n) if pillars else 0
        order = rng.permutation(n)
        walkers, free = order[:num_walkers], order[num_walkers:]
        self.occluded_walker_ids = np.sort(walkers + 1).astype(np.int64)

        feet_x = np.zeros((num_frames, n), np.float64)
        feet_y = np.zeros((num_frames, n), np.float64)
        alive = np.zeros((num_frames, n), bool)
        frames = np.arange(num_frames, dtype=np.float64)[:, None]

        # Scripted walkers: straight, constant-depth walk through the middle of a pillar at a
        # speed that keeps the box inside the pillar for a bit more than min_hidden_frames: long
        # enough to need appearance, short enough for a default track lifetime (30 frames).
        if num_walkers:
            heights = (
                rng.uniform(0.3, 0.6, num_walkers) * (cfg.max_box_height - cfg.min_box_height)
                + cfg.min_box_height
            )
            widths = cfg.aspect_ratio * heights
            pillar_index = np.arange(num_walkers) % len(pillars)
            pillar_x1 = np.array([pillars[k].xyxy[0] for k in pillar_index], np.float64)
            pillar_x2 = np.array([pillars[k].xyxy[2] for k in pillar_index], np.float64)
            slack = np.maximum(pillar_x2 - pillar_x1 - widths, 1.0)
            hidden_frames = cfg.min_hidden_frames + rng.uniform(
                _HIDDEN_MARGIN_FRAMES, _HIDDEN_MARGIN_FRAMES + 3, num_walkers
            )
            speed = slack / hidden_frames
            direction = np.where(rng.random(num_walkers) < 0.5, -1.0, 1.0)
            # Cross so that the walker is seen in full for a while before and after hiding.
            lead = 0.5 * slack / speed + widths / speed + _VISIBLE_LEAD_FRAMES
            low = np.minimum(lead, num_frames / 2)
            high = np.maximum(num_frames - 1 - lead, num_frames / 2)
            slots = (np.arange(num_walkers) + rng.uniform(0.2, 0.8, num_walkers)) / num_walkers
            crossing = low + (high - low) * slots[rng.permutation(num_walkers)]
            center = 0.5 * (pillar_x1 + pillar_x2)
            feet_x[:, walkers] = center + direction * speed * (frames - crossing)
            feet_y[:, walkers] = self._feet_row_for_height(heights)
            alive[:, walkers] = True

        # Free walkers: Ornstein-Uhlenbeck velocities around a preferred heading.
        m = len(free)
        if m:
            low_speed, high_speed = cfg.speed_range
            heading = np.where(rng.random(m) < 0.5, -1.0, 1.0)
            preferred_vx = heading * rng.uniform(low_speed, high_speed, m)
            preferred_vy = rng.normal(0.0, 0.25, m) * np.abs(preferred_vx)
            entering = rng.random(m) < cfg.entering_fraction
            bouncing = rng.random(m) < cfg.bouncing_fraction
            start = np.where(entering, rng.integers(0, max(int(0.6 * num_frames), 1), m), 0)
            y = rng.uniform(self._far_row, self._near_row, m)
            half_w = 0.5 * cfg.aspect_ratio * self._height_at(y)
            x = np.where(
                entering,
                np.where(preferred_vx > 0, 1.0 - half_w, width - 1.0 + half_w),
                rng.uniform(0.05, 0.95, m) * width,
            )
            vx, vy = preferred_vx.copy(), preferred_vy.copy()
            exited = np.zeros(m, bool)
            theta, sigma = 0.04, 0.06
            noise = rng.normal(0.0, 1.0, (num_frames, 2, m))
            for t in range(num_frames):
                active = (t >= start) & ~exited
                feet_x[t, free], feet_y[t, free], alive[t, free] = x, y, active
                scale = self._height_at(y) / cfg.max_box_height
                vx = vx + theta * (preferred_vx - vx) + sigma * noise[t, 0]
                vy = vy + theta * (preferred_vy - vy) + 0.5 * sigma * noise[t, 1]
                x = np.where(active, x + vx * scale, x)
                y = np.where(active, y + vy * scale, y)
                # Depth limits: walk back (reflect position, heading and velocity).
                for limit, outward in (
                    (self._far_row, y < self._far_row),
                    (self._near_row, y > self._near_row),
                ):
                    y = np.where(outward, 2 * limit - y, y)
                    vy = np.where(outward, -vy, vy)
                    preferred_vy = np.where(outward, -preferred_vy, preferred_vy)
                half_w = 0.5 * cfg.aspect_ratio * self._height_at(y)
                turn = bouncing & (
                    ((x - half_w < 0) & (vx < 0)) | ((x + half_w > width) & (vx > 0))
                )
                vx = np.where(turn, -vx, vx)
                preferred_vx = np.where(turn, -preferred_vx, preferred_vx)
                gone = ((x + half_w < 0) & (vx < 0)) | ((x - half_w > width) & (vx > 0))
                exited |= active & gone & ~bouncing
        return feet_x, feet_y, alive

    def _measure_visibility(self) -> np.ndarray:
        """Visible fraction of each box: paint boxes far-to-near, then occluders, count pixels."""
        cfg, s = self.config, _VISIBILITY_SCALE
        raster_h, raster_w = -(-cfg.height // s), -(-cfg.width // s)
        raster_boxes = np.round(self.boxes / s).astype(np.int64)
        areas = np.maximum(
            (raster_boxes[..., 2] - raster_boxes[..., 0])
            * (raster_boxes[..., 3] - raster_boxes[..., 1]),
            1,
        )
        clipped = raster_boxes.copy()
        clipped[..., [0, 2]] = np.clip(clipped[..., [0, 2]], 0, raster_w)
        clipped[..., [1, 3]] = np.clip(clipped[..., [1, 3]], 0, raster_h)
        occluder_raster = [
            (round(x1 / s), round(y1 / s), round(x2 / s), round(y2 / s))
            for x1, y1, x2, y2 in (o.xyxy for o in self.occluders)
        ]
        visibility = np.zeros((cfg.num_frames, cfg.num_objects), np.float32)
        labels = np.empty((raster_h, raster_w), np.int32)
        for t in range(cfg.num_frames):
            labels.fill(-1)
            people = np.flatnonzero(self.present[t])
            for i in people[np.argsort(self.boxes[t, people, 3], kind="stable")]:
                x1, y1, x2, y2 = clipped[t, i]
                labels[y1:y2, x1:x2] = i
            for x1, y1, x2, y2 in occluder_raster:
                labels[y1:y2, x1:x2] = -1
            counts = np.bincount(labels.ravel() + 1, minlength=cfg.num_objects + 1)[1:]
            visibility[t] = np.minimum(counts / areas[t], 1.0)
        visibility[~self.present] = 0.0
        return visibility

    # ----------------------------------------------------------------------------- truth

    @property
    def ground_truth(self) -> np.ndarray:
        """MOT16/17 rows [M, 9]: frame (1-based), id, x, y, w, h, consider, class 1, visibility."""
        frame_index, person = np.nonzero(self.present)
        boxes = self.boxes[frame_index, person].astype(np.float64)
        visibility = self.visibility[frame_index, person].astype(np.float64)
        consider = (visibility >= self.config.min_visibility).astype(np.float64)
        return np.column_stack(
            [
                frame_index + 1,
                person + 1,
                boxes[:, 0],
                boxes[:, 1],
                boxes[:, 2] - boxes[:, 0],
                boxes[:, 3] - boxes[:, 1],
                consider,
                np.ones_like(consider),
                visibility,
            ]
        )

    def hidden(self) -> np.ndarray:
        """[F, N] bool: the person is in the picture but completely hidden."""
        return self.present & (self.visibility <= 0.0)

    def longest_hidden_run(self) -> np.ndarray:
        """[N] longest run of consecutive completely hidden frames per person (index = id - 1)."""
        hidden = self.hidden().astype(np.int8)
        padded = np.pad(hidden, ((1, 1), (0, 0)))
        edges = np.diff(padded, axis=0)
        longest = np.zeros(self.num_objects, np.int64)
        starts_t, starts_n = np.nonzero(edges == 1)
        ends_t, ends_n = np.nonzero(edges == -1)
        # nonzero is row-major (time first); sorting by person keeps starts and ends paired.
        start_order = np.lexsort((starts_t, starts_n))
        end_order = np.lexsort((ends_t, ends_n))
        lengths = ends_t[end_order] - starts_t[start_order]
        np.maximum.at(longest, starts_n[start_order], lengths)
        return longest

    # ----------------------------------------------------------------------------- sensing

    def detections(self, i: int) -> Detections:
        """Noisy detector output for frame `i` (0-based); `data["gt_id"]` is -1 for false boxes."""
        cfg = self._check_index(i)
        rng = np.random.default_rng([cfg.seed, 0x6465, i])
        n = cfg.num_objects
        # Fixed-size draws first, so one frame's randomness does not depend on who is visible.
        miss_draw = rng.random(n)
        box_noise = rng.normal(0.0, 1.0, (n, 4))
        confidence_noise = rng.normal(0.0, 1.0, n)
        visibility = self.visibility[i]
        keep = self.present[i] & (visibility >= cfg.min_visibility) & (miss_draw >= cfg.miss_rate)
        boxes = self.boxes[i].astype(np.float64)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        sigma = cfg.detection_noise_std
        cx = 0.5 * (boxes[:, 0] + boxes[:, 2]) + box_noise[:, 0] * sigma * widths
        cy = 0.5 * (boxes[:, 1] + boxes[:, 3]) + box_noise[:, 1] * sigma * heights
        widths = widths * np.exp(box_noise[:, 2] * sigma)
        heights = heights * np.exp(box_noise[:, 3] * sigma)
        true_boxes = np.column_stack(
            [cx - widths / 2, cy - heights / 2, cx + widths / 2, cy + heights / 2]
        )[keep]
        true_confidence = np.clip(0.6 + 0.35 * visibility + 0.07 * confidence_noise, 0.3, 0.999)[
            keep
        ]
        true_ids = np.flatnonzero(keep) + 1

        num_false = int(rng.poisson(cfg.false_positives_per_frame))
        feet_y = rng.uniform(self._far_row, self._near_row, num_false)
        false_heights = self._height_at(feet_y) * rng.uniform(0.7, 1.3, num_false)
        false_widths = cfg.aspect_ratio * false_heights * rng.uniform(0.8, 1.25, num_false)
        false_cx = rng.uniform(0, cfg.width, num_false)
        false_boxes = np.column_stack(
            [
                false_cx - false_widths / 2,
                feet_y - false_heights,
                false_cx + false_widths / 2,
                feet_y,
            ]
        )
        false_confidence = np.clip(rng.beta(2.0, 3.0, num_false), 0.05, 0.95)

        xyxy = np.concatenate([true_boxes, false_boxes]).reshape(-1, 4)
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, cfg.width)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, cfg.height)
        confidence = np.concatenate([true_confidence, false_confidence])
        gt_id = np.concatenate([true_ids, np.full(num_false, -1)]).astype(np.int64)
        large_enough = ((xyxy[:, 2] - xyxy[:, 0]) >= 2) & ((xyxy[:, 3] - xyxy[:, 1]) >= 2)
        order = rng.permutation(len(xyxy))
        order = order[large_enough[order]]
        return Detections(
            xyxy=xyxy[order],
            confidence=confidence[order],
            class_id=np.zeros(len(order), np.int64),
            data={"gt_id": gt_id[order]},
        )

    def frame(self, i: int) -> np.ndarray:
        """Rendered BGR uint8 image [H, W, 3] of frame `i` (0-based)."""
        cfg = self._check_index(i)
        image = self._background.copy()
        people = np.flatnonzero(self.present[i])
        for person in people[np.argsort(self.boxes[i, people, 3], kind="stable")]:
            draw_person(
                image, self._textures[person], self._texture_masks[person], self.boxes[i, person]
            )
        for occluder, patch in zip(self.occluders, self._occluder_patches, strict=True):
            x1, y1, x2, y2 = occluder.xyxy
            image[y1:y2, x1:x2] = patch
        if cfg.pixel_noise_std > 0:
            rng = np.random.default_rng([cfg.seed, 0x6E6F, i])
            noise = rng.normal(0.0, cfg.pixel_noise_std, (*image.shape[:2], 1))
            image = np.clip(image + noise, 0, 255).astype(np.uint8)
        return image

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(self.num_frames):
            yield self.frame(i)

    def _check_index(self, i: int) -> SceneConfig:
        if not 0 <= i < self.config.num_frames:
            raise IndexError(f"frame {i} outside 0..{self.config.num_frames - 1}")
        return self.config

    # ----------------------------------------------------------------------------- files

    def write_video(self, path: str | Path) -> Path:
        """Write every frame to an MP4 (mp4v) file at the scene's fps."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        writer = cv2.VideoWriter(
            str(path), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (cfg.width, cfg.height)
        )
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
        try:
            for image in self.frames():
                writer.write(image)
        finally:
            writer.release()
        return path

    def detection_rows(self) -> np.ndarray:
        """MOT det.txt rows [M, 10]: frame, -1, x, y, w, h, confidence, -1, -1, -1."""
        per_frame = [self.detections(i) for i in range(self.num_frames)]
        counts = np.array([len(d) for d in per_frame])
        xyxy = np.concatenate([d.xyxy for d in per_frame]).astype(np.float64).reshape(-1, 4)
        confidence = np.concatenate([d.confidence_or_ones() for d in per_frame]).astype(np.float64)
        rows = np.full((len(xyxy), 10), -1.0)
        rows[:, 0] = np.repeat(np.arange(1, self.num_frames + 1), counts)
        rows[:, 2:4] = xyxy[:, :2]
        rows[:, 4:6] = xyxy[:, 2:] - xyxy[:, :2]
        rows[:, 6] = confidence
        return rows

    def write_mot_sequence(
        self, seq_dir: str | Path, *, video: bool = True, images: bool = False
    ) -> Path:
        """Write a MOTChallenge sequence folder (named after `seq_dir`), as in MOT15.

        Layout: `seqinfo.ini`, `det/det.txt`, `gt/gt.txt` (MOT17 columns, see module doc), and
        `SEQ.mp4` when `video`, `img1/000001.jpg ...` when `images`.
        """
        seq_dir = Path(seq_dir)
        cfg = self.config
        (seq_dir / "det").mkdir(parents=True, exist_ok=True)
        (seq_dir / "gt").mkdir(parents=True, exist_ok=True)
        info = configparser.ConfigParser()
        info.optionxform = str  # keep MOTChallenge's camelCase keys
        info["Sequence"] = {
            "name": seq_dir.name,
            "imDir": "img1",
            "frameRate": f"{cfg.fps:g}",
            "seqLength": str(cfg.num_frames),
            "imWidth": str(cfg.width),
            "imHeight": str(cfg.height),
            "imExt": ".jpg",
        }
        with open(seq_dir / SEQINFO_FILE, "w") as handle:
            info.write(handle, space_around_delimiters=False)
        np.savetxt(
            seq_dir / DETECTIONS_FILE,
            self.detection_rows(),
            fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%.4f,%d,%d,%d",
        )
        np.savetxt(
            seq_dir / GROUND_TRUTH_FILE,
            self.ground_truth,
            fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%d,%d,%.4f",
        )
        if video:
            self.write_video(seq_dir / f"{seq_dir.name}.mp4")
        if images:
            image_dir = seq_dir / "img1"
            image_dir.mkdir(exist_ok=True)
            for i, image in enumerate(self.frames()):
                cv2.imwrite(
                    str(image_dir / f"{i + 1:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95]
                )
        return seq_dir


# --------------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class CameraFrame:
    """One frame of one camera, as a stream producer would send it."""

    camera_id: str
    frame_index: int  # 0-based
    timestamp: float  # seconds since the camera's first frame
    image: np.ndarray | None
    detections: Detections


def camera_scenes(num_cameras: int, config: SceneConfig | None = None) -> dict[str, SyntheticScene]:
    """`num_cameras` independent scenes ("cam0", "cam1", ...) with seeds `config.seed + k`."""
    config = config or SceneConfig()
    return {
        f"cam{k}": SyntheticScene(replace(config, seed=config.seed + k)) for k in range(num_cameras)
    }


def interleave_cameras(
    scenes: Mapping[str, SyntheticScene], *, with_images: bool = True
) -> Iterator[CameraFrame]:
    """Frames of all cameras in arrival order: frame 0 of every camera, then frame 1, ..."""
    longest = max((scene.num_frames for scene in scenes.values()), default=0)
    for i in range(longest):
        for camera_id, scene in scenes.items():
            if i < scene.num_frames:
                yield CameraFrame(
                    camera_id=camera_id,
                    frame_index=i,
                    timestamp=i / scene.fps,
                    image=scene.frame(i) if with_images else None,
                    detections=scene.detections(i),
                )
