#!/usr/bin/env bash
# Sequence-length warm-up vs none, 2 seeds, tiny preset, the same 102,400-token budget.
# Run from anywhere: bash scripts/warmup_study.sh. Each run selects on the last 10% of the training file's articles
# (s3cmn-train's held-out slice); the test split is never read. results/study/warmup.log is an older run of it that
# validated on wiki.test.raw (the first protocol; see docs/measurements.md): rerun it for an honest comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
D=../shared/data
for seed in 0 1; do
  for cur in none seq-length; do
    s3cmn-train --train-file $D/wikitext-2-raw/wiki.valid.raw \
      --tokenizer $D/tokenizers/bert-base-uncased --max-tokens 102400 --num-epochs 50 --eval-interval 1000 \
      --eval-batches 20 --num-samples 0 --seed $seed --curriculum $cur --curriculum-tokens 51200 \
      --curriculum-min-length 32 --output-dir runs/study/warmup-$cur-seed$seed --log-level WARNING \
      2>/dev/null | tail -1
  done
done
