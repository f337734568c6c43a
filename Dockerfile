# Caddy with the api_key module, built on the caddy:builder pattern: xcaddy
# builds the binary in the builder image, and the runtime image gets only
# the binary.
#
#   docker build -t caddy-apikey .
#   docker run -e MAILSERVER_API_KEY -p 80:80 -p 443:443 \
#       -v "$PWD/Caddyfile:/etc/caddy/Caddyfile:ro" caddy-apikey
#
# Pass keys through the environment or a mounted file, never as build
# arguments, which stay in the image's history.

FROM caddy:2.11-builder AS builder

# The Caddy version this module is built and tested against.
ARG CADDY_VERSION=v2.11.9

# Only the module's root package goes into the binary.
COPY go.mod go.sum *.go /src/

# go.mod requires Go 1.26. The official golang images, on which the
# builder image is based, set GOTOOLCHAIN=local; auto lets go download the
# required toolchain when the image's Go is older.
ENV GOTOOLCHAIN=auto

RUN xcaddy build "${CADDY_VERSION}" \
	--output /usr/bin/caddy \
	--with github.com/caddy-apikey/apikey=/src

FROM caddy:2.11

COPY --from=builder /usr/bin/caddy /usr/bin/caddy
