#!/usr/bin/env bash
# `make demo` today: broker + 3-guest lab, samples streaming to Kafka, the demo
# campaign (deploy/campaigns/demo.yaml: one fault per level, each verified and
# reverted), the fault ledger printed. (Detection, RCA and the dashboard join this demo
# in later issues.) Leaves the lab and broker running.
set -euo pipefail
VMROC="${PYTHON:-python3} -m vmroc.cli"

$VMROC broker up
$VMROC lab up --guests 3
echo "== streaming samples of g1..g3 to vmroc.samples at 5 Hz"
$VMROC sample --rate 5 --publish &
sampler=$!
cleanup() { kill -TERM "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
            $VMROC inject heal >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== the demo campaign: $(dirname "$0")/campaigns/demo.yaml"
$VMROC campaign run "$(dirname "$0")/campaigns/demo.yaml"
cleanup
trap - EXIT

echo "== g2 as the sampler saw it from outside (kernel log errors, disk counters)"
$VMROC sample --guest g2 | grep -E "log_errors|vda_w|log: .*I/O error" | head -8 || true
echo "== the fault ledger (vmroc.faults)"
$VMROC tail vmroc.faults --from-beginning --idle 3 | tail -8
$VMROC lab status
echo "demo done: the lab and broker are still up. Stop them with: vmroc lab down && vmroc broker down"
