#!/usr/bin/env bash
# Every GPU figure of bench/, in one go, on a CUDA host with modx installed
# (pip install -e . ; faiss-gpu in place of faiss-cpu where it installs, see deploy/Dockerfile).
#   bash bench/gpu.sh [OUT]        default OUT: bench/results/gpu
# The 10M-vector search builds IVF/HNSW on the CPU and can take long; run it alone with
# `python -m bench.search --preset gpu --sizes 10M --kinds flat,torch` if need be.
set -euo pipefail
out=${1:-bench/results/gpu}
mkdir -p "$out"
py=${PYTHON:-python}
$py -m bench.train_step --preset gpu --peak-tflops 780 --out "$out/train_step.json"
$py -m bench.train_step --preset gpu --peak-tflops 780 --compile --out "$out/train_step_compiled.json"
$py -m bench.train_step --preset gpu --peak-tflops 780 --compile --batch 1024 --out "$out/train_step_compiled_b1024.json"
$py -m bench.embed --preset gpu --out "$out/embed.json"
$py -m bench.search --preset gpu --out "$out/search.json"
$py -m bench.freshness --preset gpu --out "$out/freshness.json"
$py -m bench.continual --preset reference --recipes sweep --seeds 0 --out "$out/emoji-reference-sweep"
$py -m bench.continual --preset reference --out "$out/emoji-reference"
$py -m bench.continual --preset gpu --recipes baselines --out "$out/emoji-gpu"
