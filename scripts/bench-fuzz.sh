#!/usr/bin/env bash
# Runs each fuzz target of the root package for a bounded time, one after
# another, with one fuzzing worker. A plain 'go test' runs only the seed
# corpora in testdata/fuzz, while this script searches for new inputs.
#
# Usage: scripts/bench-fuzz.sh [TARGET...]   (default: every target)
#
# FUZZTIME (default 10s) is the time per target, in go test's -fuzztime
# format; the record in BENCHMARKS.md used FUZZTIME=10m30s. FUZZMINIMIZETIME
# (default 10s) bounds the minimization of each new input: at go test's
# default of 60s, minimizing stalled the search for a minute at a time on
# 2 cores. A failing input is written to testdata/fuzz/<target>/, where
# plain 'go test' then runs it as a regression test; the script stops at
# the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

fuzztime="${FUZZTIME:-10s}"
minimizetime="${FUZZMINIMIZETIME:-10s}"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
	targets=(FuzzUnmarshalCaddyfile FuzzParseKey FuzzParseKeysFile FuzzPlaceholderNames FuzzServeHTTP)
fi

for target in "${targets[@]}"; do
	# -timeout 0 lifts go test's default limit of 10 minutes, which would
	# end a 10-minute run as a failure. -fuzztime bounds the run instead.
	echo "==> go test -run '^$target\$' -fuzz '^$target\$' -fuzztime $fuzztime" \
		"-fuzzminimizetime $minimizetime -parallel 1 -timeout 0 ." >&2
	go test -run "^$target\$" -fuzz "^$target\$" -fuzztime "$fuzztime" \
		-fuzzminimizetime "$minimizetime" -parallel 1 -timeout 0 .
done
