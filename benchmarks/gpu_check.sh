#!/usr/bin/env bash
# The GPU checks, in one short run on a CUDA machine.
# Needs the Fashion-MNIST files in $ARCHBENCH_DATA (default ./.data) and a
# python3 with torch, numpy, safetensors, tqdm, matplotlib, pytest, hypothesis.
# Writes at most 8 files to $OUT (default ./gpu-out).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ARCHBENCH_DATA=${ARCHBENCH_DATA:-$PWD/.data}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -25 | tee "$OUT/pytest.txt"
tmp=$(mktemp -d)
timeout 90 python3 -m archbench run --device cuda --seeds 0,1,2 --out "$tmp" --name gpu-study --quiet 2>&1 | tee "$OUT/study.txt"
cp "$tmp/gpu-study/results.json" "$OUT/" 2>/dev/null
timeout 100 python3 benchmarks/seed_study.py --device cuda --repeats 3 --variants archbench,eager-cuda 2>&1 | tee "$OUT/bench.txt"
timeout 150 python3 benchmarks/zoo.py --device cuda --models ${ZOO_MODELS:-resnet_wide} --seeds 0,1,2 --json "$OUT/zoo.json" 2>&1 | tee "$OUT/zoo.txt"
# The CPU's best on the GPU, one seed (not measured there yet).
timeout 60 python3 benchmarks/zoo.py --device cuda --models dct_cnn --seeds 0 2>&1 | tail -3 | tee -a "$OUT/zoo.txt"
