"""The names the model accepts: variants, test-time features, backbones and
attribute branch types.

The config schema and the model's builders read them from here, so a variant, a
feature or a backbone is added in one place. This module imports nothing, so the
config may import it without loading Keras.
"""

# Table 1's rows: the baseline (f only), VAN (f + attribute branches), ANet (full).
VARIANTS = ("baseline", "van", "anet")
# Test-time features: f (eq. 1), fa (f concatenated with the a_i), j (eq. 8).
TEST_FEATURES = ("f", "fa", "j")
# The keys of :data:`anet_tf.model.backbone.BACKBONES`, in the config's order.
BACKBONE_NAMES = ("resnet50_ibn_a", "resnet50", "resnet18_ibn_a", "resnet18")
# Attribute branch types (model.attribute_branch): se, the paper's SE attention
# (eq. 2), or fc, Table 2's plain FC branch; built by anet_tf.model.layers.AttributeBranch.
ATTRIBUTE_BRANCHES = ("se", "fc")
