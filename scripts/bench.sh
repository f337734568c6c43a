#!/usr/bin/env bash
# Reruns the measurements that BENCHMARKS.md records. The micro-benchmarks
# compare the api_key handler with Caddy's header matcher and basic_auth,
# using benchstat. A timing test compares near and far misses. The load
# tests send traffic through a real Caddy binary in front of a real
# upstream on loopback. The long fuzz runs are separate, in
# scripts/bench-fuzz.sh.
#
# Usage: scripts/bench.sh [micro|load|all]   (default: all; make bench)
#
# Every run is bounded: with the defaults, micro took 2.5 minutes and load
# 2 minutes, plus the Caddy build, on the 2 cores of BENCHMARKS.md. The
# settings, all optional:
#   CADDY_BINARY      a Caddy built with this module; default: build one
#                     with xcaddy into bin/bench/caddy
#   BENCH_COUNT       -count of each benchmark (6)
#   BENCH_TIME        -benchtime of each benchmark (0.5s)
#   BENCH_SAMPLES     calls of the function-level timing test (300000)
#   LOAD_ROUNDS       rounds of the load comparison (5)
#   LOAD_SEGMENT      measured time of each load segment (1s)
#   LOAD_CONNECTIONS  concurrent connections of the load comparison (8)
#   TIMING_REQUESTS   requests of the HTTP timing test (60000)
#
# Results go to bin/bench/results-<UTC time>/: the raw outputs, and
# summary.md with the tables that BENCHMARKS.md quotes. All traffic goes to
# servers this script starts on 127.0.0.1.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

# golang.org/x/perf has no releases, so this is the version the record used.
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da

what="${1:-all}"
case $what in
micro | load | all) ;;
*)
	echo "usage: scripts/bench.sh [micro|load|all]" >&2
	exit 2
	;;
esac

results="bin/bench/results-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
summary="$results/summary.md"
echo "Writing results to $results" >&2

# run_micro runs the micro-benchmarks and the function-level timing test,
# and writes benchstat's comparisons to the summary.
run_micro() {
	local count="${BENCH_COUNT:-6}" benchtime="${BENCH_TIME:-0.5s}"
	local samples="${BENCH_SAMPLES:-300000}"
	if ! command -v benchstat >/dev/null 2>&1; then
		echo "Installing benchstat into $TOOLS_BIN" >&2
		GOBIN="$TOOLS_BIN" go install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION"
	fi

	local pattern='^Benchmark(ServeHTTP|ServeHTTPMiss|ServeHTTPThrottle|Alternatives|Floor)$'
	echo "==> go test -run '^\$' -bench '$pattern' -benchmem -count $count -benchtime $benchtime ." >&2
	go test -run '^$' -bench "$pattern" -benchmem -count "$count" -benchtime "$benchtime" . |
		tee "$results/micro.txt"

	echo "==> go test -run '^\$' -bench '^BenchmarkTimingMiss\$' -benchtime ${samples}x ." >&2
	go test -run '^$' -bench '^BenchmarkTimingMiss$' -benchtime "${samples}x" . |
		tee "$results/timing-function.txt"

	{
		echo "## Micro-benchmarks"
		echo
		echo '```'
		benchstat "$results/micro.txt"
		echo '```'
		echo
		echo "### 1 to 10,000 keys"
		echo
		echo '```'
		benchstat -filter '.name:ServeHTTP' -col /keys "$results/micro.txt"
		echo '```'
		echo
		echo "### Near, far and wrong-length misses"
		echo
		echo '```'
		benchstat -filter '.name:ServeHTTPMiss' -col /miss "$results/micro.txt"
		echo '```'
		echo
		echo "### api_key next to the alternatives"
		echo
		echo '```'
		benchstat -filter '.name:Alternatives' -col /auth "$results/micro.txt"
		echo '```'
		echo
		echo "## Timing of near and far misses, function level"
		echo
		echo '```'
		grep -E '^(Benchmark|goos|goarch|cpu)' "$results/timing-function.txt"
		echo '```'
		echo
	} >>"$summary"
}

# Processes started by run_load, stopped on exit.
upstream_pid=
caddy_pid=
stop_servers() {
	local pid
	for pid in $caddy_pid $upstream_pid; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $caddy_pid $upstream_pid; do
		wait "$pid" 2>/dev/null || true
	done
	caddy_pid=
	upstream_pid=
}
trap stop_servers EXIT

# fail_start ends the run after a server failed to start, pointing to the
# logs.
fail_start() {
	echo "the server logs are in $results" >&2
	exit 1
}

# run_load starts the upstream and Caddy on free loopback ports and runs
# the load comparison, the flood run and the HTTP timing test.
run_load() {
	local caddy="${CADDY_BINARY:-}"
	if [[ -z $caddy ]]; then
		caddy=bin/bench/caddy
		./scripts/build-caddy.sh "$caddy"
	fi
	go build -o bin/bench/loadgen ./bench/loadgen
	local loadgen=bin/bench/loadgen

	local ports admin_port http_port https_port upstream_port
	mapfile -t ports < <("$loadgen" ports 4)
	admin_port=${ports[0]} http_port=${ports[1]} https_port=${ports[2]} upstream_port=${ports[3]}

	local key password
	key="$(head -c 32 /dev/urandom | base64)"
	password="$(head -c 18 /dev/urandom | base64)"

	"$loadgen" upstream -listen "127.0.0.1:$upstream_port" 2>"$results/upstream.log" &
	upstream_pid=$!
	wait_for_listener upstream "$upstream_pid" 127.0.0.1 "$upstream_port" 30 ||
		fail_start

	# Caddy's autosave and certificates stay inside the results.
	local state="$results/caddy-state"
	mkdir -p "$state"
	cat >"$results/Caddyfile" <<'EOF'
{
	admin 127.0.0.1:{$BENCH_ADMIN_PORT}
	http_port {$BENCH_HTTP_PORT}
	https_port {$BENCH_HTTPS_PORT}
	default_bind 127.0.0.1
	auto_https off
	persist_config off
}

:{$BENCH_HTTP_PORT} {
	handle /none/* {
		reverse_proxy {$BENCH_UPSTREAM}
	}

	handle /api_key/* {
		api_key {
			key bench {env.BENCH_API_KEY}
		}
		reverse_proxy {$BENCH_UPSTREAM}
	}

	# Without max_failures off, a stream of wrong keys from one address
	# gets 429 after 100 failures instead of 401.
	handle /api_key_open/* {
		api_key {
			key bench {env.BENCH_API_KEY}
			max_failures off
		}
		reverse_proxy {$BENCH_UPSTREAM}
	}

	handle /header_matcher/* {
		@denied not header X-API-KEY {env.BENCH_API_KEY}
		respond @denied 401
		reverse_proxy {$BENCH_UPSTREAM}
	}

	handle /basic_auth/* {
		basic_auth {
			bench {$BENCH_PASSWORD_HASH}
		}
		reverse_proxy {$BENCH_UPSTREAM}
	}
}
EOF

	local password_hash
	password_hash="$("$caddy" hash-password --plaintext "$password")"
	BENCH_ADMIN_PORT=$admin_port BENCH_HTTP_PORT=$http_port BENCH_HTTPS_PORT=$https_port \
		BENCH_UPSTREAM="127.0.0.1:$upstream_port" BENCH_API_KEY="$key" \
		BENCH_PASSWORD_HASH="$password_hash" \
		HOME="$state" XDG_CONFIG_HOME="$state/config" XDG_DATA_HOME="$state/data" \
		"$caddy" run --config "$results/Caddyfile" --adapter caddyfile 2>"$results/caddy.log" &
	caddy_pid=$!
	wait_for_listener caddy "$caddy_pid" 127.0.0.1 "$http_port" 30 || fail_start

	local addr="127.0.0.1:$http_port"
	echo "==> loadgen compare" >&2
	"$loadgen" compare -addr "$addr" -key "$key" -password "$password" \
		-rounds "${LOAD_ROUNDS:-5}" -duration "${LOAD_SEGMENT:-1s}" \
		-connections "${LOAD_CONNECTIONS:-8}" -json "$results/load.json" | tee "$results/load.md"
	echo "==> loadgen flood" >&2
	"$loadgen" flood -addr "$addr" -key "$key" | tee "$results/flood.md"
	echo "==> loadgen timing" >&2
	"$loadgen" timing -addr "$addr" -key "$key" -requests "${TIMING_REQUESTS:-60000}" |
		tee "$results/timing-http.md"
	stop_servers

	{
		echo "## Load on loopback"
		echo
		echo "Caddy $("$caddy" version | cut -d' ' -f1) with this module, $(basename "$caddy")."
		echo
		cat "$results/load.md"
		echo "## Flood"
		echo
		cat "$results/flood.md"
		echo "## Timing of near and far misses, through HTTP"
		echo
		cat "$results/timing-http.md"
	} >>"$summary"
}

{
	echo "# Benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo
	changes=
	if [[ -n "$(git status --porcelain)" ]]; then
		changes=" with uncommitted changes"
	fi
	echo "- commit: $(git rev-parse HEAD)$changes"
	echo "- $(go version)"
	echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
	echo
} >"$summary"

case $what in
micro) run_micro ;;
load) run_load ;;
all)
	run_micro
	run_load
	;;
esac
echo "Summary: $summary" >&2
