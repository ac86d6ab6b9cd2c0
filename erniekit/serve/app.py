"""The OpenAI-compatible HTTP layer over the generation engine (FastAPI on uvicorn).

    GET  /health                 {"status": "ok", "running", "waiting", "finished": {reason: count}}
    GET  /v1/models              the served model and its LoRA adapters (each a model name)
    POST /v1/chat/completions    chat messages (image parts for VL models), streaming or not
    POST /v1/completions         a plain prompt, streaming or not

Every request becomes ``n`` engine requests that join the running batch; tokens travel from the engine's
thread to the request's asyncio queue. A full queue answers 429 at once, a bad field 400 naming it, a
missing or wrong API key 401; a client that goes away mid-stream cancels its rows. Nothing a request
sends can stop the server: any failure becomes that request's error response.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request as HTTPRequest  # at module level: FastAPI resolves the handlers' annotations here

from erniekit.inference.engine import Engine, QueueFull, Request
from erniekit.serve import protocol
from erniekit.serve.protocol import APIError, Sampling
from erniekit.tokenizer.stream import TextStream
from erniekit.tokenizer.tools import ReplySplitter, new_call_id, split_reply

log = logging.getLogger(__name__)


@dataclass
class Choice:
    request: Request
    stream: TextStream
    splitter: ReplySplitter | None = None  # chat: reasoning / content / tool calls
    pieces: asyncio.Queue = field(default_factory=asyncio.Queue)
    calls: int = 0  # tool calls streamed so far


class Server:
    def __init__(
        self,
        engine: Engine,
        tokenizer,
        processor=None,
        model_name: str = "erniekit",
        api_key: str | None = None,
        allowed_image_dirs: list[str] | None = None,
        thinking: bool = False,
        adapter_names: list[str] | None = None,
    ):
        self.engine, self.tokenizer, self.processor = engine, tokenizer, processor
        # replies open inside the reasoning: asked for, or the template's generation prompt opens it
        self.thinking = thinking or tokenizer.template.opens_thinking
        self.response_tags = tokenizer.template.response_tags
        self.model_name, self.api_key = model_name, api_key
        self.adapter_names = list(adapter_names or [])  # model names that select a LoRA slot (1, 2, ...)
        self.allowed_image_dirs = [Path(d).resolve() for d in allowed_image_dirs or []]
        self.created = protocol.now()

    # --- requests -> engine ---------------------------------------------------------------------------
    def encode_chat(self, body: dict) -> tuple[list[int], object, object]:
        from erniekit.data.multimodal import PromptEncoder
        from erniekit.errors import ErniekitError

        # the chat template writes the tools, calls and results, as it does for training data
        msgs, tools = protocol.messages(body, self.allowed_image_dirs), protocol.tools(body)
        model = self.engine.model
        if self.processor is None and any(
            m["role"] != "tool"
            and isinstance(m.get("content"), list)
            and any(not isinstance(p, dict) or p.get("type") != "text" for p in m["content"])
            for m in msgs
        ):
            raise APIError(400, f"this {model.args.family} model reads text only", "messages")
        try:
            return PromptEncoder(self.tokenizer, self.processor, model.args.vision)(msgs, tools=tools)
        except (ErniekitError, ValueError, KeyError, TypeError) as e:
            raise APIError(400, f"messages: {e}", "messages") from None

    def slot(self, model: str | None) -> int:
        return 0 if model in (None, self.model_name) else self.adapter_names.index(model) + 1

    def submit(
        self, ids: list[int], images, videos, s: Sampling, chat: bool = False, slot: int = 0
    ) -> list[Choice]:
        limit = self.engine.max_model_len
        if len(ids) >= limit:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; this server's model length is {limit}",
                "messages",
                "context_length_exceeded",
            )
        room = limit - len(ids)
        if s.max_tokens is not None and s.max_tokens > room:
            raise APIError(
                400,
                f"max_tokens {s.max_tokens} + the prompt's {len(ids)} tokens exceed the model length {limit}",
                "max_tokens",
                "context_length_exceeded",
            )
        loop = asyncio.get_running_loop()
        choices = []
        for i in range(s.n):
            stream = TextStream(self.tokenizer, s.stop)
            req = Request(
                ids,
                s.max_tokens or room,
                s.temperature,
                s.top_p,
                s.top_k,
                None if s.seed is None else s.seed + i,
                eos_token_ids=frozenset(self.tokenizer.stop_ids),
                images=images,
                videos=videos,
                adapter=slot,
            )
            splitter = ReplySplitter(self.thinking, s.tools, self.response_tags) if chat else None
            choice = Choice(req, stream, splitter)
            req.logprobs = s.logprobs
            req.on_token = lambda t, c=choice: loop.call_soon_threadsafe(
                c.pieces.put_nowait, (c.stream.push(t), len(c.request.tokens))
            )
            req.stop = lambda tokens, c=choice: c.stream.stopped
            req.on_done = lambda c=choice: loop.call_soon_threadsafe(c.pieces.put_nowait, None)
            choices.append(choice)
        submitted = []
        try:
            for c in choices:
                submitted.append(self.engine.submit(c.request))
        except QueueFull as e:
            for req in submitted:
                req.cancel()
            raise APIError(429, f"the server is busy: {e}; retry later", None, "queue_full") from None
        return choices

    # --- responses ------------------------------------------------------------------------------------
    @staticmethod
    def finish_reason(c: Choice) -> str:
        if c.request.error is not None:
            raise APIError(500, f"generation failed: {c.request.error}", None, "engine_error")
        if c.calls:
            return "tool_calls"
        return "length" if c.request.finish_reason == "length" else "stop"

    def message(self, c: Choice, s: Sampling) -> dict:
        """The assistant message of a finished chat choice: content, reasoning_content, tool_calls."""
        reasoning, content, calls = split_reply(c.stream.text, self.thinking, s.tools, self.response_tags)
        c.calls = len(calls)
        message: dict = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = [{"id": new_call_id(), "type": "function", "function": f} for f in calls]
        return message

    def deltas(self, c: Choice, events: list) -> list[dict]:
        """Streamed chat deltas for a splitter's events."""
        out = []
        for kind, value in events:
            if kind == "tool_call":
                call = {"index": c.calls, "id": new_call_id(), "type": "function", "function": value}
                c.calls += 1
                out.append({"tool_calls": [call]})
            else:
                out.append({"reasoning_content" if kind == "reasoning" else "content": value})
        return out

    def logprobs(self, kind: str, c: Choice, start: int = 0, end: int | None = None) -> dict | None:
        """OpenAI's logprobs object for tokens [start, end) of a choice (None when not asked for)."""
        if c.request.logprobs is None:
            return None
        tokens, entries = c.request.tokens[start:end], c.request.token_logprobs[start:end]
        text = [self.tokenizer.decode([t]) for t in tokens]
        if kind == "chat":

            def item(s: str, lp: float) -> dict:
                return {"token": s, "logprob": lp, "bytes": list(s.encode())}

            content = [
                {**item(s, lp), "top_logprobs": [item(self.tokenizer.decode([t]), v) for t, v in top]}
                for s, (lp, top) in zip(text, entries)
            ]
            return {"content": content}
        offsets, at = [], 0
        for s in text:
            offsets.append(at)
            at += len(s)
        return {
            "tokens": text,
            "token_logprobs": [lp for lp, _ in entries],
            "top_logprobs": [{self.tokenizer.decode([t]): v for t, v in top} for _, top in entries],
            "text_offset": offsets,
        }

    @staticmethod
    async def collect(choices: list[Choice]) -> list[str]:
        texts = []
        for c in choices:
            while await c.pieces.get() is not None:
                pass
            texts.append(c.stream.text)
        return texts

    @staticmethod
    def usage(ids: list[int], choices: list[Choice]) -> dict:
        completion = sum(len(c.request.tokens) for c in choices)
        return {
            "prompt_tokens": len(ids),
            "completion_tokens": completion,
            "total_tokens": len(ids) + completion,
        }

    async def events(self, kind: str, ids: list[int], choices: list[Choice], s: Sampling, is_disconnected):
        """Server-sent events: a chunk per piece of text, one with each choice's finish_reason, the usage
        (stream_options.include_usage), then [DONE]. A client that disconnects cancels its rows."""
        rid, created = protocol.new_id("chatcmpl" if kind == "chat" else "cmpl"), protocol.now()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        sent = [0] * len(choices)  # tokens whose logprobs went out, per choice

        def chunk(index: int, text, finish: str | None = None, upto=None) -> str:
            """text: a completion's piece, or a chat delta (dict)."""
            lp = None
            if upto is not None and upto > sent[index]:
                lp, sent[index] = self.logprobs(kind, choices[index], sent[index], upto), upto
            if kind == "chat":
                choice = {"index": index, "delta": text or {}, "logprobs": lp, "finish_reason": finish}
            else:
                choice = {"index": index, "text": text or "", "logprobs": lp, "finish_reason": finish}
            body = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": self.model_name,
                "choices": [choice],
            }
            if s.include_usage:
                body["usage"] = None
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        def pieces(c: Choice, piece: str, final: bool) -> list:
            if c.splitter is None:
                return [piece] if piece else []
            return self.deltas(c, c.splitter.feed(piece) + (c.splitter.finish() if final else []))

        try:
            if kind == "chat":
                for i in range(len(choices)):
                    yield chunk(i, {"role": "assistant", "content": ""})
            pending = {i: asyncio.ensure_future(c.pieces.get()) for i, c in enumerate(choices)}
            while pending:
                done, _ = await asyncio.wait(
                    pending.values(), timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                if not done and await is_disconnected():
                    raise asyncio.CancelledError
                for i, fut in list(pending.items()):
                    if fut not in done:
                        continue
                    item, c = fut.result(), choices[i]
                    if item is None:
                        del pending[i]
                        end = len(c.request.tokens)
                        for part in pieces(c, c.stream.flush(), final=True):
                            yield chunk(i, part, upto=end)
                        yield chunk(i, None, self.finish_reason(c), upto=end)
                    else:
                        piece, count = item
                        for part in pieces(c, piece, final=False):
                            yield chunk(i, part, upto=count)
                        pending[i] = asyncio.ensure_future(c.pieces.get())
            if s.include_usage:
                body = {"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": []}
                body["usage"] = self.usage(ids, choices)
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            for c in choices:
                c.request.cancel()
            raise
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"


def build_app(server: Server):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="erniekit serve", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e):
        return JSONResponse(APIError(400, str(e)).body(), status_code=400)

    @app.exception_handler(Exception)
    async def any_error(request, e: Exception):
        log.exception("request failed")
        return JSONResponse(APIError(500, f"internal error: {e}").body(), status_code=500)

    @app.middleware("http")
    async def authenticate(request: HTTPRequest, call_next):
        key = request.headers.get("authorization")
        if server.api_key and request.url.path.startswith("/v1/") and key != f"Bearer {server.api_key}":
            e = APIError(401, "a valid API key is needed (Authorization: Bearer KEY)", code="invalid_api_key")
            return JSONResponse(e.body(), status_code=401)
        return await call_next(request)

    async def read_body(request: HTTPRequest) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != server.model_name and model not in server.adapter_names:
            raise APIError(
                400, f"model {model!r} is not served here; /v1/models lists them", "model", "model_not_found"
            )
        return body

    @app.get("/health")
    async def health():
        e = server.engine
        load = {"running": len(e.active), "waiting": len(e.waiting), "finished": dict(e.finished)}
        return {"status": "ok", **load}

    @app.get("/v1/models")
    async def models():
        def card(name: str, parent: str | None) -> dict:
            return {
                "id": name,
                "object": "model",
                "created": server.created,
                "owned_by": "erniekit",
                "parent": parent,
            }

        cards = [card(server.model_name, None)] + [card(n, server.model_name) for n in server.adapter_names]
        return {"object": "list", "data": cards}

    async def complete(request: HTTPRequest, kind: str):
        body = await read_body(request)
        s = protocol.sampling(body, kind)
        if kind == "chat":
            ids, images, videos = server.encode_chat(body)
        else:
            ids, images, videos = server.tokenizer.encode(protocol.prompt_text(body)), None, None
        choices = server.submit(
            ids, images, videos, s, chat=kind == "chat", slot=server.slot(body.get("model"))
        )
        if s.stream:
            events = server.events(kind, ids, choices, s, request.is_disconnected)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            texts = await server.collect(choices)
        except asyncio.CancelledError:
            for c in choices:
                c.request.cancel()
            raise
        out = []
        for i, (c, text) in enumerate(zip(choices, texts)):
            lp = server.logprobs(kind, c)
            if kind == "chat":
                message = server.message(c, s)
                reason = server.finish_reason(c)
                out.append({"index": i, "message": message, "logprobs": lp, "finish_reason": reason})
            else:
                out.append(
                    {"index": i, "text": text, "logprobs": lp, "finish_reason": server.finish_reason(c)}
                )
        return {
            "id": protocol.new_id("chatcmpl" if kind == "chat" else "cmpl"),
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": protocol.now(),
            "model": server.model_name,
            "choices": out,
            "usage": server.usage(ids, choices),
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HTTPRequest):
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        return await complete(request, "completion")

    return app
