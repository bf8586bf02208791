"""Constant-velocity Kalman filter in (cx, cy, aspect, height) space, vectorised over tracks.

The state is (cx, cy, a, h, vx, vy, va, vh). Process and measurement noise scale with the box
height, as in Wojke et al. 2017, so near (large) and far (small) objects are gated alike; the
aspect's noise scales with the aspect, so a car (a ≈ 2) is filtered like a pedestrian (a ≈ 0.4).
Every method takes stacked arrays: mean [N, 8], covariance [N, 8, 8], so a frame's tracks move
in a handful of batched numpy calls instead of one Python object per track.
"""

from __future__ import annotations

import numpy as np

# 0.95 quantiles of the chi-square distribution: 4 degrees of freedom (x, y, a, h), 2 (x, y).
CHI2_95_4DOF = 9.4877
CHI2_95_2DOF = 5.9915

_NDIM = 4
_MOTION = np.eye(2 * _NDIM)
_MOTION[:_NDIM, _NDIM:] = np.eye(_NDIM)


class KalmanFilter:
    """Batched filter; `std_weight_*` are the paper's 1/20 and 1/160 of the box height.

    The paper's aspect noise is absolute: std 0.01 per frame (process) and 0.1 (measurement),
    2.5 % and 25 % of a pedestrian's aspect of 0.4. Here both are fractions of the aspect:
    `std_weight_aspect_measurement` 0.25 keeps the paper's value for pedestrians, and
    `std_weight_aspect` (process, and a new track's prior as in the paper) is 4 %, 1.6 times the
    paper's, because detector boxes change width with gait and pose and a stiffer aspect lags
    behind them until the prediction no longer overlaps (docs/benchmarks.md, MOT15).

    A new track's velocity is unknown: its prior std is `initial_velocity_std` box heights per
    second (x, y and height). The paper's filter uses 10/160 of the height per frame, 1.875
    heights/s at 30 fps, which holds the first estimates near zero; the default is three times
    that, in seconds so that it means the same at every frame rate (docs/benchmarks.md, MOT15).
    """

    def __init__(
        self,
        std_weight_position: float = 1.0 / 20,
        std_weight_velocity: float = 1.0 / 160,
        initial_velocity_std: float = 5.625,
        frame_rate: float = 30.0,
        std_weight_aspect: float = 0.04,
        std_weight_aspect_measurement: float = 0.25,
    ) -> None:
        self.std_weight_position = std_weight_position
        self.std_weight_velocity = std_weight_velocity
        self.std_weight_aspect = std_weight_aspect
        self.std_weight_aspect_measurement = std_weight_aspect_measurement
        self.initial_velocity_std = initial_velocity_std
        self.frame_rate = frame_rate

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from xyah measurements [N, 4]: zero velocity, wide velocity uncertainty."""
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, _NDIM)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        a, h = z[:, 2], z[:, 3]
        wp, wa = self.std_weight_position, self.std_weight_aspect
        wv0 = self.initial_velocity_std / self.frame_rate  # heights per frame
        std = np.stack(
            [2 * wp * h, 2 * wp * h, wa * a, 2 * wp * h,
             wv0 * h, wv0 * h, np.full_like(h, 1e-5), wv0 * h],
            axis=1,
        )  # fmt: skip
        return mean, _diag(std**2)

    def predict(
        self, mean: np.ndarray, covariance: np.ndarray, steps: np.ndarray | int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance each track by its own number of frames (one textbook step per frame)."""
        if np.ndim(steps) == 0:  # the usual case: every track moves the same number of frames
            for _ in range(int(steps)):
                mean, covariance = self._predict_one(mean, covariance)
            return mean, covariance
        mean, covariance = mean.copy(), covariance.copy()
        steps = np.asarray(steps, dtype=np.int64)
        for step in range(int(steps.max(initial=0))):
            moving = steps > step
            mean[moving], covariance[moving] = self._predict_one(mean[moving], covariance[moving])
        return mean, covariance

    def _predict_one(
        self, mean: np.ndarray, covariance: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        a, h = mean[:, 2], mean[:, 3]
        wp, wv, wa = self.std_weight_position, self.std_weight_velocity, self.std_weight_aspect
        std = np.stack(
            [wp * h, wp * h, wa * a, wp * h,
             wv * h, wv * h, np.full_like(h, 1e-5), wv * h],
            axis=1,
        )  # fmt: skip
        mean = mean @ _MOTION.T
        covariance = _MOTION @ covariance @ _MOTION.T + _diag(std**2)
        return mean, covariance

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measurement-space mean [N, 4] and innovation covariance [N, 4, 4]."""
        a, h = mean[:, 2], mean[:, 3]
        wp, wam = self.std_weight_position, self.std_weight_aspect_measurement
        std = np.stack([wp * h, wp * h, wam * a, wp * h], axis=1)
        return mean[:, :_NDIM], covariance[:, :_NDIM, :_NDIM] + _diag(std**2)

    def update(
        self, mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct each track [N] with its own matched measurement [N, 4]."""
        projected_mean, projected_cov = self.project(mean, covariance)
        # Kalman gain K = P Hᵀ S⁻¹; solve S Kᵀ = H P instead of inverting S.
        gain = np.linalg.solve(projected_cov, covariance[:, :_NDIM, :]).transpose(0, 2, 1)
        innovation = np.asarray(measurements, dtype=np.float64) - projected_mean
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)
        return new_mean, new_cov

    def gating_distance(
        self,
        mean: np.ndarray,
        covariance: np.ndarray,
        measurements: np.ndarray,
        only_position: bool = False,
    ) -> np.ndarray:
        """Squared Mahalanobis distance [N tracks, M measurements] in measurement space, over
        (x, y, a, h) or, with `only_position`, over the box centre (x, y) alone."""
        projected_mean, projected_cov = self.project(mean, covariance)
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, _NDIM)
        if len(mean) == 0 or len(z) == 0:
            return np.zeros((len(mean), len(z)))
        if only_position:  # closed-form 2x2 inverse: no batched factorisation per frame
            dx = z[None, :, 0] - projected_mean[:, None, 0]
            dy = z[None, :, 1] - projected_mean[:, None, 1]
            sxx, sxy, syy = (projected_cov[:, i, j, None] for i, j in ((0, 0), (0, 1), (1, 1)))
            return (syy * dx**2 - 2 * sxy * dx * dy + sxx * dy**2) / (sxx * syy - sxy**2)
        cholesky = np.linalg.cholesky(projected_cov)
        delta = (z[None, :, :] - projected_mean[:, None, :]).transpose(0, 2, 1)  # [N, 4, M]
        whitened = np.linalg.solve(cholesky, delta)
        return np.einsum("nkm,nkm->nm", whitened, whitened)


def _diag(values: np.ndarray) -> np.ndarray:
    """Stack of diagonal matrices [N, k, k] from rows [N, k]."""
    n, k = values.shape
    out = np.zeros((n, k, k))
    out[:, np.arange(k), np.arange(k)] = values
    return out
