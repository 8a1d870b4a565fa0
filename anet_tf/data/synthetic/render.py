"""A generated vehicle re-identification dataset (``anet-tf synth``).

Real vehicle datasets cannot be shipped, so tests, examples and the default config
train on rendered vehicles. Each identity is a vehicle *type* (a body silhouette drawn
with PIL: body, cabin and windows, wheels), a *colour* from a named palette, and fine
identity details (stripes, roof rack, spoiler, wheel style, a sticker, black or
body-coloured trim, light shape), so that two vehicles of the same type and colour
differ only in details, as in the real datasets. Each camera has its own viewpoint
(side, mirrored side, front, rear, oblique), scale, tilt, light and colour cast,
background scene, blur and chance of a pole or box occluding the vehicle, so colour
and type stay the same across cameras while the pixels do not. ``color`` and ``type``
are the attributes (the paper's VeRi-776 attributes).

Splits follow VeRi-776: the first ``ids - test_ids`` identities train; each test
identity gives one query image from each of one or two of its cameras and the rest
of its images to the gallery, so every query has a gallery match from another camera.
A fraction of identities has unknown attributes (empty cells, as VehicleID).

The output is the generic folder format of :mod:`anet_tf.data.generic` (JPEG images
under ``images/``), byte-identical for the same arguments.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass

import numpy as np
from PIL import Image
from PIL import ImageChops
from PIL import ImageDraw
from PIL import ImageFilter

from anet_tf.config import SynthConfig
from anet_tf.data.generic import ATTRIBUTE_DIR
from anet_tf.data.generic import MANIFEST
from anet_tf.data.generic import write_folder
from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset

ATTRIBUTES = ("color", "type")
SETTINGS = "synth.yaml"  # the generator arguments, written beside the manifest

# Named body colours and how common each is (white, black and greys dominate, as on
# real roads, so many identities share a colour and differ only in details).
COLORS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "black": (30, 30, 33),
    "gray": (118, 120, 124),
    "silver": (186, 189, 194),
    "red": (178, 26, 30),
    "blue": (30, 66, 158),
    "yellow": (232, 196, 40),
    "green": (38, 118, 58),
    "brown": (108, 70, 40),
    "orange": (228, 116, 28),
}
COLOR_WEIGHTS = (0.18, 0.15, 0.11, 0.11, 0.1, 0.1, 0.06, 0.06, 0.06, 0.07)
TYPES = ("sedan", "suv", "van", "hatchback", "pickup", "bus", "truck")

# Colours of details (stripes, stickers), picked far from the body colour.
DETAIL_COLORS = (
    (245, 245, 245),
    (20, 20, 20),
    (200, 30, 30),
    (30, 80, 200),
    (240, 200, 30),
    (240, 120, 20),
    (60, 160, 70),
)
RIM_COLORS = ((200, 203, 208), (55, 55, 60), (196, 160, 70), (240, 240, 240))
GLASS_COLORS = ((48, 62, 78), (24, 28, 36))
TYRE = (26, 26, 28)
HEADLIGHT = (236, 236, 214)
TAILLIGHT = (196, 24, 24)
DARK = (40, 40, 44)

# A camera looks at vehicles from one of these views; mirror = the other side,
# oblique = a side view foreshortened as seen at an angle.
CAMERA_VIEWS = ("side", "front", "side_mirror", "rear", "oblique", "oblique_mirror")
OPPOSITE_VIEW = {
    "side": "side_mirror",
    "side_mirror": "side",
    "front": "rear",
    "rear": "front",
    "oblique": "oblique_mirror",
    "oblique_mirror": "oblique",
}
# Width of the drawn vehicle relative to a side view of the same camera scale.
VIEW_WIDTH = {"side": 1.0, "oblique": 0.78, "front": 0.7, "rear": 0.7}
SUPERSAMPLE = 2

# ------------------------------------------------------------------ vehicle models

# Side profiles, facing right: x runs 0..100 from rear to front, y from the top to
# the ground at y = h. body: outline polygons; windows: glass polygons; wheels:
# (x centre, radius), centre at y = h - radius; belt: the y band below the windows
# where stripes go, over x span; roof: (x0, x1, y) for the rack; spoiler: (x0, x1, y)
# at the rear top; head/tail: light rectangles; doors: x of door seams.
# fmt: off
SIDE = {
    "sedan": dict(
        h=34,
        body=[[(1, 25), (1.5, 17), (4, 14.5), (22, 13), (31, 4), (60, 3.5), (73, 12.5),
               (94, 14.5), (99, 18.5), (99, 25.5), (96, 28), (3, 28)]],
        windows=[[(32, 5.5), (45, 5.2), (45, 12.6), (24.5, 13)],
                 [(47, 5.2), (59, 5), (70, 12.6), (47, 12.6)]],
        wheels=[(20, 6.6), (80, 6.6)], belt=(15, 25.5), span=(3, 97),
        roof=(33, 58, 3.8), spoiler=(2, 12, 13.5),
        head=(95, 15.5, 99, 18.5), tail=(1, 16, 3, 19.5), doors=(46, 72),
    ),
    "hatchback": dict(
        h=36,
        body=[[(2, 27), (2, 9), (5, 4.5), (52, 4), (67, 14.5), (93, 16.5), (99, 21),
               (99, 27.5), (96, 30), (4, 30)]],
        windows=[[(6, 6.5), (27, 6), (27, 14.8), (5, 14.8)],
                 [(29, 6), (50, 6), (63, 14.8), (29, 14.8)]],
        wheels=[(20, 6.5), (80, 6.5)], belt=(16.5, 27.5), span=(3, 97),
        roof=(7, 50, 4.2), spoiler=(2, 12, 4.5),
        head=(95, 17, 99, 20.5), tail=(2, 10, 4, 16), doors=(28, 66),
    ),
    "suv": dict(
        h=44,
        body=[[(1, 35), (1, 13), (3, 4), (68, 3.5), (78, 15.5), (95, 17.5), (99, 22),
               (99, 35), (96, 37), (3, 37)]],
        windows=[[(5, 6.5), (24, 6), (24, 15.5), (4, 15.5)],
                 [(26, 6), (46, 6), (46, 15.5), (26, 15.5)],
                 [(48, 6), (66, 6), (74, 15.5), (48, 15.5)]],
        wheels=[(19, 8), (81, 8)], belt=(17, 34), span=(2, 98),
        roof=(4, 66, 3.6), spoiler=(1, 10, 3.5),
        head=(95, 18.5, 99, 22), tail=(1, 14, 3, 20), doors=(47, 76),
    ),
    "van": dict(
        h=48,
        body=[[(1, 41), (1, 4), (3, 1.5), (73, 1.5), (89, 18), (97, 21), (99, 26),
               (99, 41), (96, 43), (3, 43)]],
        windows=[[(75, 4), (87, 18), (75, 18)], [(4, 5), (16, 5), (16, 16), (4, 16)]],
        wheels=[(17, 8), (83, 8)], belt=(20, 39), span=(2, 97),
        roof=(4, 72, 1.6), spoiler=(1, 10, 1.5),
        head=(95, 22, 99, 26), tail=(1, 20, 3, 30), doors=(50, 74),
    ),
    "pickup": dict(
        h=40,
        body=[[(1, 32), (1, 17), (45, 17), (47, 5), (67, 4.5), (77, 16.5), (95, 18.5),
               (99, 23), (99, 32), (96, 34), (3, 34)]],
        windows=[[(49, 7), (66, 6.5), (73, 16.5), (49, 16.5)]],
        wheels=[(18, 7.5), (80, 7.5)], belt=(19, 31), span=(2, 98),
        roof=(48, 66, 4.8), spoiler=(1, 10, 17),
        head=(95, 19.5, 99, 23), tail=(1, 18, 3, 24), doors=(46, 76),
    ),
    "bus": dict(
        h=40,
        body=[[(1, 34), (1, 4), (3, 1.5), (97, 1.5), (99, 4), (99, 34), (97, 35.5),
               (3, 35.5)]],
        windows=[[(x, 5), (x + 8, 5), (x + 8, 17), (x, 17)] for x in range(4, 84, 10)]
        + [[(92, 4), (98.5, 4), (98.5, 20), (92, 20)],
           [(85.5, 5), (90.5, 5), (90.5, 33), (85.5, 33)]],
        wheels=[(15, 5.5), (80, 5.5)], belt=(19, 32), span=(2, 84),
        roof=(5, 95, 1.6), spoiler=(1, 10, 1.5),
        head=(97, 26, 99, 30), tail=(1, 24, 2.5, 30), doors=(),
    ),
    "truck": dict(
        h=58,
        body=[[(1, 2), (69, 2), (69, 48), (1, 48)],
              [(71, 48), (71, 22), (85, 21), (92, 30), (99, 33), (99, 48)]],
        windows=[[(75, 24), (85, 23.5), (90, 31), (75, 31)]],
        wheels=[(14, 7.5), (28, 7.5), (86, 7.5)], belt=(6, 44), span=(3, 67),
        roof=(4, 66, 2), spoiler=(72, 85, 21.5),
        head=(96, 34, 99, 38), tail=(1, 40, 2.5, 46), doors=(),
        chassis=(1, 47.5, 99, 50.5),
    ),
}

# Front/rear faces: x runs 0..100 across the vehicle, y from the top to the ground at
# h. The greenhouse is a trapezoid from the roof (half width rh at roof_y) to the belt
# line (half width bh at belt_y); the lower body has half width sh down to bottom_y;
# lights sit at light_y; spoiler_y is where a rear spoiler is seen. box: a cargo box
# seen above and behind the cab (trucks).
FACE = {
    "sedan": dict(h=50, roof_y=6, rh=30, belt_y=24, bh=42, sh=48, bottom_y=45,
                  light_y=28, spoiler_y=23),
    "hatchback": dict(h=56, roof_y=6, rh=32, belt_y=28, bh=42, sh=48, bottom_y=51,
                      light_y=32, spoiler_y=5),
    "suv": dict(h=66, roof_y=5, rh=36, belt_y=30, bh=44, sh=49, bottom_y=60,
                light_y=36, spoiler_y=4),
    "van": dict(h=76, roof_y=3, rh=42, belt_y=32, bh=46, sh=49, bottom_y=70,
                light_y=42, spoiler_y=2),
    "pickup": dict(h=64, roof_y=6, rh=35, belt_y=29, bh=43, sh=49, bottom_y=58,
                   light_y=35, spoiler_y=28),
    "bus": dict(h=100, roof_y=3, rh=47, belt_y=52, bh=48, sh=49, bottom_y=94,
                light_y=76, spoiler_y=2),
    "truck": dict(h=90, roof_y=22, rh=38, belt_y=48, bh=44, sh=47, bottom_y=84,
                  light_y=62, spoiler_y=21, box=(1, 2, 99, 40)),
}
# fmt: on


@dataclass(frozen=True)
class VehicleSpec:
    """Everything that makes one vehicle identity look the way it does.

    Args:
        type: body type (an entry of TYPES); color: colour name (a key of COLORS).
        body: the body RGB, the palette colour with an identity-specific shade.
        stripes: 0, 1 or 2 decorative stripes; stripe_rgb, stripe_level (0..2):
            their colour and height on the body.
        roof_rack, spoiler: present or not.
        wheel_style: rim pattern (0 disc, 1 spokes, 2 ring, 3 hubcap); rim_rgb.
        sticker: 0 none, 1 round, 2 square; sticker_rgb; sticker_u (0..1): where.
        black_trim: black bumpers and mirrors instead of body-coloured ones.
        glass_rgb: window tint; round_lights: round instead of square headlights.
    """

    type: str
    color: str
    body: tuple[int, int, int]
    stripes: int
    stripe_rgb: tuple[int, int, int]
    stripe_level: int
    roof_rack: bool
    spoiler: bool
    wheel_style: int
    rim_rgb: tuple[int, int, int]
    sticker: int
    sticker_rgb: tuple[int, int, int]
    sticker_u: float
    black_trim: bool
    glass_rgb: tuple[int, int, int]
    round_lights: bool


def sample_vehicle(
    rng: np.random.Generator, color: str | None = None, type_: str | None = None
) -> VehicleSpec:
    """Draw a vehicle identity: type, colour and fine details.

    ``color`` and ``type_`` impose the attributes (the balanced training design of
    :func:`balanced_attributes`); the random draws are made either way, so the
    details of every other identity stay the same whether or not they are imposed.
    """
    drawn_type = TYPES[int(rng.integers(len(TYPES)))]
    drawn_color = list(COLORS)[int(rng.choice(len(COLORS), p=_color_probabilities()))]
    type_ = drawn_type if type_ is None else type_
    color = drawn_color if color is None else color
    base = np.array(COLORS[color], float)
    body = tuple(int(v) for v in np.clip(base + rng.integers(-10, 11, 3), 0, 255))
    far = [c for c in DETAIL_COLORS if np.abs(np.array(c) - base).sum() > 180]

    def pick(colors):
        return tuple(colors[int(rng.integers(len(colors)))])

    return VehicleSpec(
        type=type_,
        color=color,
        body=body,
        stripes=int(rng.choice(3, p=(0.4, 0.35, 0.25))),
        stripe_rgb=pick(far),
        stripe_level=int(rng.integers(3)),
        roof_rack=bool(rng.random() < 0.3),
        spoiler=bool(rng.random() < 0.3),
        wheel_style=int(rng.integers(4)),
        rim_rgb=pick(RIM_COLORS),
        sticker=int(rng.choice(3, p=(0.4, 0.3, 0.3))),
        sticker_rgb=pick(far),
        sticker_u=float(rng.uniform(0.15, 0.85)),
        black_trim=bool(rng.random() < 0.5),
        glass_rgb=pick(GLASS_COLORS),
        round_lights=bool(rng.random() < 0.5),
    )


def balanced_attributes(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(colour, type) of ``count`` training identities, every class equally often.

    Drawn independently per identity (as for the test split), 80 training vehicles
    left one colour with a single vehicle (12 images) while the test split held 106
    images of it: an attribute branch cannot learn a colour from one car. Here each
    colour and each type gets ``count // classes`` or one more identities, and the
    colours are paired with the types in a random order, so the training split covers
    every class several times while vehicles of one colour and type still differ only
    in details.
    """
    colors = [list(COLORS)[k % len(COLORS)] for k in range(count)]
    types = [TYPES[k % len(TYPES)] for k in range(count)]
    color_order = rng.permutation(count)
    type_order = rng.permutation(count)
    return [(colors[int(c)], types[int(t)]) for c, t in zip(color_order, type_order, strict=True)]


def _color_probabilities() -> np.ndarray:
    weights = np.array(COLOR_WEIGHTS, float)
    return weights / weights.sum()


class _Pen:
    """ImageDraw in model units: x, y in 0..100 scaled to pixels, y shifted down by
    ``top`` units to leave room above the roof (rack)."""

    def __init__(self, image: Image.Image, scale: float, top: float):
        self.draw = ImageDraw.Draw(image)
        self.scale = scale
        self.top = top

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (x * self.scale, (y + self.top) * self.scale)

    def polygon(self, points, fill) -> None:
        self.draw.polygon([self.xy(x, y) for x, y in points], fill=fill)

    def rect(self, x0, y0, x1, y1, fill, radius: float = 0) -> None:
        box = (*self.xy(x0, y0), *self.xy(x1, y1))
        if radius:
            self.draw.rounded_rectangle(box, radius * self.scale, fill=fill)
        else:
            self.draw.rectangle(box, fill=fill)

    def ellipse(self, cx, cy, rx, ry, fill) -> None:
        self.draw.ellipse(
            (*self.xy(cx - rx, cy - ry), *self.xy(cx + rx, cy + ry)), fill=fill
        )

    def line(self, points, fill, width: float) -> None:
        self.draw.line(
            [self.xy(x, y) for x, y in points],
            fill=fill,
            width=max(1, round(width * self.scale)),
        )


def _shade(rgb, factor: float, add: float = 0) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * factor + add))) for v in rgb)


def render_vehicle(spec: VehicleSpec, view: str, width: int) -> Image.Image:
    """Draw ``spec`` seen from ``view`` (side | front | rear) as an RGBA sprite
    ``width`` pixels wide on a transparent background, ground at the bottom edge."""
    if view == "side":
        return _render_side(spec, width)
    if view in ("front", "rear"):
        return _render_face(spec, width, view == "front")
    raise ValueError(f"view must be side, front or rear. Received: view={view!r}")


def _layers(width: int, h: float, top: float):
    size = (width, math.ceil((h + top) * width / 100))
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    mask = Image.new("L", size, 0)
    detail = Image.new("RGBA", size, (0, 0, 0, 0))
    scale = width / 100
    return (
        image,
        mask,
        detail,
        _Pen(image, scale, top),
        _Pen(mask, scale, top),
        _Pen(detail, scale, top),
    )


def _clip_onto(image: Image.Image, detail: Image.Image, mask: Image.Image) -> None:
    """Paste ``detail`` onto ``image`` where both are opaque and inside ``mask``."""
    alpha = ImageChops.multiply(detail.getchannel("A"), mask)
    image.paste(detail.convert("RGB"), (0, 0), alpha)


def _render_side(spec: VehicleSpec, width: int) -> Image.Image:
    m = SIDE[spec.type]
    top = 4.0
    image, mask, detail, pen, mask_pen, detail_pen = _layers(width, m["h"], top)
    body = spec.body
    trim = DARK if spec.black_trim else _shade(body, 0.85)

    for poly in m["body"]:
        pen.polygon(poly, body + (255,))
        mask_pen.polygon(poly, 255)
    # Clipped to the body: shading, stripes, sticker, door seams.
    y0, y1 = m["belt"]
    x0, x1 = m["span"]
    detail_pen.rect(0, y1 - 2.5, 100, m["h"], _shade(body, 0.78) + (255,))
    detail_pen.rect(0, y0 - 0.4, 100, y0 + 0.6, _shade(body, 1.1, 28) + (255,))
    if spec.stripes:
        band = (y1 - y0) / 4
        centre = y0 + band * (1 + spec.stripe_level)
        for i in range(spec.stripes):
            offset = (i - (spec.stripes - 1) / 2) * 2.6
            detail_pen.rect(
                x0,
                centre + offset - 0.8,
                x1,
                centre + offset + 0.8,
                spec.stripe_rgb + (255,),
            )
    for x in m["doors"]:
        detail_pen.line([(x, y0 - 2), (x, y1 - 0.5)], _shade(body, 0.6) + (255,), 0.4)
        detail_pen.rect(x - 6, y0 + 1.5, x - 3, y0 + 2.6, _shade(body, 0.55) + (255,))
    if spec.sticker:
        sx = x0 + spec.sticker_u * (x1 - x0)
        sy = y0 + (y1 - y0) * 0.45
        if spec.sticker == 1:
            detail_pen.ellipse(sx, sy, 2.2, 2.2, spec.sticker_rgb + (255,))
        else:
            detail_pen.rect(
                sx - 2.5, sy - 1.8, sx + 2.5, sy + 1.8, spec.sticker_rgb + (255,)
            )
    _clip_onto(image, detail, mask)

    for poly in m["windows"]:
        pen.polygon(poly, spec.glass_rgb + (255,))
    hx0, hy0, hx1, hy1 = m["head"]
    pen.rect(hx0, hy0, hx1, hy1, HEADLIGHT + (255,))
    tx0, ty0, tx1, ty1 = m["tail"]
    pen.rect(tx0, ty0, tx1, ty1, TAILLIGHT + (255,))
    if "chassis" in m:
        pen.rect(*m["chassis"], DARK + (255,))
    # Bumpers: the lowest strip at each end.
    pen.rect(0.5, y1 - 1, 6, y1 + 1.5, trim + (255,), radius=0.6)
    pen.rect(94, y1 - 1, 99.5, y1 + 1.5, trim + (255,), radius=0.6)

    if spec.roof_rack:
        rx0, rx1, ry = m["roof"]
        pen.rect(rx0 + 2, ry - 2.4, rx1 - 2, ry - 1.6, DARK + (255,))
        for x in (rx0 + 4, (rx0 + rx1) / 2, rx1 - 4):
            pen.rect(x - 0.5, ry - 2, x + 0.5, ry + 0.5, DARK + (255,))
    if spec.spoiler:
        sx0, sx1, sy = m["spoiler"]
        pen.rect(sx0, sy - 2.4, sx1, sy - 1.2, trim + (255,), radius=0.4)
        pen.rect(sx0 + 2, sy - 1.5, sx0 + 3, sy + 0.3, trim + (255,))
        pen.rect(sx1 - 3, sy - 1.5, sx1 - 2, sy + 0.3, trim + (255,))

    h = m["h"]
    for cx, r in m["wheels"]:
        cy = h - r
        pen.ellipse(cx, cy, r * 1.14, r * 1.14, (18, 18, 20, 255))
        pen.ellipse(cx, cy, r, r, TYRE + (255,))
        _draw_rim(pen, cx, cy, r, spec)
    return image


def _draw_rim(pen: _Pen, cx: float, cy: float, r: float, spec: VehicleSpec) -> None:
    rim = spec.rim_rgb + (255,)
    inner = r * 0.62
    if spec.wheel_style == 0:
        pen.ellipse(cx, cy, inner, inner, rim)
        pen.ellipse(cx, cy, inner * 0.3, inner * 0.3, DARK + (255,))
    elif spec.wheel_style == 1:
        pen.ellipse(cx, cy, inner, inner, (60, 60, 64, 255))
        for k in range(5):
            a = 2 * math.pi * k / 5
            pen.line(
                [(cx, cy), (cx + inner * math.cos(a), cy + inner * math.sin(a))],
                rim,
                r * 0.16,
            )
        pen.ellipse(cx, cy, inner * 0.25, inner * 0.25, rim)
    elif spec.wheel_style == 2:
        pen.ellipse(cx, cy, inner, inner, rim)
        pen.ellipse(cx, cy, inner * 0.75, inner * 0.75, TYRE + (255,))
        pen.ellipse(cx, cy, inner * 0.3, inner * 0.3, rim)
    else:
        pen.ellipse(cx, cy, inner * 1.05, inner * 1.05, (245, 245, 245, 255))
        pen.ellipse(cx, cy, inner * 0.55, inner * 0.55, rim)


def _render_face(spec: VehicleSpec, width: int, front: bool) -> Image.Image:
    f = FACE[spec.type]
    top = 4.0
    h = f["h"]
    image, mask, detail, pen, mask_pen, detail_pen = _layers(width, h, top)
    body = spec.body
    trim = DARK if spec.black_trim else _shade(body, 0.85)
    roof_y, rh, belt_y, bh = f["roof_y"], f["rh"], f["belt_y"], f["bh"]
    sh, bottom = f["sh"], f["bottom_y"]
    truck_rear = spec.type == "truck" and not front

    # Tyres peek out below the body.
    for x in (50 - sh + 3, 50 + sh - 15):
        pen.rect(x, bottom - 4, x + 12, h, TYRE + (255,), radius=1.5)
    if truck_rear:
        shapes = [("rect", (1, 2, 99, bottom))]
    else:
        shapes = [
            (
                "poly",
                [
                    (50 - rh, roof_y),
                    (50 + rh, roof_y),
                    (50 + bh, belt_y + 0.5),
                    (50 - bh, belt_y + 0.5),
                ],
            ),
            ("rect", (50 - sh, belt_y, 50 + sh, bottom)),
        ]
        if "box" in f:
            shapes.insert(0, ("rect", f["box"]))
    for kind, geo in shapes:
        if kind == "rect":
            pen.rect(*geo, body + (255,), radius=2)
            mask_pen.rect(*geo, 255, radius=2)
        else:
            pen.polygon(geo, body + (255,))
            mask_pen.polygon(geo, 255)

    # Clipped to the body: shading, stripes (along the car over hood and roof from
    # the front, across the tailgate from the rear), rear sticker.
    detail_pen.rect(0, bottom - 9, 100, bottom, _shade(body, 0.8) + (255,))
    detail_pen.rect(0, belt_y + 0.5, 100, belt_y + 1.5, _shade(body, 1.1, 28) + (255,))
    if spec.stripes and front and not spec.type == "truck":
        for i in range(spec.stripes):
            cx = 50 + (i - (spec.stripes - 1) / 2) * 9
            detail_pen.rect(cx - 2.5, 0, cx + 2.5, bottom - 9, spec.stripe_rgb + (255,))
    elif spec.stripes:
        y0 = belt_y + 2
        y1 = f["light_y"] if not truck_rear else bottom - 12
        centre = y0 + (y1 - y0) * (1 + spec.stripe_level) / 4
        for i in range(spec.stripes):
            cy = centre + (i - (spec.stripes - 1) / 2) * 2.8
            detail_pen.rect(0, cy - 0.9, 100, cy + 0.9, spec.stripe_rgb + (255,))
    if spec.sticker and not front:
        sx = 50 + (spec.sticker_u - 0.5) * 2 * (sh - 12)
        sy = (belt_y + f["light_y"]) / 2 if not truck_rear else bottom - 20
        if spec.sticker == 1:
            detail_pen.ellipse(sx, sy, 2.6, 2.6, spec.sticker_rgb + (255,))
        else:
            detail_pen.rect(sx - 3, sy - 2, sx + 3, sy + 2, spec.sticker_rgb + (255,))
    _clip_onto(image, detail, mask)

    if truck_rear:
        pen.line([(50, 4), (50, bottom - 8)], DARK + (255,), 0.8)
        for x in (44, 56):
            pen.rect(x - 0.8, 30, x + 0.8, 52, (150, 150, 150, 255))
    else:
        inset = 4 if front else 9
        glass_top = roof_y + (1.5 if front else 3)
        glass_bottom = belt_y - (1 if front else 3)
        t = (glass_top - roof_y) / (belt_y - roof_y)
        b = (glass_bottom - roof_y) / (belt_y - roof_y)
        top_half = rh + (bh - rh) * t - inset
        bottom_half = rh + (bh - rh) * b - inset
        pen.polygon(
            [
                (50 - top_half, glass_top),
                (50 + top_half, glass_top),
                (50 + bottom_half, glass_bottom),
                (50 - bottom_half, glass_bottom),
            ],
            spec.glass_rgb + (255,),
        )
        # Mirrors beside the windshield.
        for side in (-1, 1):
            x = 50 + side * (bh + 3.5)
            pen.rect(x - 3, belt_y - 5, x + 3, belt_y - 1, trim + (255,), radius=1)
        if front and spec.sticker:
            sx = 50 + (1 if spec.sticker_u > 0.5 else -1) * (bottom_half - 7)
            pen.rect(
                sx - 2.5,
                glass_bottom - 6,
                sx + 2.5,
                glass_bottom - 2,
                spec.sticker_rgb + (255,),
            )
    # Lights, grille or tailgate, plate, bumper.
    ly = f["light_y"]
    light = HEADLIGHT if front else TAILLIGHT
    for side in (-1, 1):
        cx = 50 + side * (sh - 10)
        if front and spec.round_lights:
            pen.ellipse(cx, ly + 3.5, 5, 4, light + (255,))
        else:
            pen.rect(cx - 7, ly, cx + 7, ly + 6, light + (255,), radius=1)
    if front:
        pen.rect(34, ly + 1, 66, ly + 8, DARK + (255,), radius=1.5)
        for k in range(1, 4):
            y = ly + 1 + 7 * k / 4
            pen.line([(35, y), (65, y)], (90, 90, 96, 255), 0.5)
    pen.rect(50 - sh + 1, bottom - 7, 50 + sh - 1, bottom, trim + (255,), radius=1.5)
    pen.rect(41, bottom - 6.5, 59, bottom - 1.5, (236, 236, 226, 255))
    pen.rect(44, bottom - 4.5, 56, bottom - 3.5, (60, 60, 60, 255))

    if spec.roof_rack and not truck_rear:
        y = roof_y
        pen.rect(50 - rh - 1, y - 2.6, 50 + rh + 1, y - 1.6, DARK + (255,))
        for x in (50 - rh + 3, 50 + rh - 3):
            pen.rect(x - 0.8, y - 2, x + 0.8, y + 0.3, DARK + (255,))
    if spec.spoiler and not front:
        y = f["spoiler_y"]
        half = (rh if y < belt_y else sh) - 6
        pen.rect(50 - half, y - 2.2, 50 + half, y - 0.6, trim + (255,), radius=0.5)
    return image


# ------------------------------------------------------------------------ cameras


@dataclass(frozen=True)
class Camera:
    """How one camera sees vehicles.

    Args:
        view: main view (CAMERA_VIEWS); other_view_prob: chance of seeing a vehicle
            from the opposite direction (a car driving the other way).
        scale: vehicle width in a side view, as a fraction of the image side.
        tilt: roll in degrees; ground: how far below the image centre the vehicle
            sits, as a fraction of the image side.
        brightness, contrast: global light; cast: RGB gains (colour cast).
        blur: Gaussian blur radius in pixels; noise: sensor noise std (0..255).
        occlusion: chance that a pole or box hides part of the vehicle.
        background: the scene, a little larger than an image (crops vary).
    """

    view: str
    other_view_prob: float
    scale: float
    tilt: float
    ground: float
    brightness: float
    contrast: float
    cast: tuple[float, float, float]
    blur: float
    noise: float
    occlusion: float
    background: Image.Image


def make_camera(index: int, image_size: int, rng: np.random.Generator) -> Camera:
    """Camera ``index`` (0-based); views cycle through CAMERA_VIEWS."""
    return Camera(
        view=CAMERA_VIEWS[index % len(CAMERA_VIEWS)],
        other_view_prob=float(rng.uniform(0.1, 0.3)),
        scale=float(rng.uniform(0.8, 0.95)),
        tilt=float(rng.uniform(-5, 5)),
        ground=float(rng.uniform(0.0, 0.08)),
        brightness=float(rng.uniform(0.72, 1.18)),
        contrast=float(rng.uniform(0.8, 1.1)),
        cast=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)),
        blur=float(rng.uniform(0.0, 0.9) * image_size / 128),
        noise=float(rng.uniform(2, 7)),
        occlusion=float(rng.uniform(0.0, 0.35)),
        background=_background(round(image_size * 1.25), rng),
    )


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A road scene: sky or buildings above a textured road with lane markings."""
    horizon = int(size * rng.uniform(0.28, 0.5))
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    if rng.random() < 0.5:
        top_a, top_b = rng.uniform(150, 230, 3), rng.uniform(200, 250, 3)
        top_a[2] = max(top_a[2], top_a[0] + 15)  # sky is bluish
    else:
        top_a = rng.uniform(60, 170, 3)
        top_b = top_a * rng.uniform(0.7, 1.1)
    road = rng.uniform(70, 130) + rng.uniform(-10, 10, 3)
    image = np.where(
        np.arange(size)[:, None, None] < horizon,
        top_a + (top_b - top_a) * y,
        road * (0.85 + 0.3 * y),
    ) * np.ones((1, size, 1), np.float32)
    grid = rng.normal(0, 1, (8, 8)).astype(np.float32)
    texture = np.asarray(
        Image.fromarray(grid).resize((size, size), Image.BICUBIC), np.float32
    )
    image += texture[:, :, None] * rng.uniform(5, 14)
    image += rng.normal(0, 4, image.shape)
    scene = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(0, 6))):  # buildings, signs, trees
        x0 = rng.uniform(-0.1, 1.0) * size
        w = rng.uniform(0.08, 0.3) * size
        h = rng.uniform(0.1, 0.6) * horizon
        shade = tuple(int(v) for v in rng.uniform(50, 200, 3))
        draw.rectangle((x0, horizon - h, x0 + w, horizon), fill=shade)
    draw.rectangle((0, horizon - 2, size, horizon + 3), fill=(170, 170, 165))
    marking = (235, 235, 235) if rng.random() < 0.6 else (230, 190, 40)
    y0 = horizon + rng.uniform(0.1, 0.3) * (size - horizon)
    y1 = y0 + rng.uniform(-0.1, 0.1) * size
    dash = rng.uniform(0.06, 0.15) * size
    for x in np.arange(-dash, size, 2 * dash):
        t0, t1 = x / size, (x + dash) / size
        draw.line(
            (x, y0 + (y1 - y0) * t0, x + dash, y0 + (y1 - y0) * t1),
            fill=marking,
            width=max(1, size // 80),
        )
    return scene


# ------------------------------------------------------------------------ images


def render_image(
    spec: VehicleSpec,
    camera: Camera,
    image_size: int,
    rng: np.random.Generator,
    sprites: dict,
) -> Image.Image:
    """One photo of vehicle ``spec`` by ``camera``, with per-image jitter.

    Args:
        sprites: cache of drawn views of this vehicle, keyed by base view.
    """
    s = image_size
    view = camera.view
    if rng.random() < camera.other_view_prob:
        view = OPPOSITE_VIEW[view]
    base = view.replace("_mirror", "").replace("oblique", "side")
    if base not in sprites:
        sprites[base] = render_vehicle(spec, base, SUPERSAMPLE * s)
    sprite = sprites[base]
    if view.endswith("_mirror"):
        sprite = sprite.transpose(Image.FLIP_LEFT_RIGHT)

    scale = camera.scale * rng.uniform(0.92, 1.08)
    width = s * scale * VIEW_WIDTH[view.split("_")[0]]
    height = width * sprite.height / sprite.width
    if base == "side" and view.startswith("oblique"):
        height = s * scale * sprite.height / sprite.width
    if height > 0.85 * s:
        width, height = width * 0.85 * s / height, 0.85 * s
    sprite = sprite.resize((max(4, round(width)), max(4, round(height))), Image.LANCZOS)
    sprite = sprite.rotate(camera.tilt + rng.normal(0, 1.5), Image.BICUBIC, expand=True)

    offset = camera.background.width - s
    dx, dy = rng.integers(0, offset + 1, 2)
    scene = camera.background.crop((dx, dy, dx + s, dy + s))
    cx = s / 2 + rng.uniform(-0.07, 0.07) * s
    ground = (s + sprite.height) / 2 + (camera.ground + rng.uniform(-0.03, 0.03)) * s
    ground = min(s - 1, ground)
    shadow = Image.new("L", (s, s), 0)
    ImageDraw.Draw(shadow).ellipse(
        (
            cx - sprite.width * 0.52,
            ground - 0.05 * s,
            cx + sprite.width * 0.52,
            ground + 0.025 * s,
        ),
        fill=120,
    )
    scene.paste((0, 0, 0), (0, 0), shadow)
    scene.paste(
        sprite, (round(cx - sprite.width / 2), round(ground - sprite.height)), sprite
    )
    if rng.random() < camera.occlusion:
        _occlude(scene, rng, cx, sprite.width)

    if camera.blur > 0.25:
        scene = scene.filter(
            ImageFilter.GaussianBlur(camera.blur * rng.uniform(0.7, 1.3))
        )
    pixels = np.asarray(scene, np.float32)
    contrast = camera.contrast * rng.uniform(0.95, 1.05)
    gain = (
        camera.brightness
        * rng.uniform(0.92, 1.08)
        * np.array(camera.cast)
        * rng.uniform(0.97, 1.03, 3)
    )
    # (x - 128) * contrast + 128, then gains, noise and rounding, in one float32 pass.
    pixels *= (contrast * gain).astype(np.float32)
    pixels += ((128 - 128 * contrast) * gain + 0.5).astype(np.float32)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    noise *= camera.noise
    pixels += noise
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8))


def _occlude(scene: Image.Image, rng: np.random.Generator, cx: float, width: float):
    """A pole, a box or a bush in front of part of the vehicle."""
    s = scene.width
    draw = ImageDraw.Draw(scene)
    x = cx + rng.uniform(-0.45, 0.45) * width
    kind = int(rng.integers(3))
    if kind == 0:
        w = rng.uniform(0.04, 0.08) * s
        color = ((120, 120, 125), (60, 90, 60), (210, 180, 40))[int(rng.integers(3))]
        draw.rectangle((x - w / 2, 0, x + w / 2, s), fill=color)
    elif kind == 1:
        w, h = rng.uniform(0.15, 0.3) * s, rng.uniform(0.15, 0.3) * s
        shade = tuple(int(v) for v in rng.uniform(60, 200, 3))
        draw.rectangle((x - w / 2, s - h, x + w / 2, s), fill=shade)
    else:
        r = rng.uniform(0.1, 0.18) * s
        green = (int(rng.uniform(30, 70)), int(rng.uniform(90, 140)), 40)
        draw.ellipse((x - r, s - 1.3 * r, x + r, s + 0.7 * r), fill=green)


# ---------------------------------------------------------------------- generator


def generate(
    out_dir: str,
    *,
    ids: int = 120,
    test_ids: int = 40,
    cameras: int = 6,
    images_per_id: int = 12,
    image_size: int = 128,
    unlabelled_fraction: float = 0.1,
    seed: int = 0,
    balanced_train: bool = True,
    overwrite: bool = False,
) -> str:
    """Render the synthetic dataset into ``out_dir`` in the folder format.

    Args:
        out_dir: output folder; created, or must be empty unless ``overwrite``.
        ids: identities in total, numbered from 1; the first ``ids - test_ids``
            train, the rest are split into query and gallery.
        test_ids: identities of the test split.
        cameras: cameras, numbered from 1.
        images_per_id: images per identity, spread over 2 or more cameras.
        image_size: side of the square JPEG images.
        unlabelled_fraction: fraction of train and of test identities whose
            attribute cells are left empty (unknown).
        seed: a non-negative integer; the same arguments give byte-identical
            files (with the same NumPy and Pillow versions).
        balanced_train: give every colour and type the same number of training
            identities (:func:`balanced_attributes`) instead of drawing them
            independently; the test split is the same either way.
        overwrite: replace a dataset already in ``out_dir`` (only the files this
            generator writes are removed).

    Returns:
        ``out_dir``.
    """
    _check_arguments(
        ids, test_ids, cameras, images_per_id, image_size, unlabelled_fraction, seed
    )
    _prepare(out_dir, overwrite)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir)

    camera_models = [
        make_camera(c, image_size, np.random.default_rng([seed, 1, c]))
        for c in range(cameras)
    ]
    num_train = ids - test_ids
    split_rng = np.random.default_rng([seed, 2])
    unlabelled = set()
    for group in (range(1, num_train + 1), range(num_train + 1, ids + 1)):
        count = int(unlabelled_fraction * len(group) + 0.5)  # half rounds up
        unlabelled.update(int(p) for p in split_rng.permutation(list(group))[:count])

    color_names, type_names = list(COLORS), list(TYPES)
    dataset = ReidDataset(
        name="synthetic",
        root=os.path.abspath(out_dir),
        attribute_names=list(ATTRIBUTES),
        attribute_classes=[color_names, type_names],
    )
    design = (
        balanced_attributes(num_train, np.random.default_rng([seed, 5]))
        if balanced_train
        else [(None, None)] * num_train
    )
    for pid in range(1, ids + 1):
        rng = np.random.default_rng([seed, 3, pid])
        color, type_ = design[pid - 1] if pid <= num_train else (None, None)
        spec = sample_vehicle(rng, color=color, type_=type_)
        attributes = (
            (UNKNOWN, UNKNOWN)
            if pid in unlabelled
            else (color_names.index(spec.color), type_names.index(spec.type))
        )
        cams = _cameras_of(rng, cameras, images_per_id)
        splits = ["train"] * images_per_id
        if pid > num_train:
            splits = _test_splits(rng, cams)
        sprites: dict = {}
        for k, (cam, split) in enumerate(zip(cams, splits, strict=True)):
            image = render_image(
                spec,
                camera_models[cam - 1],
                image_size,
                np.random.default_rng([seed, 4, pid, k]),
                sprites,
            )
            path = os.path.join(image_dir, f"{pid:04d}_c{cam:02d}_{k:03d}.jpg")
            image.save(path, "JPEG", quality=95)
            dataset.split(split).append(Record(path, pid, cam, attributes, split))
    write_folder(dataset, out_dir)
    with open(os.path.join(out_dir, SETTINGS), "w", encoding="utf-8") as f:
        f.write("# Generated by anet_tf.data.synthetic.generate with:\n")
        for key, value in dict(
            ids=ids,
            test_ids=test_ids,
            cameras=cameras,
            images_per_id=images_per_id,
            image_size=image_size,
            unlabelled_fraction=unlabelled_fraction,
            seed=seed,
            balanced_train=balanced_train,
        ).items():
            f.write(f"{key}: {value}\n")
    return out_dir


def generate_from_config(
    synth: SynthConfig, out_dir: str, overwrite: bool = False
) -> str:
    """:func:`generate` with the settings of a ``data.synth`` config section."""
    return generate(out_dir, overwrite=overwrite, **dataclasses.asdict(synth))


def _check_arguments(ids, test_ids, cameras, images_per_id, image_size, fraction, seed):
    if not 1 <= test_ids < ids:
        raise ValueError(
            f"need 1 <= test_ids < ids. Received: test_ids={test_ids}, ids={ids}"
        )
    if cameras < 2:
        raise ValueError(
            f"need cameras >= 2 for cross-camera queries. Received: cameras={cameras}"
        )
    if images_per_id < 2:
        raise ValueError(
            f"need images_per_id >= 2 (a query and a gallery image). Received: "
            f"images_per_id={images_per_id}"
        )
    if image_size < 32:
        raise ValueError(f"need image_size >= 32. Received: image_size={image_size}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"unlabelled_fraction must be in [0, 1). Received: "
            f"unlabelled_fraction={fraction}"
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0. Received: seed={seed}")


def _prepare(out_dir: str, overwrite: bool) -> None:
    """Create ``out_dir``; refuse to mix with existing files unless ``overwrite``."""
    ours = ("images", ATTRIBUTE_DIR, MANIFEST, SETTINGS)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; choose a new folder, or pass "
                f"overwrite=True to replace a dataset generated there"
            )
        others = sorted(set(os.listdir(out_dir)) - set(ours))
        if others:
            raise FileExistsError(
                f"{out_dir} holds files the generator did not write "
                f"({', '.join(others[:5])}"
                f"); refusing to overwrite it"
            )
        for name in ours:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(out_dir, exist_ok=True)


def _cameras_of(rng: np.random.Generator, cameras: int, images: int) -> list[int]:
    """Camera (1-based) of each image: an identity passes 2 or more cameras, each of
    which takes at least one of its images."""
    seen = int(rng.integers(2, min(cameras, images) + 1))
    chosen = rng.choice(cameras, seen, replace=False) + 1
    cams = [int(chosen[k % seen]) for k in range(images)]
    rng.shuffle(cams)
    return cams


def _test_splits(rng: np.random.Generator, cams: list[int]) -> list[str]:
    """One query image from each of one or two cameras, never from every camera of
    the identity, so each query keeps a gallery image from a camera it is not."""
    distinct = sorted(set(cams))
    num_query = min(int(rng.integers(1, 3)), len(distinct) - 1)
    query_cams = set(int(c) for c in rng.choice(distinct, num_query, replace=False))
    splits = []
    for cam in cams:
        if cam in query_cams:
            query_cams.discard(cam)
            splits.append("query")
        else:
            splits.append("gallery")
    return splits
