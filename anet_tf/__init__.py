"""anet-tf: AttributeNet (ANet) vehicle re-identification in TensorFlow / Keras 3."""

__version__ = "0.1.0"


def load(path):
    """A trained model from a run folder, checkpoint or SavedModel, to embed images
    and predict their attributes: :func:`anet_tf.predictor.load`."""
    from anet_tf.predictor import load as _load

    return _load(path)
