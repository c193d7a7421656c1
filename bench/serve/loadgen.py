#!/usr/bin/env python3
"""Closed-loop HTTP load generator for /predict servers (engine serve, hf_pipeline_server.py).

C concurrent clients (asyncio + aiohttp, one keep-alive connection each) send one SST-2 sentence
per request, {"inputs": sentence}, one request after another, for a fixed time; sentences are taken
in file order, round robin. Prints one JSON line per run: requests, errors, seconds, throughput
(requests/s), latency p50/p90/p99 (ms). Every answer must be a non-empty list of {label, score}
(errors are counted, not retried).

    loadgen.py --url http://127.0.0.1:PORT/predict --data sst2/dev.tsv --concurrency 8 --seconds 20
"""
import argparse
import asyncio
import csv
import json
import time

import aiohttp


def read_sentences(path):
    with open(path, newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r["sentence"] for r in rows]


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def client(session, url, sentences, start_index, stride, deadline, latencies, errors):
    i = start_index
    while time.perf_counter() < deadline:
        body = {"inputs": sentences[i % len(sentences)]}
        i += stride
        t0 = time.perf_counter()
        try:
            async with session.post(url, json=body) as r:
                answer = await r.json(content_type=None)
                ok = r.status == 200 and isinstance(answer, list) and answer and "label" in answer[0]
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            ok = False
        if ok:
            latencies.append(time.perf_counter() - t0)
        else:
            errors.append(1)


async def run(url, sentences, concurrency, seconds, timeout):
    latencies, errors = [], []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        # One warm-up request outside the measurement.
        async with session.post(url, json={"inputs": sentences[0]}) as r:
            await r.read()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(client(session, url, sentences, k, concurrency, deadline, latencies, errors)
                               for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "p90_ms": round(1000 * percentile(latencies, 0.90), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--data", required=True, help="TSV with a `sentence` column (SST-2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--timeout", type=float, default=120, help="seconds one request may take")
    ap.add_argument("--label", default="", help="added to each output line (which server)")
    args = ap.parse_args()
    sentences = read_sentences(args.data)
    for c in args.concurrency:
        result = asyncio.run(run(args.url, sentences, c, args.seconds, args.timeout))
        result["server"] = args.label
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
