"""A token endpoint for the ``custom`` auth provider of Llama Stack and of OGX, served on 127.0.0.1 (the tests of
several users on either front door).

The server POSTs ``{"api_key": <bearer token>, "request": {...}}`` to it for every request and reads back
``{"principal": ..., "attributes": {...}}`` (200), or refuses the request on any other status.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class TokenEndpoint:
    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        """``users``: token -> the user it stands for (principal and attributes)."""
        users_by_token = users

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = users_by_token.get(body.get("api_key", ""))
                answer = json.dumps(user or {"message": "unknown token"}).encode()
                self.send_response(200 if user else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request otherwise
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-endpoint", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/validate"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
