"""Region geometry shared by the VIA and COCO readers: shapes to polygons, polygons judged against the image.

A region becomes a flat ``(x0, y0, x1, y1, ...)`` polygon in the image's own
pixels. ``judge_polygon`` keeps it as written when it lies inside the image,
clips it to the image rectangle ``[0, width] x [0, height]`` (Sutherland-Hodgman)
when it reaches outside, and refuses it (with the reason, for a finding) when
it has fewer than 3 points, no area, no part inside the image, or
coordinates no image has (beyond ``MAX_COORDINATE``: hostile or broken files).
Circles and ellipses become ``CURVE_POINTS``-gons.

Example:
    >>> judge_polygon((-10, 0, 20, 0, 20, 10, -10, 10), 16, 16)
    ((0.0, 0.0, 16.0, 0.0, 16.0, 10.0, 0.0, 10.0), 'reaches outside the 16x16 image; clipped')
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from transfer.data.boxes.records import parse_coordinate

MAX_COORDINATE = 1e6  # larger pixel coordinates are not annotations of any real image
CURVE_POINTS = 32


class GarbledNumbers(ValueError):
    """A region's numbers are not numbers (text, NUL, infinite, beyond any image, x without y): a broken
    annotation, whose image is left out, unlike a region that is merely unusable (a point, no area)."""


def numbers(values: Any, what: str) -> list[float]:
    """``values`` as finite floats within ``MAX_COORDINATE``; ``GarbledNumbers`` naming ``what`` otherwise."""
    if not isinstance(values, (list, tuple)):
        raise GarbledNumbers(f"{what} must be a list of numbers; it is a {type(values).__name__}")
    out = []
    for v in values:
        try:
            number = parse_coordinate(v)
        except ValueError:
            raise GarbledNumbers(f"{what} holds {shown(v)}, which is not a finite number") from None
        if abs(number) > MAX_COORDINATE:
            raise GarbledNumbers(f"{what} holds {number:g}, beyond any image (|x| <= {MAX_COORDINATE:g})")
        out.append(number)
    return out


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a hostile file's 400-digit number stays one short line).

    Example:
        >>> shown(10 ** 400)
        '1000000000000000000000000000000000000000... (401 characters)'
    """
    text = repr(value) if not isinstance(value, int) or isinstance(value, bool) or abs(value) < 10 ** 30 else \
        _digits(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _digits(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than Python converts (4300 by default)
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"


def shape_polygon(shape: dict) -> tuple[float, ...]:
    """The polygon of a VIA ``shape_attributes`` dict: polygon/polyline points, rect, circle or ellipse.

    Raises ValueError naming what is wrong or unsupported.

    Example:
        >>> shape_polygon({"name": "rect", "x": 1, "y": 2, "width": 3, "height": 4})
        (1.0, 2.0, 4.0, 2.0, 4.0, 6.0, 1.0, 6.0)
    """
    name = shape.get("name")
    if name in ("polygon", "polyline"):
        xs, ys = numbers(shape.get("all_points_x"), "all_points_x"), numbers(shape.get("all_points_y"), "all_points_y")
        if len(xs) != len(ys):
            raise GarbledNumbers(f"all_points_x has {len(xs)} values but all_points_y {len(ys)}")
        return tuple(v for point in zip(xs, ys) for v in point)
    if name == "rect":
        x, y, w, h = numbers([shape.get(k) for k in ("x", "y", "width", "height")], "x, y, width, height")
        return (x, y, x + w, y, x + w, y + h, x, y + h)
    if name in ("circle", "ellipse"):
        keys = ("cx", "cy", "r", "r") if name == "circle" else ("cx", "cy", "rx", "ry")
        cx, cy, rx, ry = numbers([shape.get(k) for k in keys], ", ".join(dict.fromkeys(keys)))
        theta = numbers([shape.get("theta", 0) or 0], "theta")[0]
        cos, sin = math.cos(theta), math.sin(theta)
        points = []
        for i in range(CURVE_POINTS):
            a = 2 * math.pi * i / CURVE_POINTS
            px, py = rx * math.cos(a), ry * math.sin(a)
            points += [cx + px * cos - py * sin, cy + px * sin + py * cos]
        return tuple(points)
    raise ValueError(f"shape {str(name)[:40]!r} is not a region (polygon, polyline, rect, circle and ellipse are)")


def polygon_area(coords: Sequence[float]) -> float:
    """The area of a flat polygon (shoelace), always >= 0."""
    xs, ys = coords[0::2], coords[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def judge_polygon(coords: Sequence[float], width: int, height: int) -> tuple[tuple[float, ...] | None, str]:
    """``(polygon, note)``: the polygon as kept (None when refused) and what was done, '' when nothing."""
    if len(coords) % 2 or len(coords) < 6:
        return None, f"has {len(coords) // 2} point(s); a region needs at least 3"
    if polygon_area(coords) == 0:
        return None, "has no area (its points lie on one line)"
    inside = all(0 <= x <= width for x in coords[0::2]) and all(0 <= y <= height for y in coords[1::2])
    if inside:
        return tuple(float(v) for v in coords), ""
    clipped = clip_polygon(coords, width, height)
    if len(clipped) < 6 or polygon_area(clipped) == 0:
        return None, f"lies outside the {width}x{height} image"
    return clipped, f"reaches outside the {width}x{height} image; clipped"


def clip_polygon(coords: Sequence[float], width: float, height: float) -> tuple[float, ...]:
    """``coords`` clipped to ``[0, width] x [0, height]`` (Sutherland-Hodgman), as a flat tuple."""
    points = list(zip(coords[0::2], coords[1::2]))
    edges = (
        (lambda p: p[0] >= 0, lambda p, q: _cross_x(p, q, 0)),
        (lambda p: p[0] <= width, lambda p, q: _cross_x(p, q, width)),
        (lambda p: p[1] >= 0, lambda p, q: _cross_y(p, q, 0)),
        (lambda p: p[1] <= height, lambda p, q: _cross_y(p, q, height)),
    )
    for inside, cross in edges:
        if not points:
            break
        out = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            if inside(current):
                if not inside(previous):
                    out.append(cross(previous, current))
                out.append(current)
            elif inside(previous):
                out.append(cross(previous, current))
        points = out
    return tuple(float(v) for p in points for v in p)


def _cross_x(p, q, x):
    t = (x - p[0]) / (q[0] - p[0])
    return x, p[1] + t * (q[1] - p[1])


def _cross_y(p, q, y):
    t = (y - p[1]) / (q[1] - p[1])
    return p[0] + t * (q[0] - p[0]), y
