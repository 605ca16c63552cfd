"""In-memory batching against plain per-sample bookkeeping: coverage, order, shards, counts."""

from __future__ import annotations

import pytest
import torch

from mixupe.data import GraphSplit, TensorSplit, batches, num_batches
from mixupe.errors import ConfigError


def indexed_split(n: int) -> TensorSplit:
    """Sample i has features (i, 2i) and label i % 3, so a batch reveals which rows it holds."""
    i = torch.arange(n, dtype=torch.float32)
    return TensorSplit(torch.stack([i, 2 * i], dim=1), torch.arange(n) % 3)


def flat(batch_lists: list[list[int]]) -> list[int]:
    return [i for b in batch_lists for i in b]


def rows_of(split_batches) -> list[list[int]]:
    out = []
    for x, y in split_batches:
        ids = x[:, 0].long()
        assert torch.equal(x[:, 1], 2 * x[:, 0])  # rows are not torn apart
        assert torch.equal(y, ids % 3)  # labels travel with their rows
        out.append(ids.tolist())
    return out


@pytest.mark.parametrize(("n", "bs", "drop_last"), [(10, 3, False), (10, 3, True), (9, 3, False)])
def test_unshuffled_batches_are_consecutive_rows(n, bs, drop_last):
    got = rows_of(batches(indexed_split(n), batch_size=bs, shuffle=False, drop_last=drop_last))
    stop = n - n % bs if drop_last else n
    expected = [list(range(s, min(s + bs, stop))) for s in range(0, stop, bs)]
    assert got == expected
    assert len(got) == num_batches(n, batch_size=bs, drop_last=drop_last)


def test_shuffled_epoch_is_the_generator_permutation():
    split = indexed_split(23)
    got = rows_of(batches(split, batch_size=5, shuffle=True,
                          generator=torch.Generator().manual_seed(7)))
    expected = torch.randperm(23, generator=torch.Generator().manual_seed(7)).tolist()
    assert flat(got) == expected
    assert [len(b) for b in got] == [5, 5, 5, 5, 3]


def test_same_seed_same_order_and_successive_epochs_differ():
    split = indexed_split(50)
    g = torch.Generator().manual_seed(3)
    epoch1 = flat(rows_of(batches(split, batch_size=8, shuffle=True, generator=g)))
    epoch2 = flat(rows_of(batches(split, batch_size=8, shuffle=True, generator=g)))
    g_again = torch.Generator().manual_seed(3)
    again = flat(rows_of(batches(split, batch_size=8, shuffle=True, generator=g_again)))
    assert epoch1 == again and epoch1 != epoch2
    assert sorted(epoch1) == sorted(epoch2) == list(range(50))


SHARD_CASES = [(10, 3, False), (10, 3, True), (2, 4, False), (12, 4, False)]


@pytest.mark.parametrize(("n", "world", "drop_last"), SHARD_CASES)
def test_ranks_get_disjoint_equal_shards_of_one_permutation(n, world, drop_last):
    split = indexed_split(n)
    shards = []
    for rank in range(world):
        g = torch.Generator().manual_seed(11)  # every rank seeds its generator identically
        got = rows_of(batches(split, batch_size=2, shuffle=True, generator=g,
                              drop_last=drop_last, rank=rank, world_size=world))
        assert len(got) == num_batches(n, batch_size=2, drop_last=drop_last, world_size=world)
        shards.append(flat(got))
    # Reference: DistributedSampler's rule written out by hand.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(11)).tolist()
    per_rank = n // world if drop_last else -(-n // world)
    padded = list(perm)
    while len(padded) < world * per_rank:
        padded += perm
    padded = padded[: world * per_rank]
    for rank in range(world):
        expected = padded[rank::world]
        if drop_last:
            expected = expected[: len(expected) - len(expected) % 2]
        assert shards[rank] == expected
    if drop_last:
        assert len({i for s in shards for i in s}) == sum(len(s) for s in shards)
    else:
        assert {i for s in shards for i in s} == set(range(n))  # wrapping covers everyone


@pytest.mark.needs("torch_geometric")
def test_graph_batches_are_pyg_batches_in_permutation_order():
    import torch_geometric.data as data

    graphs = [
        data.Data(
            x=torch.full((k + 1, 2), float(k)),
            edge_index=torch.zeros(2, 0, dtype=torch.long),
            y=torch.tensor([k % 4]),
        )
        for k in range(11)
    ]
    split = GraphSplit(graphs)
    assert torch.equal(split.y, torch.arange(11) % 4)
    order = torch.randperm(11, generator=torch.Generator().manual_seed(5)).tolist()
    seen = []
    for batch, y in batches(split, batch_size=4, shuffle=True,
                            generator=torch.Generator().manual_seed(5)):
        assert isinstance(batch, data.Batch) and torch.equal(y, batch.y)
        ids = [int(batch.x[batch.ptr[j], 0]) for j in range(batch.num_graphs)]
        assert batch.num_nodes == sum(k + 1 for k in ids)
        assert torch.equal(y, torch.tensor(ids) % 4)
        seen += ids
    assert seen == order


def test_bad_arguments_raise():
    split = indexed_split(5)
    with pytest.raises(ConfigError, match=r"shuffle=True needs an explicit generator.*manual_seed"):
        next(batches(split, batch_size=2, shuffle=True))
    with pytest.raises(ConfigError, match=r"batch_size=0 must be a positive integer"):
        next(batches(split, batch_size=0, shuffle=False))
    with pytest.raises(ConfigError, match=r"rank=3 must be an integer in 0..world_size-1 \(1\)"):
        next(batches(split, batch_size=2, shuffle=False, rank=3, world_size=2))
    with pytest.raises(ConfigError, match=r"takes a TensorSplit or GraphSplit, got list"):
        next(batches([1, 2], batch_size=2, shuffle=False))


@pytest.mark.parametrize("shuffle", [False, True])
def test_editing_a_batch_in_place_leaves_the_split_intact(shuffle):
    split = indexed_split(8)
    before = split.x.clone()
    for x, y in batches(split, batch_size=3, shuffle=shuffle,
                        generator=torch.Generator().manual_seed(0)):
        x.mul_(0)
        y.zero_()
    assert torch.equal(split.x, before) and torch.equal(split.y, torch.arange(8) % 3)
