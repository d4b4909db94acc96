#!/usr/bin/env bash
# `make demo` today: broker + 3-guest lab, samples streaming to Kafka, two faults
# injected, verified and reverted, the fault ledger printed. (Detection, RCA and the
# dashboard join this demo in later issues.) Leaves the lab and broker running.
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

echo "== disk-eio on g2: write errors for 8 s"
$VMROC inject disk-eio -g g2 --duration 8s -p iotype=write
echo "== net-drop on g3: 50% packet loss for 8 s"
$VMROC inject net-drop -g g3 --duration 8s -p loss=50
cleanup
trap - EXIT

echo "== g2 as the sampler saw it from outside (kernel log errors, disk counters)"
$VMROC sample --guest g2 | grep -E "log_errors|vda_w|log: .*I/O error" | head -8 || true
echo "== the fault ledger (vmroc.faults)"
$VMROC tail vmroc.faults --from-beginning --idle 3 | tail -8
$VMROC lab status
echo "demo done: the lab and broker are still up. Stop them with: vmroc lab down && vmroc broker down"
