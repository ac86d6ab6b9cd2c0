"""A deterministic, resumable stream of packed rows drawn from one or more weighted sources.

Epoch e's order is a pure function of (seed, e): sources are mixed by weight (each draw picks a source
with probability weight / sum(weights) and takes that source's next example from its own shuffled
cycle), then examples are packed into rows. The only state is the global row position, so a resumed run
regenerates the same rows and continues exactly where it stopped.

With data parallelism every rank walks the same global sequence; a step of ``n`` rows per rank
consumes ``n * world`` global rows, rank r taking slice r.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from erniekit.data.packing import pack

Item = tuple[int, int]  # (source index, example index)


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
    ):
        self.lengths = [np.asarray(n) for n in lengths]
        w = np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.max_len, self.packing, self.seed, self.shuffle = max_len, packing, seed, shuffle
        self.rank, self.world = rank, world
        self.position = 0  # global rows consumed
        self._cache: dict[int, list[list[Item]]] = {}
        self._epoch_starts = [0]  # global row index where each epoch begins

    def _epoch_rows(self, epoch: int) -> list[list[Item]]:
        if epoch not in self._cache:
            self._cache = {epoch: self._build_epoch(epoch)}
        return self._cache[epoch]

    def _build_epoch(self, epoch: int) -> list[list[Item]]:
        rng = np.random.default_rng([self.seed, epoch])
        sizes = [len(n) for n in self.lengths]
        if len(sizes) == 1:
            order = rng.permutation(sizes[0]) if self.shuffle else np.arange(sizes[0])
            items = [(0, int(i)) for i in order]
        else:
            picks = rng.choice(len(sizes), size=sum(sizes), p=self.probs)
            perms = [rng.permutation(n) if self.shuffle else np.arange(n) for n in sizes]
            cursor = [0] * len(sizes)
            items = []
            for s in picks:
                if cursor[s] == sizes[s]:  # this source is exhausted within the epoch: start its next cycle
                    perms[s] = rng.permutation(sizes[s]) if self.shuffle else perms[s]
                    cursor[s] = 0
                items.append((int(s), int(perms[s][cursor[s]])))
                cursor[s] += 1
        if not self.packing:
            return [[item] for item in items]
        groups = pack([int(self.lengths[s][i]) for s, i in items], self.max_len)
        return [[items[j] for j in group] for group in groups]

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

    def next_rows(self, n: int) -> list[list[Item]]:
        """This rank's next ``n`` rows; advances the shared position by ``n * world``."""
        first = self.position + self.rank * n
        rows = []
        for index in range(first, first + n):
            epoch, offset = self._locate(index)
            rows.append(self._epoch_rows(epoch)[offset])
        self.position += n * self.world
        return rows

    def state_dict(self) -> dict:
        return {"position": self.position}

    def set_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


def eval_rows(lengths: Sequence[np.ndarray], max_len: int, packing: bool) -> list[list[Item]]:
    """Every example of every eval source once, in file order, packed like training rows."""
    items = [(s, i) for s, n in enumerate(lengths) for i in range(len(n))]
    if not packing:
        return [[item] for item in items]
    groups = pack([int(lengths[s][i]) for s, i in items], max_len)
    return [[items[j] for j in group] for group in groups]
