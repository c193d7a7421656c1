#!/usr/bin/env bash
# The serving benchmark: `engine serve` and a minimal Python server around
# transformers.pipeline("text-classification") (hf_pipeline_server.py) with the same model
# directory, started side by side in this one run, each driven by loadgen.py at the given
# concurrencies with real SST-2 sentences. Both bind 127.0.0.1 on a port they choose; both are
# stopped by their PID at the end (and on any exit).
#
#   bench/serve/run_bench.sh MODEL_DIR OUT_DIR [SECONDS_PER_LEVEL] [CONCURRENCIES...]
#   PYTHON=/path/to/venv/bin/python (torch, transformers, aiohttp), DATA=sst2/dev.tsv
#
# OUT_DIR gets: machine.txt, commands.txt, engine.jsonl, hf_pipeline.jsonl (loadgen output),
# engine_metrics.txt (/metrics after the run), engine_serve.log, hf_pipeline.log, table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=$1
OUT=$2
SECONDS_PER_LEVEL=${3:-20}
shift $(( $# >= 3 ? 3 : $# ))
LEVELS=("$@")
[[ ${#LEVELS[@]} -gt 0 ]] || LEVELS=(1 8 64)
PYTHON=${PYTHON:-python3}
DATA=${DATA:-../shared/data/sst2/dev.tsv}
ENGINE=${ENGINE:-build/bin/engine}
mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# A path as results name it (engine/io/result_path.h): relative when under this directory, else its
# last two components, so the raw output reads the same on any machine.
name() {
  local p
  p=$(realpath -m "$1")
  case $p in
    "$PWD"/*) echo "${p#"$PWD"/}" ;;
    *) echo "$(basename "$(dirname "$p")")/$(basename "$p")" ;;
  esac
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine bench ':!bench/results' || echo ' (dirty)')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores visible"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "python: $($PYTHON -c 'import sys, torch, transformers, aiohttp; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "aiohttp", aiohttp.__version__, "torch threads", torch.get_num_threads())')"
  echo "model: $(name "$MODEL") ($(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['num_hidden_layers'], 'layers, hidden', c['hidden_size'])" "$MODEL/config.json"))"
  echo "data: $DATA"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; other work shares this machine)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# Waits (at most 300 s) for a port file and a 200 from URL_PATH on that port.
wait_port() {
  local file=$1 path=$2 port
  for _ in $(seq 600); do
    if [[ -s $file ]]; then
      port=$(cat "$file")
      if curl -sf -o /dev/null -X "${3:-GET}" -d '{"inputs": "warm up"}' "http://127.0.0.1:$port$path"; then
        echo "$port"
        return 0
      fi
    fi
    sleep 0.5
  done
  echo "server did not come up: $file" >&2
  return 1
}

ENGINE_CMD=("$ENGINE" serve --model "$MODEL" --port 0 --port-file "$TMP/engine.port")
HF_CMD=("$PYTHON" bench/serve/hf_pipeline_server.py "$MODEL" --port-file "$TMP/hf.port")
"${ENGINE_CMD[@]}" > "$OUT/engine_serve.log" 2>&1 &
PIDS+=($!)
"${HF_CMD[@]}" > "$OUT/hf_pipeline.log" 2>&1 &
PIDS+=($!)
ENGINE_PORT=$(wait_port "$TMP/engine.port" /health)
HF_PORT=$(wait_port "$TMP/hf.port" / POST)

LOADGEN=("$PYTHON" bench/serve/loadgen.py --data "$DATA" --seconds "$SECONDS_PER_LEVEL" --concurrency "${LEVELS[@]}")
{
  echo "engine:      ${ENGINE_CMD[*]}"
  echo "hf_pipeline: ${HF_CMD[*]}"
  echo "load:        ${LOADGEN[*]} --url http://127.0.0.1:PORT/predict --label engine|hf_pipeline"
} | sed -e "s|$TMP|TMP|g" -e "s|$MODEL|$(name "$MODEL")|g" -e "s|$PYTHON|$(name "$PYTHON")|g" > "$OUT/commands.txt"
"${LOADGEN[@]}" --url "http://127.0.0.1:$ENGINE_PORT/predict" --label engine | tee "$OUT/engine.jsonl"
curl -s "http://127.0.0.1:$ENGINE_PORT/metrics" > "$OUT/engine_metrics.txt"
"${LOADGEN[@]}" --url "http://127.0.0.1:$HF_PORT/predict" --label hf_pipeline | tee "$OUT/hf_pipeline.jsonl"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 - "$OUT" > "$OUT/table.md" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for name in ("engine", "hf_pipeline"):
    for line in open(f"{out}/{name}.jsonl"):
        r = json.loads(line)
        rows.setdefault(r["concurrency"], {})[name] = r
print("| concurrency | engine serve req/s | p50 ms | p99 ms | HF pipeline server req/s | p50 ms | p99 ms | errors (engine/HF) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in sorted(rows):
    e, h = rows[c].get("engine", {}), rows[c].get("hf_pipeline", {})
    print(f"| {c} | {e.get('throughput_rps')} | {e.get('p50_ms')} | {e.get('p99_ms')} | "
          f"{h.get('throughput_rps')} | {h.get('p50_ms')} | {h.get('p99_ms')} | {e.get('errors')}/{h.get('errors')} |")
PY
cat "$OUT/table.md"
