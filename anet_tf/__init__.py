"""anet-tf: AttributeNet (ANet) vehicle re-identification in TensorFlow / Keras 3."""

from anet_tf._version import __version__ as __version__


def load(path):
    """A trained model from a run folder, checkpoint or SavedModel, to embed images
    and predict their attributes: :func:`anet_tf.predictor.load`."""
    import os

    from anet_tf import native_output

    # TensorFlow's C++ start-up lines are not for users, as in the CLI
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    native_output.import_tensorflow()
    from anet_tf.predictor import load as _load

    return _load(path)
