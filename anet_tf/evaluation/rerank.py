"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), in NumPy.

The computation follows the authors' reference ``re_ranking`` (the version shipped
by torchreid and FastReID), so that numbers are comparable with papers that report
"+ re-ranking". It needs the (num_query + num_gallery)^2 distance matrix of all
images, so it is for galleries that fit in memory (VeRi-776: 13,257 images, about
0.7 GB in float32); the VeRi-Wild-large gallery does not.
"""

from __future__ import annotations

import numpy as np


# long: 20 lines of docstring; 67 lines of code following eq. (6)-(14) of Zhong et al. and the reference code step by step.
def k_reciprocal_rerank(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked query x gallery distances, eq. (12)-(14) of Zhong et al.

    d* = (1 - lambda) d_J + lambda d, with d_J the Jaccard distance between the
    k-reciprocal neighbour sets (encoded as Gaussian-weighted vectors V, eq. (7),
    expanded with the half-size k1/2 reciprocal sets of their members, eq. (6), and
    averaged over the k2 nearest neighbours, local query expansion) and d the
    original distance, squared and divided by its per-image maximum as in the
    reference code.

    Args:
        q_g_dist: [num_query, num_gallery] distances (cosine or Euclidean).
        q_q_dist: [num_query, num_query] distances among the queries.
        g_g_dist: [num_gallery, num_gallery] distances among the gallery.
        k1: size of the k-reciprocal neighbourhood (20 in the paper).
        k2: neighbours of the local query expansion (6); 1 disables it.
        lambda_value: weight of the original distance (0.3).

    Returns:
        float32 [num_query, num_gallery] re-ranked distances.
    """
    q_g_dist = np.asarray(q_g_dist, dtype=np.float32)
    num_query, num_gallery = q_g_dist.shape
    if np.shape(q_q_dist) != (num_query, num_query) or np.shape(g_g_dist) != (
        num_gallery,
        num_gallery,
    ):
        raise ValueError(
            "q_q_dist must be [num_query, num_query] and g_g_dist [num_gallery, "
            f"num_gallery]. Received: q_g_dist.shape={q_g_dist.shape}, "
            f"q_q_dist.shape={np.shape(q_q_dist)}, g_g_dist.shape={np.shape(g_g_dist)}"
        )
    num_all = num_query + num_gallery
    if not 1 <= k2 <= k1 < num_all - 1:
        raise ValueError(
            f"need 1 <= k2 <= k1 < num_query + num_gallery - 1 = {num_all - 1}. "
            f"Received: k1={k1}, k2={k2}"
        )
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1]. Received: {lambda_value}")

    dist = np.block(
        [
            [np.asarray(q_q_dist, dtype=np.float32), q_g_dist],
            [q_g_dist.T, np.asarray(g_g_dist, dtype=np.float32)],
        ]
    )
    dist = np.square(dist)
    dist = (dist / np.max(dist, axis=0)).T
    initial_rank = np.argsort(dist, axis=1, kind="stable").astype(np.int32)

    V = np.zeros((num_all, num_all), dtype=np.float32)
    half_k1 = int(np.around(k1 / 2.0))
    for i in range(num_all):
        expansion = k_reciprocal = _reciprocal_neighbours(initial_rank, i, k1)
        for candidate in k_reciprocal:
            candidate_set = _reciprocal_neighbours(initial_rank, candidate, half_k1)
            overlap = np.intersect1d(candidate_set, k_reciprocal).size
            if overlap > 2.0 / 3.0 * candidate_set.size:
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)

    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(num_all)])

    # Jaccard distance through an inverted index: image i and image j share
    # sum_k min(V[i, k], V[j, k]) of weight.
    inverted = [np.flatnonzero(V[:, k]) for k in range(num_gallery + num_query)]
    jaccard = np.zeros((num_query, num_all), dtype=np.float32)
    for i in range(num_query):
        shared = np.zeros(num_all, dtype=np.float32)
        for k in np.flatnonzero(V[i]):
            images = inverted[k]
            shared[images] += np.minimum(V[i, k], V[images, k])
        jaccard[i] = 1.0 - shared / (2.0 - shared)

    final = jaccard * (1.0 - lambda_value) + dist[:num_query] * lambda_value
    return final[:, num_query:].astype(np.float32)


def _reciprocal_neighbours(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k), eq. (4): the k-nearest neighbours of i (i included) that have i among
    their own k-nearest neighbours."""
    forward = initial_rank[i, : k + 1]
    backward = initial_rank[forward, : k + 1]
    return forward[np.any(backward == i, axis=1)]
