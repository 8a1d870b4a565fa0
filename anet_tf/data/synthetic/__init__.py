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

Modules: :mod:`~anet_tf.data.synthetic.vehicles` (the identities: palettes, body
models, :class:`VehicleSpec` and its sampling), :mod:`~anet_tf.data.synthetic.render`
(a vehicle drawn as a sprite), :mod:`~anet_tf.data.synthetic.scene` (cameras,
backgrounds, one photo of a vehicle) and :mod:`~anet_tf.data.synthetic.writer`
(:func:`generate`: the splits and the dataset folder).
"""

from anet_tf.data.synthetic.render import render_vehicle
from anet_tf.data.synthetic.scene import CAMERA_VIEWS
from anet_tf.data.synthetic.scene import Camera
from anet_tf.data.synthetic.scene import make_camera
from anet_tf.data.synthetic.scene import render_image
from anet_tf.data.synthetic.vehicles import COLORS
from anet_tf.data.synthetic.vehicles import TYPES
from anet_tf.data.synthetic.vehicles import VehicleSpec
from anet_tf.data.synthetic.vehicles import balanced_attributes
from anet_tf.data.synthetic.vehicles import sample_vehicle
from anet_tf.data.synthetic.writer import ATTRIBUTES
from anet_tf.data.synthetic.writer import SETTINGS
from anet_tf.data.synthetic.writer import generate
from anet_tf.data.synthetic.writer import generate_from_config

__all__ = [
    "ATTRIBUTES",
    "CAMERA_VIEWS",
    "COLORS",
    "SETTINGS",
    "TYPES",
    "Camera",
    "VehicleSpec",
    "balanced_attributes",
    "generate",
    "generate_from_config",
    "make_camera",
    "render_image",
    "render_vehicle",
    "sample_vehicle",
]
