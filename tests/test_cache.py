"""The byte-bounded LRU behind the frame and token caches."""

import numpy as np
import torch

from pipeline.cache import ByteLRU, nbytes


def test_nbytes_counts_tensors_and_arrays_inside_containers():
    value = {"a": torch.zeros(10, dtype=torch.float32), "b": [np.zeros(5, dtype=np.uint8), (torch.ones(2),)]}
    assert nbytes(value) == 40 + 5 + 8


def test_cache_never_holds_more_than_its_bound_and_evicts_least_recently_used():
    evicted = []
    cache = ByteLRU(100, on_evict=evicted.append)
    a, b, c = (np.zeros(40, dtype=np.uint8) for _ in range(3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "a" is now the most recently used
    cache.put("c", c)
    assert cache.size_bytes <= 100
    assert "b" not in cache and "a" in cache and "c" in cache
    assert evicted == [b]


def test_value_larger_than_the_cache_is_not_stored():
    cache = ByteLRU(10)
    cache.put("big", np.zeros(11, dtype=np.uint8))
    assert len(cache) == 0 and cache.get("big") is None


def test_replacing_a_key_updates_its_size():
    cache = ByteLRU(100)
    cache.put("k", np.zeros(60, dtype=np.uint8))
    cache.put("k", np.zeros(30, dtype=np.uint8))
    assert cache.size_bytes == 30 and len(cache) == 1
