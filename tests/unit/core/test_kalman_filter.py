"""The batched filter against the textbook (single-track, explicit matrix) equations."""

import numpy as np
import pytest

from ray_deepsort.core import CHI2_95_4DOF, DeepSORTTracker, KalmanFilter

WP, WV = 1 / 20, 1 / 160
WA, WAM = 0.04, 0.25  # aspect noise, as fractions of the aspect: process, measurement
F = np.eye(8)
F[:4, 4:] = np.eye(4)
H = np.eye(4, 8)


def textbook_predict(x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, h = x[2], x[3]
    q = np.diag(np.square([WP * h, WP * h, WA * a, WP * h, WV * h, WV * h, 1e-5, WV * h]))
    return F @ x, F @ p @ F.T + q


def textbook_update(x: np.ndarray, p: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, h = x[2], x[3]
    r = np.diag(np.square([WP * h, WP * h, WAM * a, WP * h]))
    s = H @ p @ H.T + r
    k = p @ H.T @ np.linalg.inv(s)
    return x + k @ (z - H @ x), (np.eye(8) - k @ H) @ p


@pytest.fixture
def tracks() -> tuple[np.ndarray, np.ndarray, KalmanFilter]:
    kf = KalmanFilter()
    z = np.array([[100.0, 200.0, 0.4, 120.0], [300.0, 50.0, 0.5, 40.0], [10.0, 10.0, 1.0, 5.0]])
    mean, cov = kf.initiate(z)
    mean[:, 4:] = [[2.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [-3.0, 1.0, 0.01, 0.0]]
    return mean, cov, kf


def test_initiate_matches_paper_noise() -> None:
    # The paper's prior: velocity std 10/160 of the height per frame = 1.875 heights/s at 30 fps;
    # its absolute aspect noise (0.01 process and prior, 0.1 measurement) is 2.5 % and 25 % of
    # a pedestrian's aspect of 0.4.
    paper = KalmanFilter(initial_velocity_std=1.875, std_weight_aspect=0.025)
    mean, cov = paper.initiate(np.array([[5.0, 6.0, 0.4, 100.0]]))
    np.testing.assert_allclose(mean[0], [5, 6, 0.4, 100, 0, 0, 0, 0])
    expected = np.square([10.0, 10.0, 1e-2, 10.0, 100 / 16, 100 / 16, 1e-5, 100 / 16])
    np.testing.assert_allclose(np.diag(cov[0]), expected)
    projected = paper.project(mean, np.zeros_like(cov))[1][0]
    np.testing.assert_allclose(np.diag(projected), np.square([5.0, 5.0, 0.1, 5.0]))


def test_aspect_noise_is_a_fraction_of_the_aspect() -> None:
    """A car (aspect 2) gets the same relative aspect noise as a pedestrian (aspect 0.4)."""
    kf = KalmanFilter()
    z = np.array([[50.0, 50.0, 0.4, 100.0], [50.0, 50.0, 2.0, 100.0]])
    mean, cov = kf.initiate(z)
    predicted = kf.predict(mean, np.zeros_like(cov))[1]
    projected = kf.project(mean, np.zeros_like(cov))[1]
    for matrix, weight in ((cov, 0.04), (predicted, 0.04), (projected, 0.25)):
        np.testing.assert_allclose(np.sqrt(matrix[:, 2, 2]), weight * z[:, 2])


def test_initial_velocity_prior_is_per_second() -> None:
    """The default prior is 3x the paper's at 30 fps and the same speed at any frame rate."""
    z = np.array([[5.0, 6.0, 0.5, 100.0]])
    at_30 = np.diag(KalmanFilter().initiate(z)[1][0])
    at_10 = np.diag(KalmanFilter(frame_rate=10.0).initiate(z)[1][0])
    np.testing.assert_allclose(np.sqrt(at_30[[4, 5, 7]]), 3 * 100 / 16)
    np.testing.assert_allclose(np.sqrt(at_10[[4, 5, 7]]), 3 * np.sqrt(at_30[[4, 5, 7]]))
    np.testing.assert_allclose(at_10[:4], at_30[:4])
    assert DeepSORTTracker(frame_rate=10.0).kalman_filter.frame_rate == 10.0


def test_predict_matches_textbook(tracks) -> None:
    mean, cov, kf = tracks
    new_mean, new_cov = kf.predict(mean, cov)
    for i in range(len(mean)):
        x, p = textbook_predict(mean[i], cov[i])
        np.testing.assert_allclose(new_mean[i], x)
        np.testing.assert_allclose(new_cov[i], p)


def test_predict_per_track_steps_equals_repeated_single_steps(tracks) -> None:
    mean, cov, kf = tracks
    new_mean, new_cov = kf.predict(mean, cov, np.array([0, 1, 3]))
    np.testing.assert_allclose(new_mean[0], mean[0])
    x, p = mean[2], cov[2]
    for _ in range(3):
        x, p = textbook_predict(x, p)
    np.testing.assert_allclose(new_mean[2], x)
    np.testing.assert_allclose(new_cov[2], p)


def test_update_matches_textbook(tracks) -> None:
    mean, cov, kf = tracks
    mean, cov = kf.predict(mean, cov)
    z = mean[:, :4] + np.array([[3.0, -2.0, 0.01, 4.0], [0, 0, 0, 0], [1, 1, 0, 1]])
    new_mean, new_cov = kf.update(mean, cov, z)
    for i in range(len(mean)):
        x, p = textbook_update(mean[i], cov[i], z[i])
        np.testing.assert_allclose(new_mean[i], x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(new_cov[i], p, rtol=1e-7, atol=1e-9)


def test_gating_distance_is_squared_mahalanobis(tracks) -> None:
    mean, cov, kf = tracks
    z = np.array([[101.0, 199.0, 0.41, 118.0], [0.0, 0.0, 1.0, 10.0]])
    d = kf.gating_distance(mean, cov, z)
    assert d.shape == (3, 2)
    for i in range(3):
        proj_mean, proj_cov = kf.project(mean[i : i + 1], cov[i : i + 1])
        for j in range(2):
            delta = z[j] - proj_mean[0]
            expected = delta @ np.linalg.inv(proj_cov[0]) @ delta
            assert d[i, j] == pytest.approx(expected, rel=1e-9)
    assert d[0, 0] < CHI2_95_4DOF < d[0, 1]


def test_gate_is_chi2_95_quantile() -> None:
    from scipy.stats import chi2

    assert chi2.ppf(0.95, 4) == pytest.approx(CHI2_95_4DOF, abs=1e-4)


def test_empty_inputs() -> None:
    kf = KalmanFilter()
    mean, cov = kf.initiate(np.zeros((0, 4)))
    assert mean.shape == (0, 8) and cov.shape == (0, 8, 8)
    assert kf.predict(mean, cov)[0].shape == (0, 8)
    assert kf.gating_distance(mean, cov, np.ones((3, 4))).shape == (0, 3)


def test_position_only_gating_ignores_aspect_and_height(tracks) -> None:
    from scipy.stats import chi2

    from ray_deepsort.core import CHI2_95_2DOF

    mean, cov, kf = tracks
    proj_mean, proj_cov = kf.project(mean[:1], cov[:1])
    z = proj_mean.copy()
    z[0, 2:] *= [1.5, 0.7]  # same centre, much wider and shorter box
    assert kf.gating_distance(mean[:1], cov[:1], z)[0, 0] > CHI2_95_4DOF
    assert kf.gating_distance(mean[:1], cov[:1], z, only_position=True)[0, 0] == pytest.approx(0)
    z[0, :2] += [3.0, -2.0]
    delta = z[0, :2] - proj_mean[0, :2]
    expected = delta @ np.linalg.inv(proj_cov[0, :2, :2]) @ delta
    got = kf.gating_distance(mean[:1], cov[:1], z, only_position=True)[0, 0]
    assert got == pytest.approx(expected, rel=1e-9)
    assert chi2.ppf(0.95, 2) == pytest.approx(CHI2_95_2DOF, abs=1e-4)
