#!/usr/bin/env bash
# Every comparison of issue 29, in the order they are run, one at a time. Each is resumable: compare.py reuses
# the runs it finished (runs/<run>/record.json), so running this again after a stop continues where it stopped.
# On two cores it takes days; start it in the background and commit each record.json as it lands:
#
#     nohup bash benchmarks/comparisons.sh > comparisons.log 2>&1 &
#
# Options shared by all: fp32 on CPUs without native bf16 (--equal-time measures and picks the fastest itself),
# memory off (the comparisons are of the backbones), 2 torch threads, the offline data in ../shared/data.
# The learning-rate grid is the same for every model; a rate chosen at either end would mean widening it.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SHARED_DATA:-../shared/data}
GRID=1.5e-3,3e-3,6e-3,1.2e-2,2.4e-2
COMMON=(--models s3cmn gpt2 mamba --seeds 0 1 --threads 2 --override use_memory=false --shared-data "$DATA")
run() { echo "== $(date -u '+%F %T') python benchmarks/compare.py $*"; python benchmarks/compare.py "$@"; }

# 1. The Python corpus, tiny, 0.5M training tokens, every model tuned over the grid.
run --corpus python --preset tiny "${COMMON[@]}" --lr-grid "$GRID" --precision no \
    --out results/compare/tiny-python-0.5m-tuned
# 2. Equal wall-clock, tiny, both corpora: 600 s of training each (the README recipe's 10 minutes), at the rates
#    the tuned comparisons chose on their validation text.
run --corpus wikitext2 --preset tiny "${COMMON[@]}" --equal-time 600 \
    --lr-from results/compare/tiny-wikitext2-tuned --out results/compare/tiny-wikitext2-equal-time
run --corpus python --preset tiny "${COMMON[@]}" --equal-time 600 \
    --lr-from results/compare/tiny-python-0.5m-tuned --out results/compare/tiny-python-equal-time
# 3. The trend: tiny at 2M (tuned) and 8M (the 2M rates, as the issue allows), small at 2M (tuned).
run --corpus python --preset tiny "${COMMON[@]}" --lr-grid "$GRID" --precision no --max-tokens 2097152 \
    --out results/compare/tiny-python-2m-tuned
run --corpus python --preset small "${COMMON[@]}" --lr-grid "$GRID" --precision no --max-tokens 2097152 \
    --out results/compare/small-python-2m-tuned
run --corpus python --preset tiny "${COMMON[@]}" --lr-from results/compare/tiny-python-2m-tuned --precision no \
    --max-tokens 8388608 --out results/compare/tiny-python-8m
# 4. WikiText-2, small, tuned (tiny is results/compare/tiny-wikitext2-tuned).
run --corpus wikitext2 --preset small "${COMMON[@]}" --lr-grid "$GRID" --precision no \
    --out results/compare/small-wikitext2-tuned
echo "== $(date -u '+%F %T') done; then: python scripts/trend.py results/compare/tiny-python-0.5m-tuned" \
     "results/compare/tiny-python-2m-tuned results/compare/tiny-python-8m --out results/compare/trend-python"
