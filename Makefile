# The two commands a newcomer needs: `make demo` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
export GOTOOLCHAIN := local

.PHONY: demo test build bench fuzz loadtest soak chaos chaos-deps clean

# build puts hubd, hubctl, demo and btcd (the go.mod tool, so hubd finds it
# next to itself) in ./bin.
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...
	$(GO) build -o $(BIN)/btcd github.com/btcsuite/btcd

# demo starts hubd on the embedded defaults in a throw-away data dir and runs
# the use cases end to end through the client libraries (the EV session
# through the OCPP gateway), then settles one epoch on regtest
# (./bin/demo --keep leaves hubd running).
demo: build
	$(BIN)/demo

# test runs the whole suite. It needs redis-server on PATH (the Redis store
# tests start their own) and chromium (the dashboard test): .ci/deps
# installs them when run as root and otherwise stops saying how to.
test:
	@.ci/deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# bench runs the benchmarks; see README "Performance".
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

# fuzz runs every fuzz target for FUZZTIME each (default 30s); longer runs
# belong here, not in `make test`, which replays the committed corpora only.
# It ends with a table of executions per target (from go test's last
# "execs:" line); a target far below its neighbours is doing something per
# input that it should not (disk, a large allocation, minimising). A run
# that fails only with "context deadline exceeded" and writes no failing
# input is Go 1.26's coordinator race at the end of -fuzztime
# (go.dev/issue/75804, fixed in 1.27), not a finding.
# FUZZMINIMIZETIME bounds the minimising of each new interesting input
# (go test's default is 60 s): no executions count meanwhile, and in the
# packages whose test binaries link the hub, nats-server and lnd every
# execution copies a coverage map of 60-140 kB, so minimising a long input
# stalled a 30 s run.
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 3s
FUZZPKGS ?= ./...
fuzz:
	@set -e; log=$$(mktemp -d); trap 'rm -rf $$log' EXIT; n=0; failed=0; \
	for pkg in $$($(GO) list $(FUZZPKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    n=$$((n+1)); echo "== $$pkg $$t"; \
	    corpus=$$($(GO) list -f '{{.Dir}}' $$pkg)/testdata/fuzz/$$t; before=$$(ls $$corpus 2>/dev/null | wc -l); \
	    st=ok; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg > $$log/$$n.out 2>&1 || st=FAIL; \
	    if [ $$st = FAIL ] && [ $$(ls $$corpus 2>/dev/null | wc -l) = $$before ] && grep -q '^    context deadline exceeded$$' $$log/$$n.out; then \
	      st="ok (deadline race, go.dev/issue/75804)"; fi; \
	    [ "$$st" = FAIL ] && failed=1; \
	    cat $$log/$$n.out; echo "$${pkg#github.com/m2mhub/m2mhub/} $$t" > $$log/$$n.name; echo $$st > $$log/$$n.st; \
	  done; \
	done; \
	echo; printf '%-48s %12s %10s %s\n' target execs execs/s result; \
	for i in $$(seq 1 $$n); do \
	  awk -v name="$$(cat $$log/$$i.name)" -v st="$$(cat $$log/$$i.st)" ' \
	    /^fuzz: elapsed: .*execs: / { e=$$3; sub(/s,$$/, "", e); x=$$5; \
	      if (e ~ /m/) { split(e, p, "m"); e=p[1]*60+p[2] } last=x; secs=e } \
	    END { printf "%-48s %12d %10d %s\n", name, last, (secs>0 ? last/secs : 0), st }' $$log/$$i.out; \
	done; exit $$failed

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

# chaos runs devices and providers under load against a real hubd on an
# external Redis (appendfsync always) and nats-server while hubd, its btcd,
# Redis and NATS are killed -9 at random for CHAOS_DURATION, then compares
# the devices' stores, the hub's ledger and the chain; it ends with the line
# "faults N, acknowledged payments lost 0, doubled 0, events lost 0" and
# fails if a count is not zero (cmd/chaos says what each means).
CHAOS_DURATION ?= 10m
CHAOS_ARGS ?=
chaos: build
	@.ci/deps
	$(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2
	$(BIN)/chaos -duration $(CHAOS_DURATION) $(CHAOS_ARGS)

# chaos-deps holds each dependency outage (external NATS, Redis, btcd paused;
# NATS and Redis killed -9) for 30 s instead of make test's 2 s: without load
# (the health answers, cmd/hubd) and under payment and metering load
# (nothing acknowledged lost, internal/chaos).
chaos-deps:
	@.ci/deps
	$(GO) test -count=1 -timeout 30m -run 'TestDependencyFaults|TestBtcdFaults' ./cmd/hubd -v -deppause 30s
	$(GO) test -count=1 -timeout 30m -run TestOutagesUnderLoad ./internal/chaos -v -outage 30s

clean:
	rm -rf $(BIN)
