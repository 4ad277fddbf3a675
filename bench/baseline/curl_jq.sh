#!/usr/bin/env bash
# Baseline 1 (docs/BENCHMARKS.md): what the Pontotel docs (seeds/000) show, run N times in
# a loop: log in with curl, extract the token with jq, redirect it into the token file.
# Usage: curl_jq.sh BASE_URL OUT_FILE N
set -u
base_url=$1 out=$2 n=$3
for _ in $(seq "$n"); do
  curl -s -X POST "$base_url/login/" \
    -H "Content-Type: application/json" \
    -d '{"username": "demo", "password": "demo-password"}' \
    | jq -r '.access_token' > "$out"
done
