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
* :mod:`anet_tf.search.gallery`: what every gallery backend shares (the rows,
  attribute filters, the model check, matches, index settings).
* :mod:`anet_tf.search.index`: a faiss gallery index folder built from such files
  (exact inner product, IVF, IVF-PQ or HNSW), searched with attribute, camera and
  capture-time filters (``search(..., where=, cameras=, not_cameras=, since=,
  until=, query_cameras=)``, the same on both backends).
* :mod:`anet_tf.search.milvus`: the same gallery in a Milvus collection (Milvus
  Lite or a server), with rows removed by camera or time.
* :mod:`anet_tf.search.decisions`: each match's P(same vehicle) and a
  same/different decision at an operating point of the model's calibration
  (:func:`operating_point`), and per query "match" or "no match" (:func:`answer`).
* :mod:`anet_tf.search.targets`: the backend chosen by target:
  :func:`open_gallery`, :func:`build_gallery`, :func:`add_to_gallery`.
* :mod:`anet_tf.search.link`, :mod:`anet_tf.search.link_files`: tracks of several
  cameras linked into vehicles (``anet-tf link``), and its files.

The ``embed``, ``index build|add|remove`` and ``search`` commands are in
:mod:`anet_tf.commands.search`. Importing this package does not import TensorFlow,
faiss or pymilvus; each module imports them where it needs them.
"""

from anet_tf.search.decisions import OperatingPoint
from anet_tf.search.decisions import answer
from anet_tf.search.decisions import operating_point
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
from anet_tf.search.targets import add_to_gallery
from anet_tf.search.targets import build_gallery
from anet_tf.search.targets import open_gallery

__all__ = [
    "Embeddings",
    "GalleryIndex",
    "ImageList",
    "IndexMismatchError",
    "OperatingPoint",
    "SearchError",
    "ServingModel",
    "add_to_gallery",
    "answer",
    "build_gallery",
    "build_index",
    "embed_images",
    "list_images",
    "load_embeddings",
    "load_index",
    "model_fingerprint",
    "open_gallery",
    "operating_point",
    "parse_where",
    "save_embeddings",
]
