package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOCPPGatewayDocs keeps docs/ev-charging.md's "Connecting chargers"
// true to the gateway: its ocppgw command parses with the gateway's own
// flags, names a tariff file that exists with the rate and time zone the
// page publishes it with, and its station file loads.
func TestOCPPGatewayDocs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "ev-charging.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var cmd string
	var publishes []string // the page publishes other contracts too
	var stations []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "    ocppgw "):
			for ; strings.HasSuffix(strings.TrimSpace(lines[i]), `\`); i++ {
				cmd += strings.TrimSuffix(strings.TrimSpace(lines[i]), `\`) + " "
			}
			cmd += strings.TrimSpace(lines[i])
		case strings.HasPrefix(l, "hubctl contract publish "):
			publishes = append(publishes, l)
		case l == "```json":
			for i++; i < len(lines) && lines[i] != "```"; i++ {
				stations = append(stations, lines[i])
			}
		}
	}
	if cmd == "" || len(publishes) == 0 || len(stations) == 0 {
		t.Fatalf("docs/ev-charging.md: ocppgw command %q, publish commands %q, station file %q", cmd, publishes, stations)
	}
	var o options
	fs := newFlags(&o, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	args := strings.Fields(cmd)[1:]
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		t.Fatalf("the documented command does not parse: %v (left %v)", err, fs.Args())
	}
	if _, err := os.Stat(filepath.Join("..", "..", o.tariff)); err != nil {
		t.Errorf("-tariff: %v", err)
	}
	// The gateway's tariff is the one published with its file.
	var publish string
	for _, p := range publishes {
		if strings.Contains(p+" ", " "+o.tariff+" ") {
			publish = p
		}
	}
	if publish == "" {
		t.Errorf("no command of %q publishes the gateway's tariff %s", publishes, o.tariff)
	}
	for _, want := range []string{"--rate-msat-per-unit " + o.rate + " ", "--time-zone " + o.timeZone + " "} {
		if !strings.Contains(publish+" ", want) {
			t.Errorf("the gateway's tariff flags (%q) are not those published with %q", want, publish)
		}
	}
	l, err := parseConfig([]byte(strings.Join(stations, "\n")))
	if err != nil {
		t.Fatalf("the documented station file: %v", err)
	}
	if len(l.passwords) != 1 || len(l.meterKeys) != 1 || len(l.tokens) != 1 {
		t.Fatalf("the documented station file loads as %+v", l)
	}
}
