"""data.mix: what one epoch holds under each strategy (counts and order), determinism, and exact resume
across epochs of different lengths. (The random strategy's weights: tests/unit/test_data.py.)"""

from collections import Counter

import numpy as np
import pytest

from erniekit.config import ConfigError
from erniekit.data.loader import MIX_STRATEGIES, RowLoader
from tests.helpers import debug_recipe


def loader(sizes, weights=None, mix="random", shuffle=True, seed=3, packing=False, **kw):
    lengths = [np.arange(1, n + 1) % 7 + 1 for n in sizes]  # 1..7 tokens: packing has work to do
    return RowLoader(lengths, weights or [1.0] * len(sizes), 8, packing, seed, shuffle, mix=mix, **kw)


def epoch_items(sizes, weights=None, mix="random", shuffle=True, epoch=0, seed=3):
    items = loader(sizes, weights, mix, shuffle, seed)._epoch_items(epoch)
    return items, Counter(s for s, _ in items)


def test_concat_is_every_example_once_file_after_file_or_shuffled():
    items, _ = epoch_items([4, 2, 3], mix="concat", shuffle=False)
    assert items == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    first, _ = epoch_items([4, 2, 3], mix="concat")
    second, _ = epoch_items([4, 2, 3], mix="concat", epoch=1)
    assert sorted(first) == sorted(second) == items  # each example exactly once per epoch
    assert first not in (items, second)  # in a new order every epoch
    assert {s for s, _ in first[:4]} != {0}  # sources shuffled together, not one after another


@pytest.mark.parametrize("shuffle", [True, False])
def test_interleave_under_ends_when_the_first_file_is_used_up(shuffle):
    sizes = [30, 50, 200]
    for epoch in range(5):
        items, counts = epoch_items(sizes, mix="interleave_under", shuffle=shuffle, epoch=epoch)
        used_up = [s for s in range(3) if counts[s] == sizes[s]]
        assert len(used_up) == 1 and items[-1][0] == used_up[0]  # it ends on that file's last example
        assert all(counts[s] < sizes[s] for s in range(3) if s != used_up[0])  # the others undersampled
        for s in range(3):  # nothing repeats: each file's examples are a prefix of its cycle
            seen = [i for src, i in items if src == s]
            assert len(set(seen)) == len(seen)
            if not shuffle:
                assert seen == list(range(len(seen)))


@pytest.mark.parametrize("shuffle", [True, False])
def test_interleave_over_ends_when_every_file_is_used_up(shuffle):
    sizes = [30, 50, 8]
    for epoch in range(5):
        items, counts = epoch_items(sizes, mix="interleave_over", shuffle=shuffle, epoch=epoch)
        last = items[-1][0]
        assert counts[last] == sizes[last]  # the last file to be used up ends the epoch, seen once
        assert all(counts[s] >= sizes[s] for s in range(3))
        before = Counter(s for s, _ in items[:-1])
        assert before[last] == sizes[last] - 1  # one draw earlier it was not yet used up
        small = [i for src, i in items if src == 2]  # the small file cycles: every pass is complete
        full_passes = len(small) // sizes[2]
        assert full_passes >= 2
        for p in range(full_passes):
            one_pass = small[p * sizes[2] : (p + 1) * sizes[2]]
            assert sorted(one_pass) == list(range(sizes[2]))
            if not shuffle:
                assert one_pass == list(range(sizes[2]))


def test_interleave_draws_by_weight_and_epoch_lengths_follow():
    # weight 1:3 over two files of 3000: under ends when file 1 is used up (~3000 / 0.75 = 4000 draws),
    # over when file 0 is (~3000 / 0.25 = 12000 draws)
    sizes, weights = [3000, 3000], [1.0, 3.0]
    items, counts = epoch_items(sizes, weights, "interleave_under")
    assert counts[1] == 3000 and 900 < counts[0] < 1100 and 3900 < len(items) < 4100
    items, counts = epoch_items(sizes, weights, "interleave_over")
    assert counts[0] == 3000 and 8500 < counts[1] < 9500 and 11500 < len(items) < 12500
    items, counts = epoch_items(sizes, weights, "random")  # random: one epoch is sum of sizes draws
    assert len(items) == 6000 and 1400 < counts[0] < 1600
    items, counts = epoch_items(sizes, weights, "concat")
    assert len(items) == 6000 and counts[0] == counts[1] == 3000


@pytest.mark.parametrize("mix", MIX_STRATEGIES)
def test_one_file_is_one_shuffled_pass_under_every_strategy(mix):
    items, _ = epoch_items([9], mix=mix)
    assert items == epoch_items([9], mix="random")[0]
    assert sorted(i for _, i in items) == list(range(9)) and items != sorted(items)


@pytest.mark.parametrize("mix", MIX_STRATEGIES)
@pytest.mark.parametrize("packing", [True, False])
def test_every_strategy_is_deterministic_and_resumes_exactly_across_epochs(mix, packing):
    sizes, weights = [7, 12, 4], [1.0, 2.0, 0.5]
    run = loader(sizes, weights, mix, packing=packing)
    rows = [run.next_rows(3) for _ in range(30)]  # 90 rows: several epochs of different lengths
    assert run.epoch > 2
    lengths = {len(run._epoch_rows(e)) for e in range(3)}
    assert mix in ("random", "concat") or packing or len(lengths) > 1  # interleave epochs vary
    again = loader(sizes, weights, mix, packing=packing)
    assert [again.next_rows(3) for _ in range(30)] == rows
    for stop in (1, 7, 19):
        first = loader(sizes, weights, mix, packing=packing)
        for _ in range(stop):
            first.next_rows(3)
        resumed = loader(sizes, weights, mix, packing=packing)
        resumed.set_state_dict(first.state_dict())
        assert [resumed.next_rows(3) for _ in range(30 - stop)] == rows[stop:]
    ranks = [loader(sizes, weights, mix, packing=packing, rank=r, world=2) for r in range(2)]
    both = [ranks[0].next_rows(3) + ranks[1].next_rows(3) for _ in range(15)]
    assert [row for step in both for row in step] == [row for step in rows for row in step]
    other_seed = loader(sizes, weights, mix, packing=packing, seed=4)
    assert [other_seed.next_rows(3) for _ in range(30)] != rows


def test_epoch_counts_whole_epochs_of_varying_length():
    run = loader([5, 9], mix="interleave_under")
    first, second = (len(run._epoch_rows(e)) for e in (0, 1))
    run.next_rows(first)
    assert run.epoch == 1.0
    run.next_rows(second // 2)
    assert run.epoch == pytest.approx(1 + (second // 2) / second)


def test_resuming_under_another_strategy_warns(caplog):
    state = loader([5, 9], mix="interleave_over").state_dict()
    assert state["mix"] == "interleave_over"
    loader([5, 9]).set_state_dict(state)
    assert "mixed its data with interleave_over under data.mix=random" in caplog.text
    caplog.clear()
    loader([5, 9]).set_state_dict({"position": 4})  # a checkpoint from before data.mix: random
    assert not caplog.text


def test_recipes_choose_a_strategy_and_concat_refuses_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"data.train\[0\].weight: concat takes every example once"):
        debug_recipe(tmp_path, "data.mix=concat")  # the debug recipe weighs its first file 2
    assert debug_recipe(tmp_path, "data.mix=concat", "data.train=[a.jsonl, b.parquet]").data.mix == "concat"
    with pytest.raises(ConfigError, match=r"data.mix: must be one of .*; did you mean 'interleave_over'"):
        debug_recipe(tmp_path, "data.mix=interleave_ovr")
