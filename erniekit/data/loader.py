"""A deterministic, resumable stream of packed rows drawn from one or more weighted sources.

Epoch e's order is a pure function of (seed, e, the sources' sizes and weights): ``mix`` turns the
sources into a sequence of examples, then examples are packed into rows. The only state is the global
row position, so a resumed run regenerates the same rows and continues exactly where it stopped, under
every strategy (epochs of different lengths included).

The strategies are ERNIEKit's ``mix_strategy``. With n_i examples in source i (after ``max_samples`` and
``eval_holdout``) and p_i = weight_i / sum of weights, one epoch is:

* ``random``: sum n_i draws; each picks source i with probability p_i and takes that source's next
  example from its own shuffled cycle, so about p_i * sum n_i examples come from source i. A source
  drawn more than n_i times starts another cycle; one drawn less leaves some examples out this epoch.
* ``concat``: every example of every source exactly once, shuffled together (weights do not apply).
* ``interleave_under``: draws as in random until some source has given its last example (like
  ``datasets.interleave_datasets``' first_exhausted): that source is seen once, the others undersampled;
  about min_i n_i / p_i examples.
* ``interleave_over``: draws until every source has given all its examples (all_exhausted); a source
  used up earlier starts another cycle, so it is oversampled; about max_i n_i / p_i examples.

Each epoch starts every source on a fresh cycle. One source is one shuffled pass under every strategy.
Without shuffling, sources keep their file order (concat: file after file) but the random strategies
still pick sources at random. The interleave strategies' epochs differ in length from one epoch to the
next; :meth:`RowLoader.rows_per_epoch` (what ``train.epochs`` multiplies) is the first epoch's.

With data parallelism every rank walks the same global sequence; a step of ``n`` rows per rank
consumes ``n * world`` global rows, rank r taking slice r.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from erniekit.data.packing import pack

log = logging.getLogger(__name__)
Item = tuple[int, int]  # (source index, example index)
MIX_STRATEGIES = ("random", "concat", "interleave_under", "interleave_over")
DRAWS_PER_CALL = 1024  # source picks drawn at a time by the interleave strategies


class RowLoader:
    def __init__(
        self,
        lengths: Sequence[np.ndarray],
        weights: Sequence[float],
        max_len: int,
        packing: bool,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        mix: str = "random",
    ):
        if mix not in MIX_STRATEGIES:
            raise ValueError(f"unknown mix strategy {mix!r}; choose from {', '.join(MIX_STRATEGIES)}")
        self.lengths = [np.asarray(n) for n in lengths]
        w = np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.max_len, self.packing, self.seed, self.shuffle = max_len, packing, seed, shuffle
        self.rank, self.world, self.mix = rank, world, mix
        self.position = 0  # global rows consumed
        self._cache: dict[int, list[list[Item]]] = {}
        self._epoch_starts = [0]  # global row index where each epoch begins

    def _epoch_rows(self, epoch: int) -> list[list[Item]]:
        if epoch not in self._cache:
            self._cache = {epoch: self._build_epoch(epoch)}
        return self._cache[epoch]

    def _build_epoch(self, epoch: int) -> list[list[Item]]:
        items = self._epoch_items(epoch)
        if not self.packing:
            return [[item] for item in items]
        groups = pack([int(self.lengths[s][i]) for s, i in items], self.max_len)
        return [[items[j] for j in group] for group in groups]

    def _epoch_items(self, epoch: int) -> list[Item]:
        rng = np.random.default_rng([self.seed, epoch])
        sizes = [len(n) for n in self.lengths]

        def order(n: int) -> np.ndarray:
            return rng.permutation(n) if self.shuffle else np.arange(n)

        if len(sizes) == 1:
            return [(0, int(i)) for i in order(sizes[0])]
        if self.mix == "concat":
            everything = [(s, i) for s, n in enumerate(sizes) for i in range(n)]
            return [everything[j] for j in order(len(everything))]
        if self.mix == "random":
            picks: Iterator[int] = iter(rng.choice(len(sizes), size=sum(sizes), p=self.probs).tolist())
        else:
            picks = self._draws(rng)  # lazily: after the permutations below, as random's order has it
        perms = [order(n) for n in sizes]
        cursor, used_up = [0] * len(sizes), [False] * len(sizes)
        stop = {"interleave_under": any, "interleave_over": all}.get(self.mix)
        items = []
        for s in picks:
            if cursor[s] == sizes[s]:  # this source is exhausted within the epoch: start its next cycle
                perms[s] = order(sizes[s])
                cursor[s] = 0
            items.append((s, int(perms[s][cursor[s]])))
            cursor[s] += 1
            if stop is not None and cursor[s] == sizes[s]:
                used_up[s] = True
                if stop(used_up):
                    break
        return items

    def _draws(self, rng: np.random.Generator) -> Iterator[int]:
        while True:
            yield from rng.choice(len(self.probs), size=DRAWS_PER_CALL, p=self.probs).tolist()

    def rows_per_epoch(self) -> int:
        return len(self._epoch_rows(0))

    def _locate(self, index: int) -> tuple[int, int]:
        """(epoch, row within that epoch) of a global row index."""
        epoch = 0
        while True:
            if len(self._epoch_starts) <= epoch + 1:
                self._epoch_starts.append(self._epoch_starts[epoch] + len(self._epoch_rows(epoch)))
            if index < self._epoch_starts[epoch + 1]:
                return epoch, index - self._epoch_starts[epoch]
            epoch += 1

    @property
    def epoch(self) -> float:
        """Fractional epochs consumed so far."""
        epoch, offset = self._locate(self.position)
        return epoch + offset / len(self._epoch_rows(epoch))

    def next_rows(self, n: int, every_rank: bool = False) -> list[list[Item]]:
        """This rank's next ``n`` rows (``every_rank``: all ranks' ``n * world``, rank by rank); advances
        the shared position by ``n * world``."""
        first = self.position if every_rank else self.position + self.rank * n
        rows = []
        for index in range(first, first + (n * self.world if every_rank else n)):
            epoch, offset = self._locate(index)
            rows.append(self._epoch_rows(epoch)[offset])
        self.position += n * self.world
        return rows

    def state_dict(self) -> dict:
        return {"position": self.position, "mix": self.mix}

    def set_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        saved = state.get("mix", "random")  # checkpoints from before data.mix drew at random
        if saved != self.mix:
            log.warning(
                "resuming a run that mixed its data with %s under data.mix=%s: the position counts "
                "rows of another order, so the data continues elsewhere than where it stopped",
                saved,
                self.mix,
            )


def eval_rows(lengths: Sequence[np.ndarray], max_len: int, packing: bool) -> list[list[Item]]:
    """Every example of every eval source once, in file order, packed like training rows."""
    items = [(s, i) for s, n in enumerate(lengths) for i in range(len(n))]
    if not packing:
        return [[item] for item in items]
    groups = pack([int(lengths[s][i]) for s, i in items], max_len)
    return [[items[j] for j in group] for group in groups]
