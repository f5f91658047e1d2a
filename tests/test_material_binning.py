"""Log-spaced grouping of moduli into materials ("gap value" binning)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from material import MaterialError, bin_moduli


def _moduli(seed: int = 0, m: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(np.log(5.0), np.log(25_000.0), m))  # marrow floor to cortex


@pytest.mark.parametrize("groups", [1, 2, 7, 64, 256])
def test_groups_bound_the_relative_error(groups: int) -> None:
    e = _moduli()
    binned = bin_moduli(e, groups)
    ratio = (e.max() / e.min()) ** (1.0 / groups)
    assert binned.bin_ratio == pytest.approx(ratio, rel=1e-12)
    assert binned.num_groups <= groups and binned.requested_groups == groups
    assigned = binned.element_moduli()
    rel = np.abs(assigned - e) / e
    assert binned.max_rel_error == pytest.approx(rel.max(), rel=1e-12)
    assert rel.max() <= (ratio - 1.0) / (ratio + 1.0) * (1.0 + 1e-12)
    # groups: increasing E, each value within its members' range, counts add up
    assert np.all(np.diff(binned.E_MPa) > 0)
    for g in range(binned.num_groups):
        members = e[binned.group == g]
        assert members.size == binned.counts[g]
        assert binned.lower_MPa[g] == members.min() and binned.upper_MPa[g] == members.max()
        assert members.min() <= binned.E_MPa[g] <= members.max()
        # equal largest relative error on both sides: the harmonic mean of min and max
        lo, hi = members.min(), members.max()
        assert binned.E_MPa[g] == pytest.approx(2 * lo * hi / (lo + hi), rel=1e-15)
    assert int(binned.counts.sum()) == e.size
    # same bin in log space <=> same group
    bins = np.minimum((np.log(e / e.min()) / np.log(ratio)).astype(int), groups - 1)
    assert np.unique(bins).size == binned.num_groups
    for b in np.unique(bins):
        assert np.unique(binned.group[bins == b]).size == 1


def test_target_error_uses_the_fewest_bins() -> None:
    e = _moduli(1)
    for target in (0.2, 0.05, 0.01, 0.001):
        binned = bin_moduli(e, max_rel_error=target)
        assert binned.max_rel_error <= target
        ratio = (1.0 + target) / (1.0 - target)
        assert binned.requested_groups == math.ceil(math.log(e.max() / e.min()) / math.log(ratio))
        # one bin fewer could not guarantee the target with these bins' widths
        fewer = binned.requested_groups - 1
        if fewer >= 1:
            wider = (e.max() / e.min()) ** (1.0 / fewer)
            assert (wider - 1.0) / (wider + 1.0) > target
    summary = bin_moduli(e, max_rel_error=0.01).to_dict()
    assert summary["max_rel_error"] <= 0.01 and summary["groups"][0]["count"] > 0


def test_degenerate_and_invalid_inputs() -> None:
    same = bin_moduli(np.full(10, 123.0), 16)
    assert same.num_groups == 1 and same.max_rel_error == 0.0 and same.E_MPa[0] == 123.0
    assert same.bin_ratio == 1.0
    for bad, match in (((np.array([1.0, 0.0]), 4), "finite and positive"),
                       ((np.array([]), 4), "finite and positive"),
                       ((np.array([1.0, np.nan]), 4), "finite and positive"),
                       ((np.array([1.0, 2.0]), 0), "integer >= 1")):
        with pytest.raises(MaterialError, match=match):
            bin_moduli(*bad)
    with pytest.raises(MaterialError, match="either a number of groups"):
        bin_moduli(np.array([1.0, 2.0]))
    with pytest.raises(MaterialError, match="either a number of groups"):
        bin_moduli(np.array([1.0, 2.0]), 4, max_rel_error=0.1)
    with pytest.raises(MaterialError, match=r"not in \(0, 1\)"):
        bin_moduli(np.array([1.0, 2.0]), max_rel_error=1.5)
