#!/usr/bin/env bash
# `make demo` today: broker + 3-guest lab; every guest sampled from outside at 5 Hz onto
# vmroc.samples; the detector turning samples into anomalies on vmroc.anomalies; the
# RCA ranking the causes of each incident on vmroc.incidents; the demo campaign
# (deploy/campaigns/demo.yaml: one fault per level, each verified and reverted); then
# the score: which faults were noticed, how fast, and whether the rank-1 cause was the
# injected one. (The dashboard joins this demo in a later issue.) Leaves the lab and
# broker running.
set -euo pipefail
VMROC="${PYTHON:-python3} -m vmroc.cli"
out=$(mktemp -d /tmp/vmroc-demo.XXXX)

$VMROC broker up
$VMROC lab up --guests 3
echo "== sampling g1..g3 at 5 Hz to vmroc.samples; detecting into vmroc.anomalies"
$VMROC sample --rate 5 --publish 2>"$out/sampler.log" &
sampler=$!
run=$(date +%s)
$VMROC detect --baseline 25 --group "demo-detect-$run" >"$out/anomalies.txt" 2>"$out/detector.log" &
detector=$!
$VMROC rca run --group "demo-rca-$run" >"$out/incidents.txt" 2>"$out/rca.log" &
rca=$!
cleanup() { kill -TERM "$sampler" "$detector" "$rca" 2>/dev/null || true
            wait "$sampler" "$detector" "$rca" 2>/dev/null || true
            $VMROC inject heal >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== the demo campaign: $(dirname "$0")/campaigns/demo.yaml (~3 min)"
$VMROC campaign run "$(dirname "$0")/campaigns/demo.yaml" --json >"$out/campaign.json"
campaign=$("${PYTHON:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1]))["campaign_id"])' "$out/campaign.json")
sleep 10  # the last incident closes after 8 quiet seconds
cleanup
trap - EXIT

echo "== anomalies the detector raised (guest, score, the features that moved)"
cat "$out/anomalies.txt"
echo "== incidents with their ranked causes"
cat "$out/incidents.txt"
echo "== the score of campaign $campaign against the fault ledger"
$VMROC rca score --campaign "$campaign"
$VMROC lab status
echo "demo done (logs in $out): the lab and broker are still up. Stop them with:"
echo "  vmroc lab down && vmroc broker down"
