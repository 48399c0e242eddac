#!/usr/bin/env bash
# Reproduces the shipped demo models and the held-out figures quoted in README.md.
#
#   bash tools/reproduce_demo_model.sh           # everything: data, features, training, evaluation
#   bash tools/reproduce_demo_model.sh evaluate  # only the held-out evaluation of the shipped models
#
# Seeds: training+validation streams come from seed 1 (validation is a seeded
# 15% split of them, used to pick the checkpoint); the held-out test streams
# come from seed 424242, never seen in training or selection.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/synthactions}
TRAIN_COUNT=${TRAIN_COUNT:-400}
TEST_COUNT=${TEST_COUNT:-48}
STEP_RATE=4

evaluate() {
  if [ ! -f "$DATA/test/annotations.txt" ]; then
    "$PY" -m tools.make_synthactions --out "$DATA/test" --count "$TEST_COUNT" --seed 424242 \
      --size mixed --fps-range 10 30 --duration-range 30 60 --overwrite
  fi
  "$PY" -m tools.extract_features --videos "$DATA/test/videos" --out "$DATA/test/features" --step-rate $STEP_RATE
  for kind in gru frame_only; do
    "$PY" -m tools.score_offline --model "models/synthactions_${kind}.safetensors" \
      --features "$DATA/test/features" --out "$DATA/test/scores_${kind}.jsonl" --quiet
    "$PY" -m tools.evaluate --scores "$DATA/test/scores_${kind}.jsonl" \
      --annotations "$DATA/test/annotations.txt" --out "$DATA/test/metrics_${kind}.json" > /dev/null
    echo "== ${kind}:"
    "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({k: (round(v,3) if isinstance(v,float) else v) for k,v in m.items() if k!='per_class_cAP'}, indent=1))" \
      "$DATA/test/metrics_${kind}.json"
  done
  echo "== start events of the GRU (pipeline detector, default events config), within 1 s, right class:"
  "$PY" -m tools.event_metrics --scores "$DATA/test/scores_gru.jsonl" --annotations "$DATA/test/annotations.txt"
}

train() {
  if [ ! -f "$DATA/train/annotations.txt" ]; then
    "$PY" -m tools.make_synthactions --out "$DATA/train" --count "$TRAIN_COUNT" --seed 1 \
      --size mixed --fps-range 10 30 --duration-range 30 60 --overwrite
  fi
  "$PY" -m tools.extract_features --videos "$DATA/train/videos" --out "$DATA/train/features" --step-rate $STEP_RATE
  for kind in gru frame_only; do
    "$PY" -m tools.train_head --features "$DATA/train/features" --annotations "$DATA/train/annotations.txt" \
      --kind "$kind" --out "models/synthactions_${kind}.safetensors" --seed 0
  done
}

case "${1:-all}" in
  evaluate) evaluate ;;
  train) train ;;
  all) train; evaluate ;;
  *) echo "usage: $0 [all|train|evaluate]" >&2; exit 2 ;;
esac
