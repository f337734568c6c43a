#!/usr/bin/env bash
# Builds Caddy with this checkout of the api_key module.
#
# Usage: scripts/build-caddy.sh [OUTPUT]   (default: bin/caddy)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

output="${1:-bin/caddy}"
mkdir -p "$(dirname "$output")"
ensure_xcaddy

echo "Building Caddy $CADDY_VERSION with github.com/caddy-apikey/apikey=$PWD into $output" >&2
GOPROXY="$(local_goproxy)" xcaddy build "$CADDY_VERSION" \
	--output "$output" \
	--with "github.com/caddy-apikey/apikey=$PWD"

