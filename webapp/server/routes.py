"""The routes the server answers: those its page and its API use, and no other (docs/reliability.md).

Gradio mounts about sixty routes; the page takes no file, records nothing and edits nothing, so
uploads, media streams, the proxy, monitoring, run history, login and the app editor are closed
here, before Gradio sees the request: an upload is refused before a byte of it reaches the disk.
tests/test_app.py drives the page in a browser and the API with gradio_client and checks that
nothing they asked for was refused, so a Gradio release that needs another route fails there.
"""

from __future__ import annotations

import re

from webapp.server.api_input import LOG
from webapp.server.size_limit import send_refusal

_API = "/gradio_api"
# (methods, path pattern) of every route the page, gradio_client and raw HTTP calls use.
OPEN_ROUTES = [
    ({"GET", "HEAD"}, r"/|/config/?|/theme\.css|/favicon\.ico|/robots\.txt|/(assets|static|svelte)/.+"),
    ({"GET", "HEAD"}, rf"{_API}/(info/?|startup-events|app_id/?|theme\.css|heartbeat/[^/]+|queue/data|queue/status)"),
    ({"GET", "HEAD"}, rf"{_API}/file=.+"),  # Gradio's allow-list decides which files (launch.allowed_files)
    ({"GET"}, rf"{_API}/call/(v2/)?[^/]+/[^/]+"),  # an API call's results, as server-sent events
    ({"POST"}, rf"{_API}/(queue/join|cancel|reset/?)"),
    ({"POST"}, rf"{_API}/(call/v2|call|run|api)/[^/]+/?"),
]
_OPEN = [(methods, re.compile(pattern)) for methods, pattern in OPEN_ROUTES]
UPLOADS = re.compile(rf"{_API}/(upload|upload_progress|process_recording)/?")
NO_UPLOADS = "This server takes no uploads: its page and API need no files."
NOT_SERVED = "Not found: this server answers only what its page and its API use."


def is_open(method: str, path: str) -> bool:
    return any(method in methods and pattern.fullmatch(path) for methods, pattern in _OPEN)


class ClosedRoutes:
    """ASGI middleware: a request for any route outside OPEN_ROUTES is answered 404 (403 for an
    upload) with one sentence, without reaching Gradio; websockets, which nothing here uses, are
    closed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = scope.get("method", "WEBSOCKET")
        if scope["type"] == "http" and is_open(method, path):
            return await self.app(scope, receive, send)
        LOG.info("refused %s %s: a closed route", method, path[:200])
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        upload = UPLOADS.fullmatch(path) is not None
        await send_refusal(receive, send, 403 if upload else 404, NO_UPLOADS if upload else NOT_SERVED)
