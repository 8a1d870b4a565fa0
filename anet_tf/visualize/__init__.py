"""Pictures of what a trained model does (matplotlib, PNG) and a TensorBoard
projector export.

* :func:`plot_ranked_list`: a query and its top-k gallery matches, framed green
  (same vehicle) or red (another vehicle) where the ids are known, as in Figure 4
  (row 1) of the paper.
* :func:`plot_activation_maps`: the unified attribute map G (eq. 5) and the
  distilled map G_reid (eq. 6) over each image, as in Figure 4 (rows 2 and 3);
  the maps come from :func:`anet_tf.evaluation.activation.activation_maps`.
* :func:`plot_training_curves`: the loss terms, learning rate and throughput of a
  run's ``log.csv``.
* :func:`plot_cmc`: CMC curves of ``anet-tf evaluate --json-out`` files.
* :func:`plot_confusion`: the confusion matrix of one attribute branch, from the
  attribute accuracy in a run's ``metrics.json``.
* :func:`plot_roc`: the same-vehicle and different-vehicle score histograms
  with their thresholds, and the ROC curve, of an ``anet-tf calibrate`` file.
* :func:`plot_ablation`: mean ± std bars of the variants of ``anet-tf ablate``.
* :func:`export_projector`: embeddings with thumbnail sprites and attributes as
  metadata, for TensorBoard's projector.

Every picture has a fixed size in pixels (no tight bounding box), given by the
``*_size`` functions, so the same call gives the same picture size whatever the
labels.

The pictures take plain data (paths, ids, arrays, and the objects of
``anet_tf.search`` read by their attributes), so this package does not import the
search package; the commands that draw them (:mod:`anet_tf.commands.visualize`)
join the two. Bad input raises :class:`VisualizeError`.

One module per picture (``ranked``, ``activation``, ``curves``, ``cmc``,
``confusion``, ``roc``, ``ablation``, ``projector``); ``readers`` reads the files they are
drawn from and ``common`` holds what they share.
"""

from anet_tf.visualize.ablation import plot_ablation
from anet_tf.visualize.activation import activation_size
from anet_tf.visualize.activation import plot_activation_maps
from anet_tf.visualize.cmc import plot_cmc
from anet_tf.visualize.common import DPI
from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.confusion import confusion_size
from anet_tf.visualize.confusion import plot_confusion
from anet_tf.visualize.curves import plot_training_curves
from anet_tf.visualize.projector import export_projector
from anet_tf.visualize.projector import sprite_layout
from anet_tf.visualize.ranked import RankedRow
from anet_tf.visualize.ranked import plot_ranked_list
from anet_tf.visualize.ranked import ranked_list_size
from anet_tf.visualize.readers import read_attribute_accuracy
from anet_tf.visualize.readers import read_cmc
from anet_tf.visualize.readers import read_log
from anet_tf.visualize.roc import plot_roc

__all__ = [
    "DPI",
    "RankedRow",
    "VisualizeError",
    "activation_size",
    "confusion_size",
    "export_projector",
    "plot_ablation",
    "plot_activation_maps",
    "plot_cmc",
    "plot_confusion",
    "plot_ranked_list",
    "plot_roc",
    "plot_training_curves",
    "ranked_list_size",
    "read_attribute_accuracy",
    "read_cmc",
    "read_log",
    "sprite_layout",
]
