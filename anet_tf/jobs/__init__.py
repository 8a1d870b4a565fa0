"""The jobs behind the commands: each spans the data flow and may import any
package below it (training, evaluation, export, search), raises and returns, and
leaves reporting (error lines, exit codes) to :mod:`anet_tf.commands`.

* :mod:`anet_tf.jobs.fit_evaluate_export`: fit -> evaluate -> export a run, and
  evaluate a run, a checkpoint or a SavedModel.
* :mod:`anet_tf.jobs.study`: the ablation study of Tables 1-2 as ordinary runs.
"""
