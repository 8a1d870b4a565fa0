from anet_tf.model.weights.fastreid import *  # noqa: F401,F403
