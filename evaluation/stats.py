"""Accuracy with a 95% cluster bootstrap over videos, macro averages (MLVU's M-Avg) and paired differences.

Questions about one video are not independent (one bad decode, one confusing scene), so the interval
resamples *videos* with replacement, each bringing all its questions (a cluster bootstrap), ``RESAMPLES``
times with a fixed seed, and takes the 2.5th and 97.5th percentiles. A paired difference (method minus
``uniform`` on the same questions) is the mean of per-question differences in {-1, 0, 1}, resampled the
same way, so a shared hard video does not widen it. A macro average (MLVU's M-Avg, arXiv 2406.04264: the
mean of the per-task accuracies) is recomputed inside every resample; a task that a resample misses is left
out of that resample's mean.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval; ``n`` items in ``clusters`` clusters."""

    value: float
    lo: float
    hi: float
    n: int
    clusters: int

    def to_dict(self, name: str = "value", digits: int = 4) -> dict:
        return {
            name: round(self.value, digits),
            "ci95": [round(self.lo, digits), round(self.hi, digits)],
            "n": self.n,
            "n_videos": self.clusters,
        }


def _tables(clusters: Sequence[Hashable], values: Sequence[float], labels: Sequence[Hashable] | None):
    """Per cluster (rows, first-seen order) and label (columns): sums S [K, G] and counts N [K, G]."""
    rows = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    labels = [0] * len(values) if labels is None else list(labels)
    cols = {g: j for j, g in enumerate(dict.fromkeys(labels))}
    sums = np.zeros((len(rows), len(cols)))
    counts = np.zeros((len(rows), len(cols)))
    for c, g, v in zip(clusters, labels, values, strict=True):
        sums[rows[c], cols[g]] += v
        counts[rows[c], cols[g]] += 1
    return sums, counts


def resample_weights(clusters: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """W [B, K]: how many times each of K clusters is drawn in each of B resamples (K draws each)."""
    draws = np.random.default_rng(seed).integers(0, clusters, size=(resamples, clusters))
    offsets = draws + clusters * np.arange(resamples)[:, None]
    return np.bincount(offsets.ravel(), minlength=resamples * clusters).reshape(resamples, clusters)


def _macro(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over labels of sum/count, labels with no items left out: [..., G] -> [...]."""
    present = counts > 0
    per_label = sums / np.maximum(counts, 1)  # 0 where absent (sums are 0 there too)
    return per_label.sum(-1) / np.maximum(present.sum(-1), 1)


def cluster_bootstrap(
    clusters: Sequence[Hashable],
    values: Sequence[float],
    labels: Sequence[Hashable] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Estimate | None:
    """The mean of ``values`` (or, with ``labels``, the mean over labels of each label's mean) and its 95%
    cluster-bootstrap interval; None when there are no values."""
    if len(values) == 0:
        return None
    sums, counts = _tables(clusters, values, labels)
    point = float(_macro(sums.sum(0), counts.sum(0)))
    weights = resample_weights(len(sums), resamples=resamples, seed=seed)
    samples = _macro(weights @ sums, weights @ counts)  # [B]
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi), len(values), len(sums))
