"""A helper for tests that score the same sequences two ways (prompt cache, prefix trees,
whole passes): every statistic must agree, the float ones to rounding."""

from __future__ import annotations

import numpy as np


def assert_same_statistics(got: dict, want: dict, variants: list[str]) -> None:
    """`got` and `want`: Engine.stats results (variant -> ItemStats) over the same items."""
    for v in variants:
        a, b = got[v], want[v]
        assert np.array_equal(a.n_tokens, b.n_tokens) and np.array_equal(a.em, b.em)
        assert np.array_equal(a.es, b.es)
        np.testing.assert_allclose(a.nll_sum, b.nll_sum, rtol=1e-5)
        for x, y in zip(a.token_logprobs + a.token_z, b.token_logprobs + b.token_z, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
