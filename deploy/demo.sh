#!/usr/bin/env bash
# `make demo`: the broker and a 3-guest lab (started if down); `vmroc demo`: the service
# (`vmroc serve` in process: every guest sampled from outside onto vmroc.samples,
# detection, RCA, everything stored), the demo campaign (deploy/campaigns/demo.yaml: one
# fault per level, each verified and reverted), then the scorecard from the service's
# store (per fault: kind, effective, detected, time to detect, rank-1 cause, right?; then
# AC@1, AC@3, Avg@5) and the dashboard's URL, serving until Ctrl-C. DEMO_ARGS go to
# `vmroc demo` (e.g. DEMO_ARGS=--exit for scripts). Leaves the lab and broker running.
# PYTHON: the interpreter of vmroc's virtual environment (default: the checkout's .venv,
# made by deploy/setup.sh).
set -euo pipefail
VMROC="${PYTHON:-$(dirname "$0")/../.venv/bin/python} -m vmroc.cli"

$VMROC broker up
$VMROC lab up --guests 3
# shellcheck disable=SC2086
$VMROC demo ${DEMO_ARGS:-}
echo "demo done: the lab and broker are still up. Stop them with:"
echo "  $VMROC lab down && $VMROC broker down"
