from anet_tf.data.synthetic.render import *  # noqa: F401,F403
from anet_tf.data.synthetic.render import SETTINGS, generate, generate_from_config  # noqa: F401
