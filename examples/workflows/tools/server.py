#!/usr/bin/env python3
"""A tool server for the examples: POST /lookup {"customer": id} answers a customer record.

It honours `Idempotency-Key`, as a tool should: a repeated call with the same key (a step
carried out again after a crash) gets the first answer and changes nothing twice.
Standard library only. Listens on 127.0.0.1:8931 (or the port given as the first argument).
"""
import http.server
import json
import sys

answers = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        try:
            args = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.reply(400, {"error": "the body is not JSON"})
        if self.path != "/lookup":
            return self.reply(404, {"error": f"no tool at {self.path}"})
        key = self.headers.get("idempotency-key")
        if key not in answers:
            customer = str(args.get("customer", "unknown"))
            answers[key] = {"id": customer, "name": f"Customer {customer}", "plan": "pro"}
        self.reply(200, answers[key])

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8931
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
