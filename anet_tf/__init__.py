"""anet-tf: AttributeNet (ANet) vehicle re-identification in TensorFlow / Keras 3."""

__version__ = "0.1.0"
