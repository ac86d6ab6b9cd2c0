"""OpenAI's request fields -> what the engine needs, every bad value a 400 naming its field.

Only the fields erniekit acts on are read; unknown fields are ignored, as OpenAI's own server does for
fields it does not know of in a given model.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path


class APIError(Exception):
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error"
        )
        if self.status >= 500:
            kind = "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Sampling:
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    n: int
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    logprobs: int | None  # None: off; else how many top alternatives per token
    tools: bool = False  # tools were offered: <tool_call> replies become tool_calls


def _number(body: dict, key: str, default, kind=float, low=None, high=None):
    value = body.get(key, default)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not isinstance(value, int))
    ):
        raise APIError(
            400, f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}", key
        )
    if (low is not None and value < low) or (high is not None and value > high):
        raise APIError(400, f"{key} must be between {low} and {high}, got {value!r}", key)
    return kind(value)


def _logprobs(body: dict, kind: str) -> int | None:
    if kind == "completion":  # the legacy API: logprobs is the number of alternatives
        return _number(body, "logprobs", None, int, 0, 5)
    wanted = body.get("logprobs", False)
    if not isinstance(wanted, bool):
        raise APIError(400, "logprobs must be true or false", "logprobs")
    top = _number(body, "top_logprobs", None, int, 0, 20)
    if top is not None and not wanted:
        raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    return (top or 0) if wanted else None


def sampling(body: dict, kind: str = "chat") -> Sampling:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is not None:
        max_tokens = _number(body, key, None, int, 1)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise APIError(400, "stop must be a string or a list of up to 4 non-empty strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "stream_options must be an object", "stream_options")
    return Sampling(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, float, 0, 2),
        top_p=_number(body, "top_p", 1.0, float, 0, 1) or 1.0,
        top_k=_number(body, "top_k", 0, int, 0),
        n=_number(body, "n", 1, int, 1, 16),
        seed=_number(body, "seed", None, int),
        stop=stop,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        logprobs=_logprobs(body, kind),
        tools=bool(tools(body)),
    )


def tools(body: dict) -> list[dict] | None:
    """The offered function tools (None with none, or with tool_choice "none")."""
    offered = body.get("tools")
    if offered is None or body.get("tool_choice") == "none":
        return None
    if not isinstance(offered, list) or not all(
        isinstance(t, dict)
        and t.get("type", "function") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in offered
    ):
        raise APIError(
            400, 'tools must be a list of {"type": "function", "function": {"name": ...}}', "tools"
        )
    return offered or None


def messages(body: dict, allowed_image_dirs: list[Path]) -> list[dict]:
    """The chat messages, checked; an image given by path must lie under an allowed directory."""
    from erniekit.data.multimodal import image_path, media_parts

    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages must be a non-empty list", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in (
            "system",
            "user",
            "assistant",
            "developer",
            "tool",
        ):
            raise APIError(
                400, f"messages[{i}] needs a role: system, user, assistant or tool", f"messages[{i}]"
            )
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise APIError(
                400, f"messages[{i}].content must be a string or a list of parts", f"messages[{i}]"
            )
    out = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in msgs]
    for _, source in media_parts(out):
        path = image_path(source)
        if path is None:
            continue
        resolved = path.resolve()
        if not any(resolved.is_relative_to(d) for d in allowed_image_dirs):
            raise APIError(
                400,
                f"image {source}: files are read only under the directories the server allows "
                "(erniekit serve --allow-images DIR)",
                "messages",
            )
    return out


def prompt_text(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise APIError(400, "prompt must be a non-empty string", "prompt")
    return prompt


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
