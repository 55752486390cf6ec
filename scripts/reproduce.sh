#!/usr/bin/env bash
# The paper's pipeline on one real dataset with the paper's settings (a CUDA GPU is assumed).
#   make reproduce DATASET=cub     SOURCE=/data/cub                  (holds CUB_200_2011/)
#   make reproduce DATASET=apy     SOURCE=/data/attribute_data IMAGES=/data/VOC2008/JPEGImages
#   make reproduce DATASET=wikiart SOURCE=/data/wikiart [ATTRIBUTIONS=/data/wikiart_attributions.csv]
# Without SOURCE, an existing data/<dataset> (from an earlier A1) is used.
set -euo pipefail
PY=${1:?usage: reproduce.sh PYTHON DATASET}
DATASET=${2:?set DATASET=cub|apy|wikiart}
# The dataset's paper tasks and its default run, from the registry (src/tasks.py), as demo.sh does.
TASKS=$("$PY" - "$DATASET" <<'PYEOF'
import sys
from src.tasks import TASKS
paper = [t for t in TASKS.values() if t.paper_column]
names = [t.name for t in paper if t.dataset == sys.argv[1]]
if not names:
    datasets = ", ".join(dict.fromkeys(t.dataset for t in paper))
    print(f"error: DATASET must be one of {datasets} (got {sys.argv[1]!r})", file=sys.stderr)
    sys.exit(2)
print(" ".join(names))
PYEOF
) || exit 2
RUN=$("$PY" -c 'import sys; from src.tasks import default_run; print(default_run(sys.argv[1]))' "$DATASET")

a1=(--dataset "$DATASET")
[ -n "${SOURCE:-}" ] && a1+=(--source "$SOURCE")
[ -n "${IMAGES:-}" ] && a1+=(--images "$IMAGES")
[ -n "${ATTRIBUTIONS:-}" ] && a1+=(--attributions "$ATTRIBUTIONS")
if [ -n "${SOURCE:-}" ] || [ ! -f "data/$DATASET/labels.json" ]; then
  "$PY" A1_preprocess.py "${a1[@]}"
fi
for t in $TASKS; do "$PY" A2_make_queries.py --task "$t"; done
resume=()
[ -f "weights/$RUN/checkpoint.pt" ] && resume=(--resume)
"$PY" B1_train_encoder.py --dataset "$DATASET" "${resume[@]}"
"$PY" C1_extract_embeddings.py --dataset "$DATASET"
for t in $TASKS; do
  "$PY" D1_train_distill.py --task "$t"
  "$PY" E1_evaluate.py --task "$t" --sweep --target-mts 0.15
  "$PY" E2_visualize.py --task "$t"
done
