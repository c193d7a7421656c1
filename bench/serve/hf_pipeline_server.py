#!/usr/bin/env python3
"""The baseline of bench/serve: a minimal Python server around transformers.pipeline
("text-classification"), as a user would write one, answering POST /predict {"inputs": text}
with [{"label", "score"}, ...] (every label, highest first), the shape `engine serve` answers.

Standard library HTTP server, one thread per connection; the pipeline runs one request at a time
under a lock (a fast tokenizer shared between threads is not safe to call concurrently). No
batching across requests: that is what a plain web app around a pipeline does.

    hf_pipeline_server.py MODEL_DIR --port-file FILE   (binds 127.0.0.1, any free port)
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import pipeline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    clf = pipeline("text-classification", model=args.model, tokenizer=args.model, device="cpu", top_k=None)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load generator uses
        disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock, torch.inference_mode():
                out = clf(body["inputs"])
            if out and isinstance(out[0], list):  # one text in: transformers 5 still nests the answer
                out = out[0]
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer((args.host, 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
