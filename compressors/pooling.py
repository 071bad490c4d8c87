"""Adaptive average pooling written as small matrices, so one matmul pools every group (and DeepStack level).

The bins are those of ``torch.nn.functional.adaptive_avg_pool1d/2d``: bin ``i`` of ``n`` over ``size`` items
covers ``[floor(i * size / n), ceil((i + 1) * size / n))``; when ``n > size`` bins repeat single items.
"""

from __future__ import annotations

import functools

import torch


def adaptive_bin(i: int, n: int, size: int) -> tuple[int, int]:
    """Bin ``i`` of ``n`` over ``size`` items, as adaptive average pooling cuts them: ``[start, end)``."""
    return (i * size) // n, -((-(i + 1) * size) // n)


def bin_average(start: int, end: int, size: int) -> torch.Tensor:
    """``[size]`` weights averaging items ``start..end-1``."""
    row = torch.zeros(size)
    row[start:end] = 1.0 / (end - start)
    return row


@functools.lru_cache(maxsize=256)
def pool_matrix(size: int, n: int) -> torch.Tensor:
    """``[n, size]``: 1-D adaptive average pooling of ``size`` items to ``n``."""
    return torch.stack([bin_average(*adaptive_bin(i, n, size), size) for i in range(n)])


@functools.lru_cache(maxsize=256)
def grid_pool_matrix(h: int, w: int, rows: int, cols: int) -> torch.Tensor:
    """``[rows * cols, h * w]``: 2-D adaptive average pooling of a row-major ``h x w`` grid."""
    return torch.kron(pool_matrix(h, rows), pool_matrix(w, cols))


def apply_pool(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``weights [K, N]`` over the token axis of ``features [..., N, D]`` → ``[..., K, D]``, in its dtype."""
    return torch.matmul(weights.to(features.device, features.dtype), features)
