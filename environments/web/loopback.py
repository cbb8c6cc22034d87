"""A threaded HTTP server on 127.0.0.1 for the pages the web environment serves itself.

:func:`serve` starts one on a free port in a daemon thread and returns its origin. A browser
context closed while a page is still loading hangs up mid-response; that is normal here and
is not printed (other handler errors still are).

Example:
    >>> origin, server = serve(http.server.SimpleHTTPRequestHandler)  # doctest: +SKIP
"""

from __future__ import annotations

import http.server
import threading
from typing import Any


class LoopbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # the client went away
            return
        super().handle_error(request, client_address)


def serve(handler: Any, name: str) -> tuple[str, LoopbackServer]:
    """Serve ``handler`` on ``127.0.0.1:<free port>`` in a daemon thread; ``(origin, server)``."""
    server = LoopbackServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
