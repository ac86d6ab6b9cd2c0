"""Token-by-token text for streaming: ``erniekit chat`` prints it, ``erniekit serve`` sends it."""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    """The text of a growing token list, released in pieces that are whole characters and that can no
    longer turn out to be the start of a stop string; ``stopped`` once one appears (text cut before it)."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer, self.stops = tokenizer, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.tokens: list[int] = []
        self.text, self.sent, self.stopped = "", 0, False

    def push(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
            return ""
        self.text = text
        for s in self.stops:
            cut = text.find(s)
            if cut >= 0:
                self.text, self.stopped = text[:cut], True
                return self.flush()
        ready = max(self.sent, len(text) - self.hold)
        piece, self.sent = text[self.sent : ready], ready
        return piece

    def flush(self) -> str:
        piece, self.sent = self.text[self.sent :], len(self.text)
        return piece
