#!/usr/bin/env bash
# The whole pipeline on the embedded SynthArt dataset with its demo preset (a small ConvNeXt from
# scratch at 64 px on the CPU). Usage: scripts/demo.sh [python]
set -euo pipefail
PY=${1:-python3}
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; "$PY" "$@"; }

step A1_preprocess.py --dataset synthart
for t in synthart-style synthart-multi; do step A2_make_queries.py --task "$t"; done
step B1_train_encoder.py --dataset synthart
step C1_extract_embeddings.py --dataset synthart
for t in synthart-style synthart-multi; do
  step D1_train_distill.py --task "$t"
  step E1_evaluate.py --task "$t" --sweep
done
step E2_visualize.py --task synthart-multi
step E2_visualize.py --task synthart-style
run=$("$PY" -c "from src.tasks import default_run; print(default_run('synthart'))")
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "report: results/$run/REPORT.md"
