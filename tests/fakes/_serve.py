"""The one way a fake provider server (a module in this folder) listens: 127.0.0.1, a port the
test chose, a thread per request. Standard library only: the fakes run as plain processes."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(handler: type[BaseHTTPRequestHandler], port: int) -> None:
    """Serve ``handler`` on 127.0.0.1:``port`` until the process is stopped."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()
