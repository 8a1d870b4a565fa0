"""anet-tf: AttributeNet (ANet) vehicle re-identification in TensorFlow / Keras 3."""

from anet_tf._version import __version__ as __version__


def load(path):
    """A trained model from a run folder, checkpoint or SavedModel, to embed images
    and predict their attributes: :func:`anet_tf.predictor.load`."""
    from anet_tf.predictor import load as _load

    return _load(path)
