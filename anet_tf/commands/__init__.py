"""The commands of ``anet-tf``: one module per group, each holding its argparse
parsers and its handlers.

==============  ===============================================================
module          commands
==============  ===============================================================
``fit``         ``fit``, ``ablate``
``evaluate``    ``evaluate``
``data``        ``synth``, ``data check``, ``summary``, ``weights convert``
``export``      ``export``, ``client``
``search``      ``embed``, ``index build``, ``search``
``config``      ``config list``, ``config show``, and the ``--config`` and
                ``--set`` options every command shares
``visualize``   ``visualize ranked|activation|curves|cmc|confusion|projector``
``errors``      the exit codes and the one error reporter every command goes
                through
==============  ===============================================================

A parser names its handler (``set_defaults(handler=...)``); a handler takes the
parsed arguments, returns the exit code or raises, and leaves the jobs to the
library (:mod:`anet_tf.jobs`, :mod:`anet_tf.export`,
:mod:`anet_tf.search`, :mod:`anet_tf.visualize`). :mod:`anet_tf.cli` builds the
parser and dispatches. These modules import TensorFlow only inside the handlers,
so ``anet-tf --help`` and the input path checks stay instant.
"""
