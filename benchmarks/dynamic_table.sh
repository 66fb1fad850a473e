#!/usr/bin/env bash
# Issue 31's dynamic-evaluation table for one preset, end to end: the README's offline recipe trained on WikiText-2's
# valid split minus its last 6 articles, the kNN datastore built from that training text, the read-outs and dynamic
# evaluation fitted on the 6 held-out articles (the speed floor 0.3x, the meta-learned step sizes), then the whole
# test split scored once. Each step is skipped when its output exists, so a stopped run resumes:
#
#   bash benchmarks/dynamic_table.sh tiny  runs/tiny-dyn  results/memory/tiny-dynamic
#   bash benchmarks/dynamic_table.sh small runs/small-dyn results/memory/small-dynamic
#
# Run it alone on the machine: the fit's speed floor and the report's tokens/s are timings.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 3 ]; then
    echo "usage: bash benchmarks/dynamic_table.sh PRESET RUN_DIR RESULT_DIR" >&2
    exit 2
fi
preset=$1 run=$2 out=$3
DATA=${SHARED_DATA:-../shared/data}
# the README's recipes: tiny with the BERT WordPiece vocabulary, small with GPT-2's BPE (TOKENIZER overrides)
default_tokenizer=bert-base-uncased
[ "$preset" = small ] && default_tokenizer=gpt2
TOKENIZER=${TOKENIZER:-$DATA/tokenizers/$default_tokenizer}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$out" "$run-data"
step() { echo "== $(date -u '+%F %T') $*" | tee -a "$out/commands.txt"; }

# 1. the split (the held-out slice training itself would take: s3cmn.data.validation.hold_out)
if [ ! -s "$run-data/heldout.raw" ]; then
    step "split $DATA/wikitext-2-raw/wiki.valid.raw -> $run-data/train.raw, $run-data/heldout.raw"
    python - "$DATA/wikitext-2-raw/wiki.valid.raw" "$run-data" <<'EOF'
import os, sys
from pathlib import Path
from s3cmn.data.validation import hold_out
split = hold_out(Path(sys.argv[1]).read_text(encoding="utf-8"), 0.1)
for name, text in (("train.raw", split.train), ("heldout.raw", split.validation)):
    tmp = Path(sys.argv[2]) / (name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, Path(sys.argv[2]) / name)
EOF
fi
# 2. train: the README's recipe (10 minutes) with the split named
if [ ! -f "$run/best/model.safetensors" ]; then
    resume=()
    [ -d "$run/last" ] && resume=(--resume)
    step "python -m s3cmn.cli.train --preset $preset --train-file $run-data/train.raw --validation-file $run-data/heldout.raw --tokenizer $TOKENIZER --max-time 600 --num-epochs 50 --output-dir $run --eval-interval 100 --eval-batches 20 --no-progress ${resume[*]}"
    python -m s3cmn.cli.train --preset "$preset" --train-file "$run-data/train.raw" \
        --validation-file "$run-data/heldout.raw" --tokenizer "$TOKENIZER" --max-time 600 \
        --num-epochs 50 --output-dir "$run" --eval-interval 100 --eval-batches 20 --no-progress "${resume[@]}" \
        2>&1 | tee "$out/train.txt"
fi
# 3. the kNN datastore from the training text
if [ ! -d "$run/best/nexttoken/datastore" ]; then
    step "python -m s3cmn.cli.memory build $run/best --text $run-data/train.raw --no-progress"
    python -m s3cmn.cli.memory build "$run/best" --text "$run-data/train.raw" --no-progress
fi
# 4. the read-outs and dynamic evaluation, fitted on the held-out articles
if [ ! -f "$run/best/nexttoken/dynamic.json" ]; then
    step "python -m s3cmn.cli.memory fit $run/best --text $run-data/heldout.raw --dynamic --dynamic-meta --dynamic-windows-per-step 1,4 --dynamic-min-speed 0.3 --no-progress"
    python -m s3cmn.cli.memory fit "$run/best" --text "$run-data/heldout.raw" --dynamic --dynamic-meta \
        --dynamic-windows-per-step 1,4 --dynamic-min-speed 0.3 --no-progress 2>&1 | tee "$out/fit.txt"
fi
cp "$run/best/nexttoken/dynamic.json" "$out/dynamic.json"
# 5. the whole test split, scored once
if [ ! -f "$out/report.json" ]; then
    step "python -m s3cmn.cli.eval $run/best --wikitext2 --data-dir $DATA/wikitext-2-raw --memory off,dynamic,cache,cache+dynamic,cache+knn+dynamic --report-dir $out --no-progress"
    python -m s3cmn.cli.eval "$run/best" --wikitext2 --data-dir "$DATA/wikitext-2-raw" \
        --memory off,dynamic,cache,cache+dynamic,cache+knn+dynamic --report-dir "$out" --no-progress
fi
echo "== $(date -u '+%F %T') done: $out/report.md"
