"""``erniekit webui``: the browser UI over the CLI's verbs (train, chat, eval, export); see app.py.

The page is a few static files installed with the package (no CDN, no front-end build), served by the
same FastAPI/uvicorn stack as ``erniekit serve``; runs it starts are ordinary CLI runs (jobs.py).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

log = logging.getLogger(__name__)
LOCAL = {"127.0.0.1", "localhost", "::1"}


def webui(
    host: str = "127.0.0.1",
    port: int = 7860,
    root: str | None = None,
    token: str | None = None,
    any_path: bool = False,
    state_dir: str | None = None,
) -> int:
    """Serve the web UI until Ctrl-C. Runs it started keep running; a restarted web UI finds them again."""
    import os

    import uvicorn

    from erniekit.webui.app import WebUI, build_app

    if root:  # the page's relative paths, and the runs it starts, mean what they mean in a shell there
        os.chdir(root)
    if token is None and host not in LOCAL:
        token = secrets.token_urlsafe(18)  # reachable from elsewhere: nobody without the address gets in
    ui = WebUI(Path.cwd(), Path(state_dir) if state_dir else None, any_path, token)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(
        f"erniekit webui: open {address}  (files under {ui.root}; Ctrl-C stops the page, not the runs)",
        flush=True,
    )
    uvicorn.run(build_app(ui), host=host, port=port, log_level="warning")
    return 0
