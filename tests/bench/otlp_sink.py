"""An OTLP/HTTP sink for the benchmark's tracing scenario: answers every export 200 with an empty
export response and counts the requests and bytes (decoding is left to the test receiver,
tests/support/otlp.py: here it would take CPU from the core wrk and the mock share).

Usage: python -m tests.bench.otlp_sink PORT
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    exports = 0
    received = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        _Sink.exports += 1
        _Sink.received += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        text = f"exports {_Sink.exports}\nbytes {_Sink.received}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args: object) -> None:
        return None


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Sink).serve_forever()


if __name__ == "__main__":
    main()
