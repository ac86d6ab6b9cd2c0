"""One generation engine with continuous batching: requests join the running decode batch at a token
boundary and leave when done, so a short request never waits for a long one.

The engine owns a KV cache of ``max_batch`` rows x up to ``max_model_len`` columns, head-major, which
every decode step reads in place (its mask spans all the columns). The active requests are
always rows ``0..n-1``; they share one write column ``T`` (every decode step appends at ``T`` for all of
them, then ``T += 1``) and each keeps its tokens in the columns just before it, so the rows are
right-aligned like a left-padded batch and ``key_padding`` hides the columns a row does not own. A
request joins by a prefill (the waiting requests that fit go together, left-padded, images encoded
there) whose keys/values are copied into a free row, ending at ``T``; a prompt longer than ``T`` first
moves the other rows right, and when
``T`` reaches the last column the rows move left by the columns none of them uses. A finished row is
replaced by the last active one. Rotary positions are each request's own, so where a row sits in the
cache never changes its numbers: a greedy request gives the same tokens alone or among others.

Each request samples with its own NumPy generator (its ``seed``), temperature, top-p and top-k.
``step()`` does one round (admit, then one decode step); ``run()`` steps until idle, for callers that
hand over a list of prompts (chat, eval); a server calls ``start()`` to step on a background thread.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import paddle
import paddle.nn.functional as F

from erniekit.data.images import ImageInputs
from erniekit.models.generation import draw, next_token_logits, sampling_cdf, vision_inputs

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests wait than ``max_queue`` allows."""


@dataclass
class Request:
    """One prompt to continue. ``on_token(token)`` runs on the engine's thread as each token is chosen;
    ``stop(tokens)`` returning True ends it early (stop strings); ``on_done()`` runs when it ends. Then
    ``tokens`` holds the new tokens (with the EOS that ended it), ``finish_reason`` is "stop" (EOS or a
    stop string), "length" (``max_new_tokens`` or the model length), "cancelled" or "error" (``error``),
    and ``done`` is set."""

    prompt: list[int]
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | tuple[int, ...] | None = None  # of its NumPy generator (anything default_rng takes)
    eos_token_ids: frozenset[int] = frozenset()
    stop: Callable[[list[int]], bool] | None = None
    on_token: Callable[[int], None] | None = None
    on_done: Callable[[], None] | None = None
    images: ImageInputs | None = None
    videos: ImageInputs | None = None
    logprobs: int | None = None  # record each token's log-probability and this many top alternatives
    adapter: int = 0  # the LoRA adapter slot its rows use (0: the base model; see adapters.py)
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)
    finish_reason: str | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False

    def finished(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def cancel(self) -> None:
        """Leave at the next token boundary (a client that went away); its row is freed."""
        self.cancelled = True


class _Rows:
    """The engine's cache, viewed by the model as a KVCache of the ``n`` active rows."""

    def __init__(self, model, rows: int, columns: int, start: int = 64):
        self.model, self.rows, self.columns = model, rows, columns  # columns: the most it grows to
        self.keys, self.values, self.real = [], [], np.zeros((rows, 0), dtype=bool)
        self.n = 0  # active rows
        self.length = 0  # T: the shared write column
        self.grow(min(start, columns))

    @property
    def capacity(self) -> int:
        return self.real.shape[1]

    def grow(self, columns: int) -> None:
        """Room for ``columns`` columns (doubling, up to the model length): a cache sized for what runs,
        not for the longest request that might."""
        if columns <= self.capacity:
            return
        size = min(max(columns, 2 * self.capacity), self.columns)
        new = self.model.new_cache(self.rows, size)
        for old, fresh in ((self.keys, new.keys), (self.values, new.values)):
            for x, y in zip(old, fresh if self.length else ()):  # (Paddle cannot assign an empty slice)
                y[:, :, : self.length] = x[:, :, : self.length]
        self.keys, self.values = new.keys, new.values
        real = np.zeros((self.rows, size), dtype=bool)
        real[:, : self.capacity] = self.real
        self.real = real

    def update(self, layer: int, k: paddle.Tensor, v: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        end = self.length + k.shape[1]
        self.keys[layer][: self.n, :, self.length : end] = k.transpose([0, 2, 1, 3])
        self.values[layer][: self.n, :, self.length : end] = v.transpose([0, 2, 1, 3])
        return self.keys[layer][: self.n], self.values[layer][: self.n]

    def shift(self, by: int) -> None:
        """Move the active rows' columns by ``by`` (right if > 0, left if < 0); T moves with them."""
        n, t = self.n, self.length
        src, dst = (slice(0, t), slice(by, by + t)) if by > 0 else (slice(-by, t), slice(0, t + by))
        for tensors in (self.keys, self.values):
            for x in tensors:
                x[:n, :, dst] = x[:n, :, src].clone()
        real = self.real[:n, src].copy()
        self.real[:n] = False
        self.real[:n, dst] = real
        self.length = t + by

    def place(self, row: int, keys: list, values: list, index: int, width: int) -> None:
        """Prompt ``index`` of a left-padded prefill (keys/values [R, K, S, D], its ``width`` tokens in
        the last columns) into ``row``, ending at column T."""
        start = self.length - width
        for layer in range(len(self.keys)):
            self.keys[layer][row, :, start : self.length] = keys[layer][index, :, -width:]
            self.values[layer][row, :, start : self.length] = values[layer][index, :, -width:]
        self.real[row] = False
        self.real[row, start : self.length] = True

    def move(self, src: int, dst: int) -> None:
        for tensors in (self.keys, self.values):
            for x in tensors:
                x[dst] = x[src]
        self.real[dst] = self.real[src]

    def free_columns(self) -> int:
        """Columns at the left that no active row uses."""
        used = self.real[: self.n, : self.length].any(axis=0)
        return int(np.argmax(used)) if used.any() else self.length


@dataclass
class _Active:
    request: Request
    position: int  # the rotary position of the next token
    last: int  # the token fed next
    rng: np.random.Generator


class Engine:
    """Continuous-batching generation over one model (see the module docstring)."""

    def __init__(
        self,
        model,
        max_batch: int = 8,
        max_model_len: int = 2048,
        max_queue: int = 64,
        adapters=None,
        max_prefill_tokens: int = 4096,
    ):
        self.model, self.max_batch = model, max_batch
        self.max_model_len, self.max_queue = max_model_len, max_queue
        self.max_prefill_tokens = max_prefill_tokens  # rows x width of one batched prefill
        self.rows = _Rows(model, max_batch, max_model_len)
        self.active: list[_Active] = []
        self.waiting: deque[Request] = deque()
        self.lock = threading.Condition()
        self.adapters = adapters  # an adapters.Selector: per-row LoRA slots
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.finished = Counter()  # requests ended, by finish_reason

    # --- submitting -------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Request:
        if not request.prompt:
            raise ValueError("the prompt is empty")
        if len(request.prompt) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {len(request.prompt)} tokens; the model length is {self.max_model_len}"
            )
        with self.lock:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting (max_queue {self.max_queue})")
            self.waiting.append(request)
            self.lock.notify()
        return request

    def run(self, requests: list[Request]) -> list[Request]:
        """Submit ``requests`` and step until all are done (no background thread); a model that was
        training is training again after."""
        training, pending = self.model.training, deque(requests)
        try:
            while pending or self.active or self.waiting:
                while pending and len(self.waiting) < self.max_queue:
                    self.submit(pending.popleft())
                self.step()
        finally:
            if training:
                self.model.train()
        return requests

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    # --- the background loop (a server) -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="erniekit-engine", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True) -> None:
        """Stop the loop; with ``drain`` first finish every request already submitted."""
        with self.lock:
            self._stopping = True
            if not drain:
                for req in self.waiting:
                    req.cancel()
                for a in self.active:
                    a.request.cancel()
            self.lock.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.busy and not self._stopping:
                    self.lock.wait()
                if self._stopping and not self.busy:
                    return
            try:
                self.step()
            except Exception as e:  # fail the running requests, keep serving
                log.exception("generation step failed; its requests end with an error")
                for a in self.active:
                    a.request.error, a.request.finish_reason = e, "error"
                self._drop_finished()

    # --- one round --------------------------------------------------------------------------------------
    @paddle.no_grad()
    def step(self) -> None:
        """Admit waiting requests into free rows (each prefilled and given its first token), then one
        decode step for every active row."""
        if self.model.training:  # eval() walks every sublayer: ~4 ms a step at 135M
            self.model.eval()
        admitted = self._take_waiting()
        if len(admitted) > 1:
            try:
                self._admit(admitted)
                admitted = []
            except Exception:  # find the request at fault: admit the ones not yet in one at a time
                log.debug("batched prefill failed; admitting one at a time", exc_info=True)
                joined = {id(a.request) for a in self.active}
                admitted = [r for r in admitted if id(r) not in joined]
        for request in admitted:
            try:
                self._admit([request])
            except Exception as e:
                request.error = e
                self._finish_unadmitted(request, "error")
        self._drop_finished()
        if self.active:
            self._decode()
            self._drop_finished()

    def _take_waiting(self) -> list[Request]:
        """The waiting requests that fit in the free rows and one prefill of ``max_prefill_tokens``
        (a left-padded batch: rows x its longest prompt); cancelled ones end here."""
        taken, width = [], 0
        with self.lock:
            while self.waiting and len(self.active) + len(taken) < self.max_batch:
                request = self.waiting[0]
                if request.cancelled:
                    self.waiting.popleft()
                    self._finish_unadmitted(request, "cancelled")
                    continue
                wider = max(width, len(request.prompt))
                if taken and wider * (len(taken) + 1) > self.max_prefill_tokens:
                    break
                taken.append(self.waiting.popleft())
                width = wider
        return taken

    def _admit(self, requests: list[Request]) -> None:
        """One prefill of ``requests`` (left-padded, images encoded there); each joins a free row with
        its first token."""
        model, rows = self.model, self.rows
        lengths = [len(r.prompt) for r in requests]
        width = max(lengths)
        ids = np.zeros((len(requests), width), dtype=np.int64)
        real = np.zeros((len(requests), width), dtype=bool)
        for i, r in enumerate(requests):
            ids[i, width - lengths[i] :], real[i, width - lengths[i] :] = r.prompt, True
        images = ImageInputs.concat([r.images for r in requests])
        videos = ImageInputs.concat([r.videos for r in requests])
        positions, offsets = model.prompt_positions(ids, real, images, videos)
        slots = [r.adapter for r in requests]
        if any(slots) and self.adapters is None:
            raise ValueError("this engine serves no adapters")
        if self.adapters is not None:
            self.adapters.select(slots)
        cache = model.new_cache(len(requests), width)
        out = model(
            paddle.to_tensor(ids),
            position_ids=paddle.to_tensor(positions),
            key_padding=paddle.to_tensor(real),
            cache=cache,
            compute_logits=False,
            **vision_inputs(images, videos),
        )
        logits = next_token_logits(model, out.hidden)
        if rows.length < width:  # room for the longest prompt before the write column
            rows.grow(width + 1)
            if rows.n:
                rows.shift(width - rows.length)
            else:
                rows.length = width
        joined = []
        for i, request in enumerate(requests):
            rows.place(rows.n, cache.keys, cache.values, i, lengths[i])
            rows.n += 1
            joined.append(
                _Active(request, lengths[i] + int(offsets[i]), 0, np.random.default_rng(request.seed))
            )
        self.active += joined
        self._next_tokens(joined, logits)

    def _decode(self) -> None:
        rows = self.rows
        rows.grow(rows.length + 1)
        if rows.length == rows.capacity:  # the last column of the model length is taken: move everyone left
            rows.shift(-rows.free_columns())
        n, t = rows.n, rows.length
        rows.real[:n, t] = True
        tokens = np.array([[a.last] for a in self.active], dtype=np.int64)
        positions = np.array([[a.position] for a in self.active], dtype=np.int64)
        if self.adapters is not None:
            self.adapters.select([a.request.adapter for a in self.active])
        out = self.model(
            paddle.to_tensor(tokens),
            position_ids=paddle.to_tensor(positions),
            key_padding=paddle.to_tensor(rows.real[:n]),  # every column: the cache is read in place
            cache=rows,
            compute_logits=False,
        )
        for a in self.active:
            a.position += 1
        self._next_tokens(self.active, next_token_logits(self.model, out.hidden))

    def _next_tokens(self, actives: list[_Active], logits: paddle.Tensor) -> None:
        """Choose and record each request's next token from its row of logits [len(actives), V]: one
        argmax for the greedy rows, one softmax and filter per group of rows that sample alike (each row
        drawing from its own generator), one log-softmax for the rows that want logprobs."""
        chosen = logits.argmax(axis=-1).numpy()
        alike: dict[tuple, list[int]] = {}
        for i, a in enumerate(actives):
            r = a.request
            if r.temperature > 0:
                alike.setdefault((r.temperature, r.top_k, r.top_p), []).append(i)
        for (temperature, top_k, top_p), rows in alike.items():
            cdf = sampling_cdf(paddle.gather(logits, paddle.to_tensor(rows)), temperature, top_k, top_p)
            chosen[rows] = draw(cdf, [actives[i].rng for i in rows])
        wanted = [i for i, a in enumerate(actives) if a.request.logprobs is not None]
        logp = {}
        if wanted:
            values = F.log_softmax(paddle.gather(logits, paddle.to_tensor(wanted)).astype("float32"), axis=-1)
            logp = dict(zip(wanted, values.numpy()))
        for i, a in enumerate(actives):
            self._emit(a, int(chosen[i]), logp.get(i))

    def _emit(self, a: _Active, token: int, logp: np.ndarray | None = None) -> None:
        """Record the request's next token and, when it asked for logprobs, ``logp`` [V]: the model's
        log-probabilities (before temperature and filtering; vision tokens excluded)."""
        req = a.request
        if req.cancelled:
            req.finish_reason = "cancelled"
            return
        if req.logprobs is not None:
            top = np.argsort(-logp, kind="stable")[: req.logprobs]
            req.token_logprobs.append((float(logp[token]), [(int(t), float(logp[t])) for t in top]))
        req.tokens.append(token)
        a.last = token
        if req.on_token is not None:
            try:
                req.on_token(token)
            except Exception as e:  # a consumer's failure ends its request only
                req.error, req.finish_reason = e, "error"
                return
        if token in req.eos_token_ids or (req.stop is not None and req.stop(req.tokens)):
            req.finish_reason = "stop"
        elif len(req.tokens) >= req.max_new_tokens or len(req.prompt) + len(req.tokens) >= self.max_model_len:
            req.finish_reason = "length"

    def _drop_finished(self) -> None:
        i = 0
        while i < len(self.active):
            req = self.active[i].request
            if req.cancelled and req.finish_reason is None:
                req.finish_reason = "cancelled"
            if req.finish_reason is None:
                i += 1
                continue
            last = len(self.active) - 1
            if i != last:
                self.rows.move(last, i)
                self.active[i] = self.active[last]
            self.active.pop()
            self.rows.n -= 1
            self.finished[req.finish_reason] += 1
            req.finished()
        if not self.active:
            self.rows.length = 0

    def _finish_unadmitted(self, request: Request, reason: str) -> None:
        request.finish_reason = reason
        self.finished[reason] += 1
        request.finished()
