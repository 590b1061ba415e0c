# The two commands a newcomer needs: `make demo` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
export GOTOOLCHAIN := local

.PHONY: demo test build bench fuzz loadtest soak chaos-deps clean

# build puts hubd, hubctl, demo and btcd (the go.mod tool, so hubd finds it
# next to itself) in ./bin.
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...
	$(GO) build -o $(BIN)/btcd github.com/btcsuite/btcd

# demo starts hubd on the embedded defaults in a throw-away data dir and runs
# the four use cases end to end through the client libraries, then settles
# one epoch on regtest (./bin/demo --keep leaves hubd running).
demo: build
	$(BIN)/demo

# test runs the whole suite. It needs redis-server on PATH (the Redis store
# tests start their own) and chromium (the dashboard test); .ci/run installs
# both.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# bench runs the benchmarks; see README "Performance".
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

# fuzz runs every fuzz target for FUZZTIME each (default 30s); longer runs
# belong here, not in `make test`, which replays the committed corpora only.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# loadtest drives a real hubd child with simulated fleets and writes a report
# with charts to ./loadtest-report (see README "Performance").
LOADTEST_ARGS ?= -devices 1000 -duration 60s
loadtest: build
	$(BIN)/loadtest $(LOADTEST_ARGS) -out $(CURDIR)/loadtest-report

# soak runs the long trials kept out of `make test`: 500 kill -9 trials and a
# longer channel state machine.
soak:
	$(GO) test -count=1 -timeout 60m -run TestKill9DuringPayments ./cmd/hubd -killtrials 500
	$(GO) test -count=1 -timeout 30m -run TestChannelStateMachine ./clients/go -rapid.checks=300

# chaos-deps holds each dependency outage (external NATS, Redis, btcd paused;
# NATS and Redis killed -9) for 30 s instead of make test's 2 s.
chaos-deps:
	$(GO) test -count=1 -timeout 30m -run 'TestDependencyFaults|TestBtcdFaults' ./cmd/hubd -v -deppause 30s

clean:
	rm -rf $(BIN)
