"""A threaded HTTP server on 127.0.0.1 for the pages the web environment serves itself.

:func:`serve` starts one on a free port in a daemon thread and returns its origin. A browser
context closed while a page is still loading hangs up mid-response; that is normal here and
is not printed (other handler errors still are). A server knows when it stopped serving
(:attr:`LoopbackServer.alive`), so that its owner can replace it and episodes that ran on it
can fail with a clear error.

Example:
    >>> origin, server = serve(http.server.SimpleHTTPRequestHandler)  # doctest: +SKIP
"""

from __future__ import annotations

import http.server
import threading
from typing import Any


class LoopbackServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server that knows whether it still serves (see :attr:`alive`)."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopped = threading.Event()  # set once it no longer serves: shut down, or its thread died

    @property
    def alive(self) -> bool:
        """Still serving: not shut down and its serving thread has not ended."""
        return not self.stopped.is_set()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            super().serve_forever(poll_interval)
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        self.stopped.set()
        super().shutdown()

    def server_close(self) -> None:
        self.stopped.set()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # the client went away
            return
        super().handle_error(request, client_address)


def serve(handler: Any, name: str) -> tuple[str, LoopbackServer]:
    """Serve ``handler`` on ``127.0.0.1:<free port>`` in a daemon thread; ``(origin, server)``.

    Nothing restarts a server that stopped (``server.alive`` is then False): its owner starts
    a new one, on a new port.
    """
    server = LoopbackServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
