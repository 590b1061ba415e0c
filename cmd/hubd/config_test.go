package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/p2plisten"
)

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "hubd.ini")
	err := os.WriteFile(ini, []byte("listen = 127.0.0.1:1111\nadmin = 127.0.0.1:2222\n[limits]\nlimits.max-sessions = 7\nlimits.pong-timeout = 3s\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("M2MHUB_ADMIN", "127.0.0.1:3333")
	t.Setenv("M2MHUB_NATS_LISTEN", "127.0.0.1:4444")
	cfg, err := loadConfig([]string{"--config", ini, "--datadir", dir, "--limits.pong-timeout", "4s"})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.Listen != "127.0.0.1:1111":
		t.Errorf("file should set listen, got %s", cfg.Listen)
	case cfg.AdminAddr != "127.0.0.1:2222":
		t.Errorf("the file should beat the environment, got %s", cfg.AdminAddr)
	case cfg.NATSListen != "127.0.0.1:4444":
		t.Errorf("the environment should beat the default, got %s", cfg.NATSListen)
	case cfg.Limits.MaxSessions != 7:
		t.Errorf("file should set max sessions, got %d", cfg.Limits.MaxSessions)
	case cfg.Limits.PongTimeout != 4*time.Second:
		t.Errorf("flag should beat the file, got %v", cfg.Limits.PongTimeout)
	case cfg.Limits.PingInterval != 30*time.Second:
		t.Errorf("default ping interval, got %v", cfg.Limits.PingInterval)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	for name, args := range map[string][]string{
		"UnknownFlag":      {"--bogus"},
		"MessageSize":      {"--limits.max-message-size", "70000"},
		"ChildOnlyRegtest": {"--btcd.network", "mainnet"},
		"StrayArgument":    {"extra"},
		"NoAdminConns":     {"--http.max-conns", "0"},
		"NoMetricsConns":   {"--http.metrics-max-conns", "0"},
		"NoIdleTimeout":    {"--http.idle-timeout", "0s"},
		"NoHeaderTimeout":  {"--http.read-header-timeout", "0s"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadConfig(args); err == nil {
				t.Fatalf("%v accepted", args)
			}
		})
	}
}

// TestLimitDefaultsAgree checks that each p2p listener and session limit has one
// default: hubd's flag default (what --help shows) equals the hub's own
// (hub.Default…), and both docs/protocol.md §1.7 and docs/operations.md's
// configuration reference state it. The per-IP limit once read 64 in one
// and 1000 in the others.
func TestLimitDefaultsAgree(t *testing.T) {
	cfg, err := loadConfig([]string{"--datadir", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	protocol := readDoc(t, "protocol.md")
	operations := readDoc(t, "operations.md")
	for _, tc := range []struct {
		flag, field string // operations.md flag, protocol.md §1.7 field
		got, want   any    // hubd's flag default, hub's default
	}{
		{"handshake-timeout", "HandshakeTimeout", l.HandshakeTimeout, session.DefaultHandshakeTimeout},
		{"act-timeout", "ActTimeout", l.ActTimeout, p2plisten.DefaultActTimeout},
		{"max-handshakes", "MaxHandshakes", l.MaxHandshakes, p2plisten.DefaultMaxHandshakes},
		{"max-handshakes-per-source", "MaxHandshakesPerSource", l.MaxHandshakesPerSource, p2plisten.DefaultMaxHandshakesPerSource},
		{"max-sessions", "MaxSessions", l.MaxSessions, session.DefaultMaxSessions},
		{"max-sessions-per-ip", "MaxSessionsPerIP", l.MaxSessionsPerIP, session.DefaultMaxSessionsPerIP},
		{"max-message-size", "MaxMessageSize", l.MaxMessageSize, session.DefaultMaxMessageSize},
		{"send-queue", "SendQueue", l.SendQueue, session.DefaultSendQueue},
		{"ping-interval", "PingInterval", l.PingInterval, session.DefaultPingInterval},
		{"pong-timeout", "PongTimeout", l.PongTimeout, session.DefaultPongTimeout},
	} {
		t.Run(tc.field, func(t *testing.T) {
			want := fmt.Sprint(tc.want)
			if got := fmt.Sprint(tc.got); got != want {
				t.Errorf("hubd --limits.%s defaults to %s, hub.Default%s is %s", tc.flag, got, tc.field, want)
			}
			if got := docDefault(t, protocol, "| `"+tc.field+"` |"); got != want {
				t.Errorf("docs/protocol.md gives %s a default of %s, the code %s", tc.field, got, want)
			}
			if got := docDefault(t, operations, "| `--limits."+tc.flag+"` |"); got != want {
				t.Errorf("docs/operations.md gives --limits.%s a default of %s, the code %s", tc.flag, got, want)
			}
		})
	}
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docDefault finds the table row starting with prefix and returns its
// default cell normalised as Go prints the value: "10,000" → "10000",
// "10 s" → "10s", "64 messages" → "64".
func docDefault(t *testing.T, doc, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		cells := strings.Split(line, "|")
		// protocol.md: | name | default | meaning |; operations.md:
		// | flag | environment | default | meaning |.
		cell := cells[2]
		if strings.HasPrefix(prefix, "| `--") {
			cell = cells[3]
		}
		f := strings.Fields(strings.ReplaceAll(cell, ",", ""))
		if len(f) == 0 {
			return ""
		}
		v := f[0]
		if len(f) > 1 && (f[1] == "s" || f[1] == "ms") {
			v += f[1]
		}
		if d, err := time.ParseDuration(v); err == nil && strings.TrimRight(v, "0123456789") != "" {
			return d.String()
		}
		return v
	}
	t.Fatalf("no table row %q", prefix)
	return ""
}
