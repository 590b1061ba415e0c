package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
)

// healthOf probes /healthz and returns the status, the answer and how long
// it took; a probe not answered within 5 s fails the test.
func healthOf(t *testing.T, addr string) (int, map[string]string, time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	defer resp.Body.Close()
	took := time.Since(start)
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, took
}

// btcdPid reads the embedded btcd's pid file.
func btcdPid(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, datadir.BtcdDir, "btcd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// With the embedded btcd stopped (SIGSTOP), /healthz answers at once that
// btcd is down and the rest up, and `settle plan` fails with 503
// chain_unavailable instead of hanging; once continued, both recover. A
// btcd killed with SIGKILL is restarted by hubd on the same chain and the
// chain functions come back without restarting hubd.
func TestBtcdFaults(t *testing.T) {
	dir := t.TempDir()
	p := startHubd(t, dir)
	token, err := datadir.Dir(dir).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := httpapi.NewClient(p.rt.AdminAddr, token)
	plan := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, err := admin.SettlementPlan(ctx)
		return err
	}
	if status, body, _ := healthOf(t, p.rt.AdminAddr); status != http.StatusOK {
		t.Fatalf("/healthz before the faults: %d %v", status, body)
	}
	if err := plan(); err != nil {
		t.Fatalf("settle plan before the faults: %v", err)
	}

	t.Run("Stopped", func(t *testing.T) {
		pid := btcdPid(t, dir)
		pause(t, pid)
		continued := false
		defer func() {
			if !continued {
				syscall.Kill(pid, syscall.SIGCONT)
			}
		}()
		holdDown(t, p.rt.AdminAddr, "btcd")
		var apiErr *httpapi.APIError
		if err := plan(); !errors.As(err, &apiErr) || apiErr.Code != "chain_unavailable" {
			t.Fatalf("settle plan with btcd stopped: %v, want 503 chain_unavailable", err)
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		continued = true
		waitDep(t, p.rt.AdminAddr, "btcd", "ok")
		if err := plan(); err != nil {
			t.Fatalf("settle plan after SIGCONT: %v", err)
		}
	})

	t.Run("Killed", func(t *testing.T) {
		pid := btcdPid(t, dir)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// hubd restarts btcd by itself, so the outage lasts as long as
		// the restart, not depPause.
		waitDep(t, p.rt.AdminAddr, "btcd", "down")
		body := waitDep(t, p.rt.AdminAddr, "btcd", "ok")
		if body["store"] != "ok" || body["nats"] != "ok" {
			t.Fatalf("/healthz after the restart: %v", body)
		}
		if got := btcdPid(t, dir); got == pid {
			t.Fatalf("btcd pid %d unchanged: not restarted", got)
		}
		if err := plan(); err != nil {
			t.Fatalf("settle plan after the restart: %v", err)
		}
		select {
		case <-p.Done():
			t.Fatal("hubd exited")
		default:
		}
	})
}
