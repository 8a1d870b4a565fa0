"""Using a trained model: embed images, search a gallery by appearance and
attributes.

Everything here works from an exported SavedModel (the model TF Serving runs):

* :mod:`anet_tf.search.embed`: images (a folder, a manifest, a dataset split) ->
  embeddings and predicted attributes, saved as an ``.npz`` file.
* :mod:`anet_tf.search.index`: a faiss gallery index built from such files (exact
  inner product, or IVF-PQ for very large galleries), searched with attribute
  filters.
* :mod:`anet_tf.search.commands`: the ``embed``, ``index build``, ``search`` and
  ``visualize`` commands.

Importing this package does not import TensorFlow or faiss; each module imports
them where it needs them.
"""

from anet_tf.search.embed import Embeddings
from anet_tf.search.embed import ImageList
from anet_tf.search.embed import SearchError
from anet_tf.search.embed import ServingModel
from anet_tf.search.embed import embed_images
from anet_tf.search.embed import list_images
from anet_tf.search.embed import load_embeddings
from anet_tf.search.embed import model_fingerprint
from anet_tf.search.embed import save_embeddings
from anet_tf.search.index import GalleryIndex
from anet_tf.search.index import IndexMismatchError
from anet_tf.search.index import build_index
from anet_tf.search.index import load_index
from anet_tf.search.index import parse_where

__all__ = [
    "Embeddings",
    "GalleryIndex",
    "ImageList",
    "IndexMismatchError",
    "SearchError",
    "ServingModel",
    "build_index",
    "embed_images",
    "list_images",
    "load_embeddings",
    "load_index",
    "model_fingerprint",
    "parse_where",
    "save_embeddings",
]
