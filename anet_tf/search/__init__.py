"""Using a trained model: embed images, search a gallery by appearance and
attributes.

Everything here works from an exported SavedModel (the model TF Serving runs):

* :mod:`anet_tf.search.sources`: the images to embed (a folder, a manifest, a text
  list, a dataset split) with what is known about them.
* :mod:`anet_tf.search.serving`: the SavedModel, called through its
  ``serving_default`` signature, and its fingerprint.
* :mod:`anet_tf.search.embed`: the embedding loop, images -> embeddings and
  predicted attributes.
* :mod:`anet_tf.search.embeddings`: the ``.npz`` file they are saved in.
* :mod:`anet_tf.search.index`: a faiss gallery index built from such files (exact
  inner product, or IVF-PQ for very large galleries), searched with attribute
  filters.

The ``embed``, ``index build`` and ``search`` commands are in
:mod:`anet_tf.commands.search`. Importing this package does not import TensorFlow
or faiss; each module imports them where it needs them.
"""

from anet_tf.search.embed import embed_images
from anet_tf.search.embeddings import Embeddings
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.index import GalleryIndex
from anet_tf.search.index import IndexMismatchError
from anet_tf.search.index import build_index
from anet_tf.search.index import load_index
from anet_tf.search.index import parse_where
from anet_tf.search.serving import ServingModel
from anet_tf.search.serving import model_fingerprint
from anet_tf.search.sources import ImageList
from anet_tf.search.sources import list_images

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
