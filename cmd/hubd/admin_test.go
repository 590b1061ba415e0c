package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubtest"
)

// healthzOn makes one keep-alive GET /healthz on c and reads the answer,
// leaving c idle.
func healthzOn(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("healthz answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestAdminConnectionFlood floods a real hubd's admin port with idle
// keep-alive connections well past its cap, and with connections that send
// nothing, and checks that hubctl (an authenticated request on a fresh
// connection) and a device dial are still served, and that hubd closes
// idle connections after the configured timeouts.
func TestAdminConnectionFlood(t *testing.T) {
	const capConns = 32
	dir := t.TempDir()
	p := startHubd(t, dir, "--http.max-conns", "32", "--http.idle-timeout", "3s", "--http.read-header-timeout", "2s")
	key, _ := enrol(t, dir, "payer")

	// Idle keep-alive connections, three times the cap: each is served,
	// the ones idle longest being closed to make room.
	var idle []net.Conn
	for range 3 * capConns {
		c, err := net.Dial("tcp", p.rt.AdminAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		healthzOn(t, c, bufio.NewReader(c))
		idle = append(idle, c)
	}
	// Every one was served, so at most the cap are still open: the
	// others, idle longest when a new one came, were closed.
	hubtest.WaitServerClosed(t, idle, len(idle)-capConns)

	mustHubctl(t, dir, "device", "list")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := dial(ctx, p, t, key)
	if err != nil {
		t.Fatalf("device dial during the admin flood: %v", err)
	}
	s.Close()

	// The rest are closed by the idle timeout.
	hubtest.WaitServerClosed(t, idle, len(idle))

	// Connections that send nothing fill every slot and cannot be
	// evicted; they are closed by the header timeout, and a fresh
	// authenticated request is served then.
	var silent []net.Conn
	for range capConns + 8 {
		c, err := net.Dial("tcp", p.rt.AdminAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	mustHubctl(t, dir, "info")
	hubtest.WaitServerClosed(t, silent, len(silent))

	// The metrics listener has its own cap (--http.metrics-max-conns):
	// the admin flood took none of its slots, and its own flood of
	// silent connections is closed the same way.
	for range 32 + 4 {
		c, err := net.Dial("tcp", p.rt.MetricsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	resp, err := http.Get("http://" + p.rt.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics during its flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %s", resp.Status)
	}
}

// TestUnreadableRecordRepair plants, in a stopped hubd's store, the
// record an older hubd wrote for POST /v1/providers with "{}" (an all-zero
// key), restarts hubd, and checks the registry still lists, the record is
// named, answers 409, and is removed with hubctl device remove --force. The
// same request to the new hubd is refused with 400.
func TestUnreadableRecordRepair(t *testing.T) {
	dir := t.TempDir()
	p := startHubd(t, dir)
	_, goodID := enrol(t, dir, "provider")
	token, err := datadir.Dir(dir).ReadToken(datadir.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	_, err = httpapi.NewClient(p.rt.AdminAddr, token).AddProvider(context.Background(), httpapi.AddProviderRequest{})
	var ae *httpapi.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("POST /v1/providers {}: %v, want 400", err)
	}
	p.stop(t)

	var zero hub.PubKey
	bad := hub.Device{ID: hub.DeviceID(zero), Key: zero, Roles: []hub.Role{hub.RoleProvider},
		Status: hub.StatusActive, EnrolledAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}
	doc, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(datadir.Dir(dir).Path(datadir.StoreFile), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("keyindex")).Put(zero[:], []byte(bad.ID)); err != nil {
			return err
		}
		return tx.Bucket([]byte("devices")).Put([]byte(bad.ID), doc)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	startHubd(t, dir)
	if out := mustHubctl(t, dir, "device", "list"); !strings.Contains(out, goodID) || strings.Contains(out, bad.ID) {
		t.Fatalf("device list:\n%s\nwant %s and not %s", out, goodID, bad.ID)
	}
	mustHubctl(t, dir, "provider", "list")
	if out, code := hubctl(t, dir, "device", "show", bad.ID); code != exitConflictCode {
		t.Fatalf("device show of the unreadable record: exit %d %s, want %d", code, out, exitConflictCode)
	}
	if out := mustHubctl(t, dir, "device", "unreadable"); !strings.Contains(out, bad.ID) {
		t.Fatalf("device unreadable:\n%s\nwant %s", out, bad.ID)
	}
	if out, code := hubctl(t, dir, "device", "remove", bad.ID); code != 2 {
		t.Fatalf("device remove without --force: exit %d %s, want 2", code, out)
	}
	mustHubctl(t, dir, "device", "remove", "--force", "--reason", "enrolled without a key", bad.ID)
	if out, code := hubctl(t, dir, "device", "show", bad.ID); code != 3 {
		t.Fatalf("device show after removal: exit %d %s, want 3", code, out)
	}
	if out := mustHubctl(t, dir, "device", "unreadable"); strings.Contains(out, bad.ID) {
		t.Fatalf("device unreadable after removal:\n%s", out)
	}
	mustHubctl(t, dir, "audit", "verify")
}

// exitConflictCode is hubctl's exit code for a 409 answer.
const exitConflictCode = 9
