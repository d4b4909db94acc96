#!/usr/bin/env bash
# `make demo` today: broker + 3-guest lab; every guest sampled from outside at 5 Hz onto
# vmroc.samples; the detector turning samples into anomalies on vmroc.anomalies; the
# demo campaign (deploy/campaigns/demo.yaml: one fault per level, each verified and
# reverted); then which faults were noticed. (RCA and the dashboard join this demo in
# later issues.) Leaves the lab and broker running.
set -euo pipefail
VMROC="${PYTHON:-python3} -m vmroc.cli"
out=$(mktemp -d /tmp/vmroc-demo.XXXX)

$VMROC broker up
$VMROC lab up --guests 3
echo "== sampling g1..g3 at 5 Hz to vmroc.samples; detecting into vmroc.anomalies"
$VMROC sample --rate 5 --publish 2>"$out/sampler.log" &
sampler=$!
$VMROC detect --baseline 25 --group "demo-$(date +%s)" >"$out/anomalies.txt" 2>"$out/detector.log" &
detector=$!
cleanup() { kill -TERM "$sampler" "$detector" 2>/dev/null || true
            wait "$sampler" "$detector" 2>/dev/null || true
            $VMROC inject heal >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== the demo campaign: $(dirname "$0")/campaigns/demo.yaml (~3 min)"
$VMROC campaign run "$(dirname "$0")/campaigns/demo.yaml"
cleanup
trap - EXIT

echo "== anomalies the detector raised (guest, score, the features that moved)"
cat "$out/anomalies.txt"
echo "== the fault ledger (vmroc.faults)"
$VMROC tail vmroc.faults --idle 3 --from-beginning | grep -E "injected|effect" | tail -10
$VMROC lab status
echo "demo done (logs in $out): the lab and broker are still up. Stop them with:"
echo "  vmroc lab down && vmroc broker down"
