"""The synthetic vehicle identities: body colours and their frequencies, detail
colours, the side and front/rear body models of each type, and :class:`VehicleSpec`
(everything that makes one identity look the way it does) with its sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
