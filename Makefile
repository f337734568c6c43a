# Build, demo and test commands. Each recipe is a script in scripts/.

# The module's own sources; tests do not go into the binary.
PLUGIN_SOURCES := go.mod go.sum $(filter-out %_test.go,$(wildcard *.go))

.PHONY: run test bench fuzz clean

# run: build Caddy with this module and run Caddyfile.example in front of a
# stand-in scanner on http://localhost:8080
run: bin/caddy bin/scanner
	./scripts/demo.sh

# test: gofmt, go vet, staticcheck and every test, including the e2e tests,
# the root package under the race detector and 10 s of each fuzz target
test:
	./scripts/test.sh

# bench: micro-benchmarks, timing tests and loopback load tests with the
# Caddy from bin/caddy, about 5 minutes; see BENCHMARKS.md. The results go
# to bin/bench/results-*/summary.md.
bench: bin/caddy
	CADDY_BINARY=bin/caddy ./scripts/bench.sh

# fuzz: each fuzz target for FUZZTIME (default 10m30s, about 55 minutes
# for all five), as BENCHMARKS.md records
FUZZTIME ?= 10m30s
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/bench-fuzz.sh

# clean: remove bin/: the built binaries, installed tools and benchmark
# results
clean:
	rm -rf bin

# Rebuilt only when missing or older than the module's sources.
bin/caddy: $(PLUGIN_SOURCES) scripts/build-caddy.sh scripts/tools.sh
	./scripts/build-caddy.sh $@

bin/scanner: demo/scanner/main.go go.mod
	go build -o $@ ./demo/scanner
