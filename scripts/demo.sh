#!/usr/bin/env bash
# The whole pipeline on SynthArt with the demo settings. Usage: scripts/demo.sh [python]
set -euo pipefail
PY=${1:-python3}
start=$(date +%s)
$PY A1_preprocess.py --dataset synthart
$PY A2_make_queries.py --task synthart-style
$PY A2_make_queries.py --task synthart-multi
echo "demo finished in $(( $(date +%s) - start )) s"
