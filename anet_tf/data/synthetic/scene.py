"""The synthetic cameras and scenes: each camera's view, scale, tilt, light, colour
cast, blur, occlusion and background (:func:`make_camera`), and one photo of a vehicle
by a camera with per-image jitter (:func:`render_image`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

from anet_tf.data.synthetic.render import render_vehicle
from anet_tf.data.synthetic.vehicles import VehicleSpec

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


@dataclass(frozen=True)
class TrackStep:
    """How one crop of a track differs from the track's base photo: the small
    changes between consecutive frames of a vehicle passing a camera.

    Args:
        scale: factor on the vehicle's size.
        dx, dy: shift of the vehicle, as a fraction of the image side.
        light: factor on the brightness.
        blur: Gaussian blur radius added, in pixels.
    """

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    light: float = 1.0
    blur: float = 0.0


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
    step: TrackStep | None = None,
) -> Image.Image:
    """One photo of vehicle ``spec`` by ``camera``, with per-image jitter.

    Args:
        sprites: cache of drawn views of this vehicle, keyed by base view.
        step: the crop's change within its track; the crops of a track share
            ``rng``'s seed (one base photo) and differ by their steps. None: no
            change (the same draws and pixels as before tracks existed).
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
    if step is not None:
        scale *= step.scale
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
    if step is not None:
        cx += step.dx * s
        ground += step.dy * s
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

    return _expose(scene, camera, rng, step)


def _expose(
    scene: Image.Image, camera: Camera, rng: np.random.Generator, step: TrackStep | None
) -> Image.Image:
    """The camera's blur, contrast, colour gains and noise on a composed scene
    (the track step's blur and light on top)."""
    if camera.blur > 0.25:
        radius = camera.blur * rng.uniform(0.7, 1.3)
        if step is not None:
            radius += step.blur
        scene = scene.filter(ImageFilter.GaussianBlur(radius))
    elif step is not None and step.blur > 0:
        scene = scene.filter(ImageFilter.GaussianBlur(step.blur))
    pixels = np.asarray(scene, np.float32)
    contrast = camera.contrast * rng.uniform(0.95, 1.05)
    gain = (
        camera.brightness
        * rng.uniform(0.92, 1.08)
        * np.array(camera.cast)
        * rng.uniform(0.97, 1.03, 3)
    )
    if step is not None:
        gain = gain * step.light
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
