#!/usr/bin/env bash
# Every GPU figure of bench/, in one go, on a CUDA host with modx installed
# (pip install -e . ; faiss-gpu in place of faiss-cpu where it installs, see deploy/Dockerfile).
#   bash bench/gpu.sh [OUT]        default OUT: bench/results/gpu
# The 10M-vector search builds IVF/HNSW on the CPU and can take long; run it alone with
# `python -m bench.search --preset gpu --sizes 10M --kinds flat,torch` if need be.
# Data-parallel figures (docs/distributed.md): the DDP step time at 1, 2, 4 and 8 GPUs and
# re-embedding images/s at 1 and all GPUs; those this host has too few GPUs for are listed
# as owed at the end.
set -euo pipefail
out=${1:-bench/results/gpu}
mkdir -p "$out"
py=${PYTHON:-python}
gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
owed=()
$py -m bench.train_step --preset gpu --peak-tflops 780 --out "$out/train_step.json"
$py -m bench.train_step --preset gpu --peak-tflops 780 --compile --out "$out/train_step_compiled.json"
$py -m bench.train_step --preset gpu --peak-tflops 780 --compile --batch 1024 --out "$out/train_step_compiled_b1024.json"
for n in 1 2 4 8; do
  if [ "$n" -le "$gpus" ]; then
    $py -m torch.distributed.run --standalone --nproc_per_node "$n" -m bench.ddp_step --preset gpu \
      --out "$out/ddp_step_${n}gpu.json"
  else
    owed+=("DDP step time and scaling at $n GPUs (this host has $gpus)")
  fi
done
$py -m bench.ddp_step --summary "$out"
$py -m bench.embed --preset gpu --out "$out/embed.json"
if [ "$gpus" -gt 1 ]; then
  $py -m bench.embed --preset gpu --shards "$gpus" --out "$out/embed_${gpus}gpu.json"
else
  owed+=("re-embedding images/s on N > 1 GPUs (this host has $gpus)")
fi
$py -m bench.search --preset gpu --out "$out/search.json"
$py -m bench.freshness --preset gpu --out "$out/freshness.json"
$py -m bench.continual --preset reference --recipes sweep --seeds 0 --out "$out/emoji-reference-sweep"
$py -m bench.continual --preset reference --out "$out/emoji-reference"
$py -m bench.continual --preset gpu --recipes baselines --out "$out/emoji-gpu"
if [ "${#owed[@]}" -gt 0 ]; then
  echo "figures owed (need a host with more GPUs):"
  printf '  %s\n' "${owed[@]}"
fi
