"""A small server of your own, standard library only: what start.sh runs instead of the runtime.

GET / answers a JSON greeting, POST /echo returns the JSON body it got, GET /healthz
answers ok. SIGTERM stops it cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class Handler(BaseHTTPRequestHandler):
    """Routes three paths; everything else is 404."""

    def do_GET(self) -> None:
        """Serve / and /healthz."""
        if self.path == "/":
            self.send_json(
                200, {"message": "served by start.sh, not by the runtime", "pid": os.getpid()}
            )
        elif self.path == "/healthz":
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        """Echo a JSON body back."""
        if self.path != "/echo":
            self.send_json(404, {"error": f"no route {self.path}"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.send_json(200, {"echo": json.loads(body)})
        except ValueError:
            self.send_json(400, {"error": "the body is not JSON"})

    def send_json(self, status: int, obj: object) -> None:
        """Write one JSON response."""
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    """Serve until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)  # unwinds serve_forever; the with-block closes the socket

    signal.signal(signal.SIGTERM, on_sigterm)
    with ThreadingHTTPServer((args.host, args.port), Handler) as server:
        print(f"listening on {args.host}:{args.port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
