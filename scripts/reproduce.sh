#!/usr/bin/env bash
# The paper's pipeline on one real dataset with the paper's settings (a CUDA GPU is assumed).
#   make reproduce DATASET=cub     SOURCE=/data/cub                  (holds CUB_200_2011/)
#   make reproduce DATASET=apy     SOURCE=/data/attribute_data IMAGES=/data/VOC2008/JPEGImages
#   make reproduce DATASET=wikiart SOURCE=/data/wikiart [ATTRIBUTIONS=/data/wikiart_attributions.csv]
# Without SOURCE, an existing data/<dataset> (from an earlier A1) is used. SEEDS=N adds B1 seeds.
set -euo pipefail
PY=${1:?usage: reproduce.sh PYTHON DATASET}
DATASET=${2:?set DATASET=cub|apy|wikiart}
# The dataset's paper tasks and its default run, from the registry (src/tasks.py), as demo.sh does.
TASKS=$("$PY" -m src.tasks --paper-tasks "$DATASET" | sed -n 1p) || exit 2
RUN=$("$PY" -c 'import sys; from src.tasks import default_run; print(default_run(sys.argv[1]))' "$DATASET")

a1=(--dataset "$DATASET")
[ -n "${SOURCE:-}" ] && a1+=(--source "$SOURCE")
[ -n "${IMAGES:-}" ] && a1+=(--images "$IMAGES")
[ -n "${ATTRIBUTIONS:-}" ] && a1+=(--attributions "$ATTRIBUTIONS")
if [ -n "${SOURCE:-}" ] || [ ! -f "data/$DATASET/labels.json" ]; then
  "$PY" A1_preprocess.py "${a1[@]}"
fi
for t in $TASKS; do "$PY" A2_make_queries.py --task "$t"; done
SEEDS=${SEEDS:-1}  # SEEDS=N also trains B1 seeds 1..N-1 as <run>-seed<s> (REPORT.md: "Across B1 seeds")
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: SEEDS must be a whole number ≥ 1 (got '$SEEDS')" >&2; exit 2; }
for (( s = 0; s < SEEDS; s++ )); do
  r=$RUN; [ "$s" -gt 0 ] && r="$RUN-seed$s"
  resume=()
  [ -f "weights/$r/checkpoint.pt" ] && resume=(--resume)
  "$PY" B1_train_encoder.py --dataset "$DATASET" --run "$r" --seed "$s" "${resume[@]}"
  "$PY" C1_extract_embeddings.py --run "$r"
  for t in $TASKS; do
    "$PY" D1_train_distill.py --task "$t" --run "$r"
    "$PY" E1_evaluate.py --task "$t" --run "$r" --sweep --target-mts 0.15
  done
done
for t in $TASKS; do "$PY" E2_visualize.py --task "$t" --run "$RUN"; done
