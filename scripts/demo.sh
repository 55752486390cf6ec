#!/usr/bin/env bash
# The whole pipeline on the embedded SynthArt dataset with its demo preset (a small ConvNeXt from
# scratch at 64 px on the CPU). Usage: [SEEDS=N] scripts/demo.sh [python]
# SEEDS=N (default 1) also trains and evaluates B1 seeds 1..N-1 as runs <run>-seed<N>, which
# REPORT.md gathers in its "Across B1 seeds" table.
set -euo pipefail
PY=${1:-python3}
SEEDS=${SEEDS:-1}
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: SEEDS must be a whole number ≥ 1 (got '$SEEDS')" >&2; exit 2; }
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; "$PY" "$@"; }
TASKS=(synthart-style synthart-multi)
run=$("$PY" -c "from src.tasks import default_run; print(default_run('synthart'))")

step A1_preprocess.py --dataset synthart
for t in "${TASKS[@]}"; do step A2_make_queries.py --task "$t"; done
for (( s = 0; s < SEEDS; s++ )); do  # seed 0 is the run itself; others are <run>-seed<s>
  r=$run; [ "$s" -gt 0 ] && r="$run-seed$s"
  step B1_train_encoder.py --dataset synthart --run "$r" --seed "$s"
  step C1_extract_embeddings.py --run "$r"
  for t in "${TASKS[@]}"; do
    step D1_train_distill.py --task "$t" --run "$r"
    step E1_evaluate.py --task "$t" --run "$r" --sweep
  done
done
step E2_visualize.py --task synthart-multi --run "$run"
step E2_visualize.py --task synthart-style --run "$run"
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "report: results/$run/REPORT.md"
