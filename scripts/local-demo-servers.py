"""The two servers of scripts/local-demo, on loopback, with nothing but Python's standard library.

- a photo host on 127.0.0.1:8001 serving the committed fixture photos (tests/fixtures/pkg/images,
  e.g. http://127.0.0.1:8001/large/t1.webp);
- a stand-in for concrexit's callback on 127.0.0.1:8000: POST
  /api/facedetection/encodings/{type}/{pk}/ with {"token", "encodings"}, which it checks as
  concrexit does (a JSON object, a list of lists of 128 floats), saves as
  target/local-demo/callbacks/{type}-{pk}.json and prints in a line.

Run from the repository root; stops on Ctrl-C or SIGTERM.
"""

import functools
import json
import os
import re
import signal
import sys
import threading
from http.server import SimpleHTTPRequestHandler, BaseHTTPRequestHandler, ThreadingHTTPServer

PHOTOS = os.path.join("tests", "fixtures", "pkg", "images")
CALLBACKS = os.path.join("target", "local-demo", "callbacks")
ROUTE = re.compile(r"^/api/facedetection/encodings/([a-z]+)/([0-9]+)/$")


class Photos(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Callbacks(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        route = ROUTE.match(self.path)
        if not route:
            return self.answer(404, {"detail": "Not found."})
        kind, pk = route.groups()
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length))
            encodings = body["encodings"]
            assert isinstance(body["token"], str)
            assert all(len(e) == 128 and all(isinstance(x, float) for x in e) for e in encodings)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self.answer(400, {"encodings": ["not a list of encodings"]})
        with open(os.path.join(CALLBACKS, f"{kind}-{pk}.json"), "w") as out:
            json.dump(body | {"token": "(not kept)"}, out)
        first = ", ".join(f"{x:.4f}" for x in encodings[0][:3]) if encodings else ""
        print(
            f"callback: {kind} {pk}: {len(encodings)} encodings"
            + (f", the first starts {first}, ..." if encodings else ""),
            flush=True,
        )
        self.answer(200, {})


def main():
    os.makedirs(CALLBACKS, exist_ok=True)
    servers = [
        ThreadingHTTPServer(("127.0.0.1", 8001), functools.partial(Photos, directory=PHOTOS)),
        ThreadingHTTPServer(("127.0.0.1", 8000), Callbacks),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("photos on http://127.0.0.1:8001/, callbacks on http://127.0.0.1:8000/", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
