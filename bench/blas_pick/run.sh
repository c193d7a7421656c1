#!/usr/bin/env bash
# Builds bench/blas_pick/blas_pick.cpp against each candidate BLAS that Debian ships (OpenBLAS with
# pthreads, OpenBLAS with OpenMP, BLIS, oneDNN) and runs it at 1 and 2 threads, in turn, so that
# the libraries meet the same machine load. Usage: bench/blas_pick/run.sh [OUT_DIR]
# (default /tmp/blas_pick). Needs libopenblas0-pthread, libopenblas0-openmp, libblis-dev, libdnnl-dev.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-/tmp/blas_pick}
mkdir -p "$out"
lib=/usr/lib/x86_64-linux-gnu
declare -A flags=(
  [openblas-pthread]="-DBLAS_OPENBLAS $lib/openblas-pthread/libopenblas.so.0"
  [openblas-openmp]="-DBLAS_OPENBLAS $lib/openblas-openmp/libopenblas.so.0 -fopenmp"
  [blis-openmp]="-DBLAS_BLIS $lib/blis-openmp/libblis.so.4 -fopenmp"
  [onednn]="-DBLAS_DNNL $lib/libdnnl.so.2 -fopenmp"
)
names=(openblas-pthread openblas-openmp blis-openmp onednn)
for n in "${names[@]}"; do
  # shellcheck disable=SC2086
  g++ -O2 -std=c++17 blas_pick.cpp ${flags[$n]} -o "$out/blas_pick-$n"
done
for threads in 1 2; do
  for n in "${names[@]}"; do
    echo "== $n"
    OMP_NUM_THREADS=$threads "$out/blas_pick-$n" "$threads"
  done
done
