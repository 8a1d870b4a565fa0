"""``anet-tf ablate``: the ablation study of section 4.3 (Tables 1 and 2)."""

from anet_tf.jobs.study.running import *  # noqa: F403
