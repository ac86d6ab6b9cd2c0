"""``erniekit serve``: an OpenAI-compatible server for whatever erniekit loads (see app.py)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def parse_adapter(spec: str) -> tuple[str, str]:
    from erniekit.errors import ErniekitError

    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ErniekitError(
            f"--adapter {spec!r}: give NAME=PATH (a LoRA run, checkpoint or PEFT adapter directory)"
        )
    return name, path


def build_server(
    path: str,
    api_key: str | None = None,
    max_batch: int = 8,
    max_queue: int = 64,
    max_model_len: int | None = None,
    name: str | None = None,
    allow_images: list[str] | None = None,
    reasoning: bool = False,
    adapters: list[str] | None = None,
):
    """Load the model (and its ``NAME=PATH`` LoRA adapters, unmerged) behind an engine, not yet started:
    the :class:`~erniekit.serve.app.Server` that ``erniekit serve`` and the web UI's chat both answer from."""
    from erniekit.inference.engine import Engine
    from erniekit.inference.load import load_for_inference
    from erniekit.serve.app import Server

    tokenizer, model, processor = load_for_inference(path)
    named = dict(parse_adapter(a) for a in adapters or [])
    selector = None
    if named:
        from erniekit.inference.adapters import adapter_factors, attach

        selector = attach(model, {n: adapter_factors(p, model) for n, p in named.items()})
    length = max_model_len or min(model.args.max_position_embeddings, 4096)
    engine = Engine(model, max_batch=max_batch, max_model_len=length, max_queue=max_queue, adapters=selector)
    return Server(
        engine,
        tokenizer,
        processor,
        name or Path(path).resolve().name,
        api_key,
        allow_images,
        thinking=reasoning,
        adapter_names=list(named),
    )


def serve(path: str, host: str = "127.0.0.1", port: int = 8000, **options) -> int:
    """Load the model (``options``: those of :func:`build_server`), start the engine's thread and serve
    until SIGINT/SIGTERM; then stop taking requests, finish the ones in flight, and exit."""
    import signal

    import uvicorn

    from erniekit.serve.app import build_app

    server = build_server(path, **options)
    engine = server.engine
    app = build_app(server)
    engine.start()
    log.info(
        "serving %s as %r on http://%s:%d/v1 (max_batch %d, max_model_len %d%s)",
        path,
        server.model_name,
        host,
        port,
        engine.max_batch,
        engine.max_model_len,
        ", API key required" if server.api_key else "",
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it under the handler it found: let that be
    # a no-op, so a drained server exits 0 instead of dying of the signal
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=600)
    finally:
        engine.stop(drain=True)
    log.info("stopped")
    return 0
