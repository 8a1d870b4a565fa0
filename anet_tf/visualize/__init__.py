from anet_tf.visualize.ranked import *  # noqa: F401,F403
