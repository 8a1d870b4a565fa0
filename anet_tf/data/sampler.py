"""The identity-balanced P x K sampler (as FastReID / torchreid), in NumPy.

Triplet losses need positives and negatives inside every batch, so a training batch
holds P identities with K images each. The sampler only produces *indices* into the
training records; :mod:`anet_tf.data.pipeline` turns them into images.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np

from anet_tf.data.records import DataError


class PKSampler:
    """Yields batches of record indices: P distinct identities x K images each.

    One epoch is ``steps_per_epoch = max(1, len(pids) // global_batch_size)`` batches,
    i.e. about one pass over the training images. An epoch is drawn as follows:

    1. A *round* shuffles the images of every identity and cuts them into chunks of
       K. The last, short chunk of an identity is completed with other images of the
       same identity, drawn without replacement where the identity has >= K images
       and with replacement where it has fewer than K. So every image is in a chunk
       (FastReID and torchreid drop the remainder instead).
    2. Each batch takes one chunk from each of P distinct identities, drawn at random
       with probability proportional to the chunks an identity has left (weighted
       sampling without replacement, Efraimidis-Spirakis keys). Identities with many
       images are thus spread over the whole epoch instead of piling up at its end.
    3. When fewer than P identities have chunks left, a new round is added to the
       left-over chunks, so an epoch always has exactly ``steps_per_epoch`` batches.

    Under ``tf.distribute`` a global batch is split into contiguous per-replica
    slices; with ``num_replicas = R`` a global batch is R independent P x K batches
    laid end to end, so each replica's slice is itself P x K.

    The random generator of epoch ``e`` is ``numpy.random.default_rng([seed, e])``:
    an epoch depends only on (seed, e), so a resumed run draws the same batches.

    Args:
        pids: identity of each training record (any integers; index = record index).
        num_instances: K, images per identity in a batch.
        num_ids_per_batch: P, identities per batch (per replica).
        num_replicas: R, replicas that share one global batch.
        seed: base seed of the per-epoch generators.
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_instances: int,
        num_ids_per_batch: int,
        num_replicas: int = 1,
        seed: int = 0,
    ):
        if num_instances < 1:
            raise DataError(
                f"num_instances (K) must be >= 1. Received: num_instances={num_instances}"
            )
        if num_ids_per_batch < 1:
            raise DataError(
                "num_ids_per_batch (P) must be >= 1. Received: "
                f"num_ids_per_batch={num_ids_per_batch}"
            )
        if num_replicas < 1:
            raise DataError(
                f"num_replicas must be >= 1. Received: num_replicas={num_replicas}"
            )
        pids = np.asarray(pids)
        if pids.ndim != 1 or pids.size == 0:
            raise DataError(
                f"pids must be a non-empty list of identities. Received: {pids.size} "
                "records"
            )
        ids, inverse = np.unique(pids, return_inverse=True)
        if len(ids) < num_ids_per_batch:
            raise DataError(
                f"a batch needs P={num_ids_per_batch} distinct identities but the "
                f"training split has only {len(ids)}; lower data.batch_size or "
                "raise data.num_instances"
            )
        self.num_instances = num_instances
        self.num_ids_per_batch = num_ids_per_batch
        self.num_replicas = num_replicas
        self.seed = seed
        self.num_records = int(pids.size)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
        self._groups = np.split(order, bounds)

    @property
    def batch_size(self) -> int:
        """P x K, the batch of one replica."""
        return self.num_ids_per_batch * self.num_instances

    @property
    def global_batch_size(self) -> int:
        """R x P x K, the batch the dataset yields."""
        return self.num_replicas * self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch: about one pass over the records, at least 1."""
        return max(1, self.num_records // self.global_batch_size)

    def iter_epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """The global batches of ``epoch``, each an int64 array [R * P * K].

        Within each replica slice, identity j occupies positions j*K .. j*K+K-1.
        """
        rng = np.random.default_rng([self.seed, epoch])
        num_ids = len(self._groups)
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_ids)]
        left = np.zeros(num_ids, dtype=np.int64)
        p = self.num_ids_per_batch
        for _ in range(self.steps_per_epoch):
            parts = []
            for _ in range(self.num_replicas):
                if np.count_nonzero(left) < p:
                    self._add_round(rng, chunks, left)
                live = np.flatnonzero(left)
                keys = np.log(rng.random(len(live))) / left[live]
                chosen = live[np.argpartition(-keys, p - 1)[:p]]
                for i in chosen:
                    parts.append(chunks[i].pop())
                left[chosen] -= 1
            yield np.concatenate(parts).astype(np.int64)

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """All global batches of ``epoch`` as an array [steps_per_epoch, R * P * K]."""
        return np.stack(list(self.iter_epoch(epoch)))

    def _add_round(
        self, rng: np.random.Generator, chunks: list[list[np.ndarray]], left: np.ndarray
    ) -> None:
        k = self.num_instances
        for i, group in enumerate(self._groups):
            images = rng.permutation(group)
            short = (-len(images)) % k
            if short:
                if len(images) >= k:
                    tail = len(images) % k
                    extra = rng.choice(images[:-tail], size=short, replace=False)
                else:
                    extra = rng.choice(images, size=short, replace=True)
                images = np.concatenate([images, extra])
            new = list(images.reshape(-1, k))
            # Chunks are popped from the end; the new round goes below the old one.
            chunks[i][:0] = new
            left[i] += len(new)
