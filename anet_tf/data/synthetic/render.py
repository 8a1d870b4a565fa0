"""Drawing a synthetic vehicle: :func:`render_vehicle` draws a
:class:`~anet_tf.data.synthetic.vehicles.VehicleSpec` seen from the side, front or
rear as an RGBA sprite with PIL (body, windows, wheels, lights and the identity
details)."""

from __future__ import annotations

import math

from PIL import Image
from PIL import ImageChops
from PIL import ImageDraw

from anet_tf.data.synthetic.vehicles import DARK
from anet_tf.data.synthetic.vehicles import FACE
from anet_tf.data.synthetic.vehicles import HEADLIGHT
from anet_tf.data.synthetic.vehicles import SIDE
from anet_tf.data.synthetic.vehicles import TAILLIGHT
from anet_tf.data.synthetic.vehicles import TYRE
from anet_tf.data.synthetic.vehicles import VehicleSpec


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


# long: one drawing of a vehicle's front or back, part after part (tyres, body, glass, lights, plate); splitting it would pass a dozen shared coordinates between pieces.
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
