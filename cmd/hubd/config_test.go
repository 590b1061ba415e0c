package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
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
		"NoDeviceConns":    {"--limits.max-conns", "0"},
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
