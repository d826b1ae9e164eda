#!/usr/bin/env python3
"""A local receiver for Tripline's signed webhooks, for the demo (scripts/demo.sh) and for trying
a config: it checks each delivery's Standard Webhooks signature (README, "Alerting"), prints one
line per alert and appends the body to a JSON-lines file.

    TRIPLINE_WEBHOOK_SECRET=... scripts/webhook-sink.py --port 9899 --out alerts.jsonl

A delivery whose signature does not verify is answered 401 and not recorded, so Tripline retries
it and the log says so. Standard library only.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(secret: str, headers, body: bytes, tolerance_s: int = 300) -> bool:
    """The README's verification, as a receiver would write it."""
    key = (
        base64.b64decode(secret[len("whsec_"):])
        if secret.startswith("whsec_")
        else secret.encode()
    )
    msg_id, ts, sigs = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    )
    if not (msg_id and ts and sigs) or not ts.isdigit():
        return False
    if abs(time.time() - int(ts)) > tolerance_s:
        return False
    signed = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig[3:], expected) for sig in sigs.split() if sig.startswith("v1,")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument("--port", type=int, default=9899)
    parser.add_argument("--out", required=True, help="JSON-lines file the deliveries go to")
    parser.add_argument("--secret-env", default="TRIPLINE_WEBHOOK_SECRET")
    args = parser.parse_args()
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"webhook-sink: {args.secret_env} is not set", file=sys.stderr)
        return 2

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if not verify(secret, self.headers, body):
                print("webhook-sink: a delivery with a bad signature, refused", flush=True)
                self.send_response(401)
                self.end_headers()
                return
            try:
                payload = json.loads(body)
            except ValueError:
                self.send_response(400)
                self.end_headers()
                return
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(payload) + "\n")
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                summary = alert.get("annotations", {}).get("summary", "")
                print(
                    f"webhook-sink: [{alert.get('status')}] {labels.get('detector')} "
                    f"({alert.get('severity')}): {summary}",
                    flush=True,
                )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_):  # one line per alert above is enough
            pass

    server = ThreadingHTTPServer((args.host, args.port), Sink)
    print(f"webhook-sink: listening on {args.host}:{args.port}, writing {args.out}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
