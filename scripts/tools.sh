# Functions that find or install the tools the other scripts need.
# Source this file; it expects to run from the repository root.

# Versions of Caddy and of the tools, pinned so that every machine builds
# and checks the same way.
CADDY_VERSION=v2.11.9
XCADDY_VERSION=v0.4.5
STATICCHECK_VERSION=v0.8.2

# Tools that are installed here go to bin/tools, inside the checkout.
TOOLS_BIN="$PWD/bin/tools"
export PATH="$TOOLS_BIN:$PATH"

# ensure_xcaddy installs xcaddy into bin/tools unless one is on PATH.
ensure_xcaddy() {
	if command -v xcaddy >/dev/null 2>&1; then
		return
	fi
	echo "Installing xcaddy $XCADDY_VERSION into $TOOLS_BIN" >&2
	GOBIN="$TOOLS_BIN" go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
}

# ensure_staticcheck installs the pinned staticcheck into bin/tools; the
# Go build cache makes a repeated install quick.
ensure_staticcheck() {
	GOBIN="$TOOLS_BIN" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
}

# local_goproxy prints a GOPROXY value for building with a local replace.
# The Go module proxy may reject a never-published module path with an
# error other than 404, and the build then fails before the replace applies.
# With "|off" appended, such an error falls through to "off", after which
# go uses the local replacement (observed with Go 1.26.8 and xcaddy v0.4.5).
local_goproxy() {
	local first
	first="$(go env GOPROXY | cut -d, -f1)"
	echo "$first|off"
}

# port_open HOST PORT reports whether a TCP connection to HOST:PORT succeeds.
port_open() {
	(: <"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for_listener NAME PID HOST PORT SECONDS polls until a TCP connection
# to HOST:PORT succeeds. It prints why and returns 1 if the process PID,
# called NAME in the message, exits first or SECONDS pass.
wait_for_listener() {
	local name=$1 pid=$2 host=$3 port=$4 seconds=$5 attempt
	for ((attempt = 0; attempt < seconds * 10; attempt++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$name exited before listening on $host:$port" >&2
			return 1
		fi
		if port_open "$host" "$port"; then
			return 0
		fi
		sleep 0.1
	done
	echo "$name did not listen on $host:$port within $seconds s" >&2
	return 1
}
