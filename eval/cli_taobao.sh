#!/usr/bin/env bash
# The Taobao purchase-intent product row through the CLI only (issue 31): the commands a user
# runs, no Python. Compare the auROC it prints with the eval's product row
# (eval/reports/taobao-intent/report.md, `behavior-rag eval --task taobao-intent --seed 0`).
#
#   eval/cli_taobao.sh [EVENT_LOG] [WORK_DIR]
#
# EVENT_LOG defaults to ../shared/data/taobao_userbehavior/UserBehavior.dev.csv and WORK_DIR to
# a fresh temporary folder. BEHAVIOR_RAG=... runs another command line (tests run the module).
set -euo pipefail

DATA=${1:-../shared/data/taobao_userbehavior/UserBehavior.dev.csv}
WORK=${2:-$(mktemp -d)}
BR=${BEHAVIOR_RAG:-behavior-rag}
mkdir -p "$WORK"

# 1. the event log -> one session store (sessions cut at 30 min of inactivity)
$BR ingest "$DATA" --out "$WORK/taobao" > "$WORK/ingest.json"
# 2. the eval's split: sessions labelled and cut by the purchase target, users split
#    test 25 % (seed 0) and dev 20 % of the rest (seed 1); each part keeps whole sessions
$BR split "$WORK/taobao" --target purchase --by user --seed 0 --out "$WORK/parts" \
    > "$WORK/split.json"
# 3. fit on train (dev: thresholds and the stack) with every user's sessions as history,
#    no LLM (the eval's product row is classify.llm=never)
$BR fit "$WORK/parts/train" --dev "$WORK/parts/dev" --index "$WORK/index" \
    --target purchase --history "$WORK/taobao" --llm none --cascade never > "$WORK/fit.json"
# 4. classify the test users' sessions (the model cuts each at its prediction point)
$BR classify "$WORK/parts/test" --index "$WORK/index" --llm none --out "$WORK/preds.json"
# 5. score against the target's labels of the test part
$BR score "$WORK/preds.json" --labels "$WORK/parts/test_labels.csv" --positive will_buy \
    | tee "$WORK/score.json"
