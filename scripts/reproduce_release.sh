#!/usr/bin/env bash
# The paper's tables from the authors' released weights, embeddings and queries (CPU, minutes).
#   make reproduce-release DATASET=cub|apy|wikiart RELEASE=DIR    (DIR: their unpacked archives)
# A1 imports the release (data/<dataset>/ and one weights/<run>/ per run folder found), then for
# every imported run and every task of the dataset: E1 with the authors' protocol (their quirks of
# E1, their student's λ, the λ sweep and the mTS@10 = 0.15 calibration) and E2; it ends by printing
# the REPORT.md of each run. DATASET and RELEASE come from the environment (make passes them) or
# as arguments 2 and 3; DATA_ROOT, WEIGHTS_ROOT, RESULTS_ROOT override the roots.
set -euo pipefail
PY=${1:?usage: reproduce_release.sh PYTHON [DATASET RELEASE]}
DATASET=${2:-${DATASET:-}}
RELEASE=${3:-${RELEASE:-}}
[ -n "$DATASET" ] || { echo "error: set DATASET=cub|apy|wikiart" >&2; exit 2; }
[ -n "$RELEASE" ] || { echo "error: set RELEASE=DIR, the folder holding the authors' unpacked archives" >&2; exit 2; }
DATA_ROOT=${DATA_ROOT:-data}
WEIGHTS_ROOT=${WEIGHTS_ROOT:-weights}
RESULTS_ROOT=${RESULTS_ROOT:-results}
roots=(--data-root "$DATA_ROOT" --weights-root "$WEIGHTS_ROOT" --results-root "$RESULTS_ROOT")

# The dataset's paper tasks and the E1 quirks that apply to it, from the registries
# (src/tasks.py, src/quirks.py): one line of task names, one of quirk names (maybe empty).
SETTINGS=$("$PY" -m src.tasks --paper-tasks "$DATASET") || exit 2
{ read -r TASK_LINE; read -r E1_QUIRKS || true; } <<<"$SETTINGS"
read -r -a TASKS <<<"$TASK_LINE"
e1_quirks=()
[ -n "$E1_QUIRKS" ] && e1_quirks=(--authors-quirks "$E1_QUIRKS")

# A1: their label maps, split, tags and queries → data/<dataset>/; every run folder → weights/<run>/
# ('all' = the A1 quirks the import applies for this dataset: WikiArt's tag cleaning).
"$PY" A1_preprocess.py --dataset "$DATASET" --source-type authors-release --source "$RELEASE" \
  --authors-quirks all "${roots[@]}"

# The runs this import wrote, as A1 recorded them in data/<dataset>/config.json ("runs").
mapfile -t RUNS < <("$PY" - "$DATA_ROOT" "$DATASET" <<'PYEOF'
import json
import sys
from pathlib import Path
print("\n".join(json.loads((Path(sys.argv[1]) / sys.argv[2] / "config.json").read_text())["runs"]))
PYEOF
)
[ "${#RUNS[@]}" -gt 0 ] || { echo "error: A1 recorded no runs in $DATA_ROOT/$DATASET/config.json" >&2; exit 2; }

reports=()
for run in "${RUNS[@]}"; do
  for t in "${TASKS[@]}"; do
    [ -f "$DATA_ROOT/$DATASET/queries_$t.csv" ] || { echo "no queries for $t in the release: skipped"; continue; }
    # E1 at the λ of their student (student_<task>_lam<λ>.pt), else the task's default λ
    lam=()
    students=("$WEIGHTS_ROOT/$run/student_${t}_lam"*.pt)
    if [ -f "${students[0]}" ]; then
      s=${students[0]##*_lam}
      lam=(--lambda "${s%.pt}")
    fi
    "$PY" E1_evaluate.py --task "$t" --run "$run" "${lam[@]}" --sweep --target-mts 0.15 \
      "${e1_quirks[@]}" "${roots[@]}"
    "$PY" E2_visualize.py --task "$t" --run "$run" "${roots[@]}"
  done
  reports+=("$RESULTS_ROOT/$run/REPORT.md")
done
echo "reproduced from the authors' release ($DATASET):"
printf 'report: %s\n' "${reports[@]}"
