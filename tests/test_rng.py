"""Counter-based random numbers: a member's draws depend on its seed, the stream and the counter,
never on the other members of the stack."""

import torch

from rungefit import rng

SEEDS = torch.tensor([5, 0, 9])


def test_uniform_rows_are_functions_of_their_own_seed():
    rows = rng.uniform(SEEDS, rng.STREAM_DATA, 1000)
    assert rows.shape == (3, 1000) and 0 <= rows.min() and rows.max() < 1
    assert abs(float(rows.mean()) - 0.5) < 0.02
    assert torch.equal(rows[1], rng.uniform(torch.tensor([0]), rng.STREAM_DATA, 1000)[0])
    assert not torch.equal(rows[1], rng.uniform(torch.tensor([0]), rng.STREAM_INIT, 1000)[0])


def test_permutations_are_functions_of_seed_stream_and_counter():
    rows = rng.permutations(SEEDS, rng.STREAM_SHUFFLE, 50, counter=3)
    assert all(sorted(row.tolist()) == list(range(50)) for row in rows)
    assert torch.equal(rows, rng.permutations(SEEDS, rng.STREAM_SHUFFLE, 50, counter=3))
    alone = rng.permutations(torch.tensor([0]), rng.STREAM_SHUFFLE, 50, counter=3)
    assert torch.equal(rows[1], alone[0])
    assert not torch.equal(rows[1], rng.permutations(torch.tensor([0]), rng.STREAM_SHUFFLE, 50, counter=4)[0])
    assert not torch.equal(rows[0], rows[1])


def test_permutations_shuffle_evenly():
    # Which point comes first, over many counters: each about equally often.
    landing = torch.stack([rng.permutations(SEEDS, rng.STREAM_SHUFFLE, 10, counter=c)[:, 0] for c in range(3000)])
    counts = torch.bincount(landing.flatten(), minlength=10).double()
    assert (counts - 900).abs().max() < 120  # ±4 standard deviations of a binomial(9000, 0.1)


def test_cpu_permutation_rows_are_randperm_seeded_by_the_first_key():
    # The row seeds are hashed in NumPy; the same hash in torch (_keys) must give the same seeds,
    # or every shuffling order, and with it every result, would silently change.
    seeds = torch.tensor([0, 7, 2**32 - 1, 123456789])
    for counter in (0, 1, 299, 10**6):
        keys = rng._keys(seeds, rng.STREAM_SHUFFLE, counter, 1)[:, 0].tolist()
        expected = torch.stack([torch.randperm(40, generator=torch.Generator().manual_seed(key)) for key in keys])
        assert torch.equal(rng.permutations(seeds, rng.STREAM_SHUFFLE, 40, counter=counter), expected)


def test_permutations_fill_out():
    out = torch.full((3, 20), -1, dtype=torch.int64)
    returned = rng.permutations(SEEDS, rng.STREAM_SHUFFLE, 20, counter=2, out=out)
    assert returned is out
    assert torch.equal(out, rng.permutations(SEEDS, rng.STREAM_SHUFFLE, 20, counter=2))
