#!/usr/bin/env bash
# Runs the gateway from Caddyfile.example in front of the stand-in scanner
# on this machine: Caddy serves port 8080 on every interface and proxies
# to the scanner on 127.0.0.1:8001. Ctrl-C stops both.
#
# Usage: make run   (builds bin/caddy and bin/scanner, then runs this)
#
# MAILSERVER_API_KEY is the key Caddy accepts. When it is unset, this script
# generates a random demo key and prints it. When it is set but empty, Caddy
# refuses to start, as it would in production.
#
# DEMO_GATEWAY_PORT (default 8080), DEMO_SCANNER_PORT (default 8001) and
# DEMO_ADMIN_PORT (default 2019) move the demo off ports that are in use.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

caddy=bin/caddy
scanner=bin/scanner
gateway_port=${DEMO_GATEWAY_PORT:-8080}
scanner_port=${DEMO_SCANNER_PORT:-8001}
admin_port=${DEMO_ADMIN_PORT:-2019}
scanner_address=127.0.0.1:$scanner_port
gateway_address=http://localhost:$gateway_port
start_timeout_seconds=30

for binary in "$caddy" "$scanner"; do
	if [[ ! -x $binary ]]; then
		echo "$binary is missing; run 'make run', which builds it first" >&2
		exit 1
	fi
done

key_generated=false
if [[ -z ${MAILSERVER_API_KEY+set} ]]; then
	MAILSERVER_API_KEY="$(openssl rand -base64 32 2>/dev/null || head -c 32 /dev/urandom | base64)"
	key_generated=true
fi
export MAILSERVER_API_KEY
export GATEWAY_ADDRESS="$gateway_address"
export SCANNER_UPSTREAM="$scanner_address"
export CADDY_ADMIN="localhost:$admin_port"

# Keep the demo's autosaved config and certificates out of the user's own
# Caddy directories.
state_dir="$(mktemp -d)"
export XDG_CONFIG_HOME="$state_dir/config" XDG_DATA_HOME="$state_dir/data"

scanner_pid=
caddy_pid=
stop_all() {
	local pid
	for pid in $caddy_pid $scanner_pid; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $caddy_pid $scanner_pid; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$state_dir"
}
trap stop_all EXIT
# Ctrl-C is the way to stop the demo, so it ends with success.
trap 'exit 0' INT
trap 'exit 143' TERM

for port in "$gateway_port" "$scanner_port" "$admin_port"; do
	if port_open 127.0.0.1 "$port" || port_open localhost "$port"; then
		echo "Port $port is already in use. Stop what listens there, or move the demo" >&2
		echo "with DEMO_GATEWAY_PORT, DEMO_SCANNER_PORT or DEMO_ADMIN_PORT." >&2
		exit 1
	fi
done

"$scanner" -listen "$scanner_address" &
scanner_pid=$!
wait_for_listener scanner "$scanner_pid" 127.0.0.1 "$scanner_port" \
	"$start_timeout_seconds" || exit 1

"$caddy" run --config Caddyfile.example --adapter caddyfile &
caddy_pid=$!
wait_for_listener caddy "$caddy_pid" localhost "$gateway_port" \
	"$start_timeout_seconds" || exit 1

url="$gateway_address/scanner/scan/"
{
	echo
	echo "The gateway is running on $gateway_address in front of the scanner on $scanner_address."
	if [[ $key_generated == true ]]; then
		echo "MAILSERVER_API_KEY was unset, so this run uses a random demo key. In another shell:"
		echo
		echo "  export MAILSERVER_API_KEY='$MAILSERVER_API_KEY'"
	else
		echo "Caddy uses MAILSERVER_API_KEY from your environment. In another shell that has it:"
	fi
	echo
	echo "  # a valid key: 200 and the scanner's JSON verdict"
	echo "  curl -i -H \"X-API-KEY: \$MAILSERVER_API_KEY\" --data-binary 'hello' $url"
	echo
	echo "  # no key: 401, and the scanner sees nothing"
	echo "  curl -i --data-binary 'hello' $url"
	echo
	echo "  # a wrong key: 401"
	echo "  curl -i -H 'X-API-KEY: not-the-key-0123456789' --data-binary 'hello' $url"
	echo
	echo "Press Ctrl-C to stop Caddy and the scanner."
	echo
} >&2

# wait returns when Caddy exits; the EXIT trap then stops the scanner.
status=0
wait "$caddy_pid" || status=$?
caddy_pid=
exit "$status"
