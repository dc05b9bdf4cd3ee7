"""The imported head's identity evaluation: its renders of the textured asset and the arithmetic of its figures.

The renders are checked on analytic heads (a sphere, an ellipsoid with a nose) whose silhouettes and symmetry are
known; the figures on made-up embeddings whose cosines are worked out by hand. SFace itself is not run here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.asset.build import HeadAsset
from inference.evaluation.asset_identity import (
    BACKGROUND,
    RunReading,
    impostor_head_summary,
    impostor_photo_summary,
    loop_triangles,
    orbit_views,
    render_asset,
    same_person_summary,
    section_figures,
)
from inference.ground.cameras import DEFAULT_PIVOT, FRONTAL_FOCAL, frontal_camera_label
from inference.preprocess.identity import SFaceReading

CENTRE = np.array(DEFAULT_PIVOT)      # what the orbit cameras look at
SIZE = 128


def lat_long_head(radius, rows: int = 32, cols: int = 64, texture: np.ndarray | None = None) -> HeadAsset:
    """A closed latitude-longitude surface about CENTRE, radius(latitude, longitude) (arrays -> array), facing
    +z (longitude 0), as quads with u = (longitude + pi) / 2 pi and v = (latitude + pi / 2) / pi (v = 1 at the
    top): mirror-symmetric across x = 0 when `radius` is even in longitude."""
    latitude = np.linspace(-np.pi / 2, np.pi / 2, rows + 1)[:, None]
    longitude = np.linspace(-np.pi, np.pi, cols + 1)[None, :]
    r = radius(latitude, longitude)
    vertices = CENTRE + np.stack([r * np.cos(latitude) * np.sin(longitude), r * np.sin(latitude) + 0 * longitude,
                                  r * np.cos(latitude) * np.cos(longitude)], -1).reshape(-1, 3)
    uvs = np.stack([np.broadcast_to((longitude + np.pi) / (2 * np.pi), r.shape),
                    np.broadcast_to((latitude + np.pi / 2) / np.pi, r.shape)], -1).reshape(-1, 2)
    index = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    quads = np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], -1).reshape(-1, 4)
    loops = quads.reshape(-1).astype(np.int32)
    return HeadAsset(topology="raw", vertices=vertices, loop_vertices=loops,
                     polygon_sizes=np.full(len(quads), 4, np.int32), colors=np.zeros((len(vertices), 3), np.float32),
                     materials=("skin",), polygon_materials=np.zeros(len(quads), np.int32),
                     loop_uvs=uvs[loops].astype(np.float32), texture=texture)


def sphere(radius: float, texture: np.ndarray) -> HeadAsset:
    return lat_long_head(lambda latitude, longitude: np.full(np.broadcast(latitude, longitude).shape, radius),
                         texture=texture)


def frontal_view() -> tuple[np.ndarray, np.ndarray]:
    return orbit_views(frontal_camera_label(), (0,))[0]


def test_polygons_fan_into_triangles_from_their_first_corner():
    corners = loop_triangles(np.array([3, 4, 5]))
    assert corners.tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 6], [7, 8, 9], [7, 9, 10], [7, 10, 11]]


def test_a_one_colour_texture_fills_the_spheres_disc_and_the_background_is_outside_it():
    colour = (200, 60, 30)
    radius = 0.2       # a disc of 44 px: all of its edge inside the frame
    image = render_asset(sphere(radius, np.full((16, 16, 3), colour, np.uint8)), *frontal_view(), SIZE)
    # A sphere at distance d on the optical axis projects to a disc of radius f tan(asin(r / d)).
    distance = 2.7 - CENTRE[2]
    disc = FRONTAL_FOCAL * SIZE * math.tan(math.asin(radius / distance))
    rows, cols = np.mgrid[:SIZE, :SIZE] + 0.5
    from_centre = np.hypot(rows - SIZE / 2, cols - SIZE / 2)
    # Two pixels either side of the edge: the polygon is inscribed and the edge pixels blend both colours.
    assert (image[from_centre < disc - 2] == colour).all()
    assert (image[from_centre > disc + 2] == BACKGROUND).all()


def test_texture_row_zero_is_the_top_of_the_head():
    texture = np.zeros((16, 16, 3), np.uint8)
    texture[:8] = (255, 0, 0)      # rows 0-7: v from 1 down to 0.5, the upper half
    texture[8:] = (0, 0, 255)
    image = render_asset(sphere(0.2, texture), *frontal_view(), SIZE)
    assert tuple(image[SIZE // 2 - 30, SIZE // 2]) == (255, 0, 0)
    assert tuple(image[SIZE // 2 + 30, SIZE // 2]) == (0, 0, 255)


def test_a_mirror_symmetric_head_seen_from_either_side_gives_mirror_image_renders():
    size = 64
    u = (np.arange(size) + 0.5) / size
    v = (np.arange(size) + 0.5)[:, None] / size
    # Even in u - 1/2 (longitude): the colour of a point is that of its mirror image across x = 0.
    pattern = [np.cos(2 * np.pi * k * (u - 0.5)) * np.sin(2 * np.pi * (k + 1) * v + k) for k in (1, 2, 3)]
    texture = (127.5 + 120 * np.stack(pattern, -1)).round().astype(np.uint8)

    def radius(latitude, longitude):    # an ellipsoid with a nose: even in longitude
        nose = 0.06 * np.exp(-(longitude ** 2 + (latitude + 0.1) ** 2) / 0.03)
        return 0.18 + nose + 0.03 * np.cos(2 * longitude) + 0 * latitude

    head = lat_long_head(radius, rows=48, cols=96, texture=texture)
    views = orbit_views(frontal_camera_label(), (30, -30))
    left, right = (render_asset(head, *views[yaw], SIZE).astype(int) for yaw in (30, -30))
    difference = np.abs(left - right[:, ::-1])
    assert (left != BACKGROUND).any(-1).mean() > 0.2   # the head fills the frame, not a speck
    # Only round-off and the quads' diagonals (each quad's mirror image is split along the other one) differ.
    assert difference.mean() < 0.5
    assert (difference > 8).any(-1).mean() < 0.002


def test_yaw_views_keep_the_photo_cameras_distance_and_focal_length():
    views = orbit_views(frontal_camera_label(), (0, 60))
    for cam2world, intrinsics in views.values():
        assert np.linalg.norm(cam2world[:3, 3]) == pytest.approx(2.7)
        assert intrinsics[0, 0] == pytest.approx(FRONTAL_FOCAL)
        assert cam2world[1, 3] == pytest.approx(0.0)                 # level: pitch 0
    assert views[60][0][0, 3] == pytest.approx(2.7 * math.sin(math.radians(60)))   # +yaw toward +x


# -- the figures, on made-up embeddings ------------------------------------------------------------------------------

def reading(*embedding: float, detected: bool = True) -> SFaceReading:
    return SFaceReading(embedding=np.array(embedding, float), points=np.zeros((5, 2)), detected=detected)


E1, E2, E3 = (1, 0, 0), (0, 1, 0), (0, 0, 1)


@pytest.fixture
def runs() -> list[RunReading]:
    """Three people whose photos are orthogonal; each head's frontal render is its photo, its 30 degree render
    turns toward another person (a's toward b, with a cosine of 0.8 to b's photo; b's away from c's, -0.8)."""
    return [RunReading("a", reading(*E1), {0: reading(*E1), 30: reading(0.6, 0.8, 0, detected=False)}),
            RunReading("b", reading(*E2), {0: reading(*E2), 30: reading(0, 0.6, -0.8)}),
            RunReading("c", reading(*E3), {0: reading(*E3), 30: reading(0.28, 0, 0.96)})]


def test_impostor_heads_are_every_photo_against_every_other_photos_head_at_every_yaw(runs):
    figures = impostor_head_summary(runs)
    # 3 photos x 2 other heads x 2 yaws; the cosines: ten 0s, 0.28 (a / c's head at 30), 0.8 (b / a's head at
    # 30), -0.8 (c / b's head at 30).
    assert figures["pairs"] == 12
    assert figures["median"] == pytest.approx(0.0)
    assert figures["max"] == pytest.approx(0.8)
    assert figures["above_threshold"] == 1
    assert figures["most_similar"] == {"photo": "b", "head": "a", "yaw": 30, "similarity": pytest.approx(0.8)}
    assert figures["by_yaw"]["30"] == {"median": pytest.approx(0.0), "max": pytest.approx(0.8),
                                       "above_threshold": 1, "pairs": 6}
    assert figures["by_yaw"]["0"]["max"] == pytest.approx(0.0)


def test_same_person_figures_are_each_photo_against_its_own_head(runs):
    figures = same_person_summary(runs)
    assert figures["by_yaw"]["0"] == {"count": 3, "median": pytest.approx(1.0), "min": pytest.approx(1.0),
                                      "max": pytest.approx(1.0), "above_threshold": 3, "fallbacks": 0, "unread": 0}
    at_30 = figures["by_yaw"]["30"]
    assert (at_30["median"], at_30["min"], at_30["max"]) == pytest.approx((0.6, 0.6, 0.96))
    assert at_30["fallbacks"] == 1       # YuNet missed a's face at 30 degrees: still measured, and said so
    assert figures["median_at_30"] == pytest.approx(0.6)
    assert figures["min_at_60"] is None


def test_the_yaws_either_side_are_pooled_and_an_unread_render_is_counted_not_dropped():
    runs = [RunReading("a", reading(1, 0), {60: reading(0.6, 0.8), -60: reading(0.8, 0.6), 30: None}),
            RunReading("b", reading(0, 1), {60: reading(0.8, 0.6), -60: reading(0, 1), 30: reading(0, 1)})]
    figures = same_person_summary(runs)
    assert figures["min_at_60"] == pytest.approx(0.6)
    assert figures["by_yaw"]["30"]["unread"] == 1
    assert figures["by_yaw"]["30"]["count"] == 1
    assert impostor_head_summary(runs)["unread"] == 1
    assert section_figures(runs)["photos"]["a"]["yaws"]["30"] == {"similarity": None, "fallback": True}


def test_impostor_photos_are_the_unordered_pairs_of_photos():
    runs = [RunReading(name, reading(*e), {}) for name, e in (("a", (1, 0)), ("b", (0.6, 0.8)), ("c", (0, 1)))]
    figures = impostor_photo_summary(runs)
    assert [(p["a"], p["b"]) for p in figures["items"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [p["similarity"] for p in figures["items"]] == pytest.approx([0.6, 0.0, 0.8])
    assert (figures["pairs"], figures["median"], figures["max"], figures["above_threshold"]) == \
        (3, pytest.approx(0.6), pytest.approx(0.8), 2)
