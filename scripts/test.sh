#!/usr/bin/env bash
# Checks formatting, vets, lints and runs every test: the root package's
# tests (an in-process Caddy on the fixed ports localhost:2999, 9080 and
# 9443) and the e2e tests (a Caddy built with xcaddy, on free ports).
#
# Usage: make test
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

ensure_xcaddy
ensure_staticcheck

echo "==> gofmt -l ." >&2
unformatted="$(gofmt -l .)"
if [[ -n $unformatted ]]; then
	echo "These files need gofmt -w:" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "==> go vet ./..." >&2
go vet ./...

echo "==> staticcheck ./..." >&2
staticcheck ./...

# Caddy writes its autosaved config and certificates under these.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export XDG_CONFIG_HOME="$scratch/config"
export XDG_DATA_HOME="$scratch/data"

# The e2e package's TestMain builds Caddy first, estimated at about
# 2 minutes with an empty module cache on 2 cores, so the timeout leaves
# room for that.
echo "==> go test -count=1 ./..." >&2
go test -count=1 -timeout 9m ./...

# The handler's throttle, rate limiters and counters are shared by all
# requests. The race detector's build added about 2 minutes to a run with
# empty caches on 2 cores. It covers the root package only, because the
# e2e tests drive a separate Caddy process that it cannot see into.
echo "==> go test -race -count=1 ." >&2
go test -race -count=1 -timeout 5m .

# A short search for new inputs on every fuzz target, because the go test
# run above only replays the seed corpora. A failing input is saved under
# testdata/fuzz/<target>/ and fails this script.
echo "==> FUZZTIME=10s scripts/bench-fuzz.sh" >&2
FUZZTIME=10s scripts/bench-fuzz.sh
