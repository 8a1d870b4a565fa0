"""`python -m anet_tf ...` is the `anet-tf` command."""

import sys

from anet_tf.launch import main

sys.exit(main())
