package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/internal/authmsg"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/internal/hubproc"
	bolt "go.etcd.io/bbolt"
)

// binDir holds hubd, hubctl and btcd built once for the whole package, so
// every test drives the real binaries as an operator would.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hubd-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, pkg := range []string{"./", "../hubctl", "../ocppgw", "github.com/btcsuite/btcd"} {
		cmd := exec.Command("go", "build", "-o", binDir+"/", pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubProc is a hubd child process with its log kept for failing tests.
type hubProc struct {
	*hubproc.Proc
	rt datadir.Runtime
}

// startHubd starts hubd on dir with free ports and short keepalives, and
// stops it when the test ends.
func startHubd(t *testing.T, dir string, extra ...string) *hubProc {
	t.Helper()
	logs := &syncBuffer{}
	p, err := hubproc.Start(context.Background(), hubproc.Config{
		Binary:  filepath.Join(binDir, "hubd"),
		DataDir: dir,
		Args:    append([]string{"--limits.ping-interval", "1s", "--limits.pong-timeout", "2s"}, extra...),
		Output:  logs,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
		if t.Failed() {
			t.Logf("hubd log:\n%s", logs.String())
		}
	})
	return &hubProc{Proc: p, rt: p.Runtime()}
}

// syncBuffer is a bytes.Buffer safe for hubd's two output streams.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (p *hubProc) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func (p *hubProc) hubKey(t *testing.T) *btcec.PublicKey {
	t.Helper()
	k, err := p.HubKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hubctl runs the real hubctl against dir and returns stdout and exit code.
func hubctl(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "hubctl"), append([]string{"--datadir", dir}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String() + errOut.String(), ee.ExitCode()
	}
	t.Fatalf("hubctl %v: %v", args, err)
	return "", -1
}

func mustHubctl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, code := hubctl(t, dir, args...)
	if code != 0 {
		t.Fatalf("hubctl %v: exit %d: %s", args, code, out)
	}
	return out
}

// enrol makes a key and registers it with hubctl, returning the key and id.
func enrol(t *testing.T, dir string, roles ...string) (*btcec.PrivateKey, string) {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--json", "device", "add", "--pubkey", hex.EncodeToString(k.PubKey().SerializeCompressed())}
	for _, r := range roles {
		args = append(args, "--role", r)
	}
	var d struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(mustHubctl(t, dir, args...)), &d); err != nil || d.ID == "" {
		t.Fatalf("device add answer: %+v %v", d, err)
	}
	return k, d.ID
}

func dial(ctx context.Context, p *hubProc, t *testing.T, key *btcec.PrivateKey, opts ...m2mclient.Option) (*m2mclient.Session, error) {
	opts = append([]m2mclient.Option{m2mclient.WithBackoff(50*time.Millisecond, 200*time.Millisecond)}, opts...)
	return m2mclient.Dial(ctx, p.rt.P2PAddr, p.hubKey(t), key, opts...)
}

func refusalCode(err error) string {
	var re *m2mclient.RefusedError
	if errors.As(err, &re) {
		return string(re.Code)
	}
	return ""
}

// TestDevicesAuthenticate drives the registry through hubctl and the session
// server through the Go client, against a real hubd with its embedded NATS,
// store and btcd.
func TestDevicesAuthenticate(t *testing.T) {
	dir := t.TempDir()
	p := startHubd(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	key, id := enrol(t, dir, "payer")

	t.Run("OK", func(t *testing.T) {
		s, err := dial(ctx, p, t, key)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// Several 1 s ping rounds pass and the session stays up.
		time.Sleep(3500 * time.Millisecond)
		if !s.Connected() {
			t.Fatalf("session dropped: %v", s.Err())
		}
	})

	t.Run("ErrUnknownKey", func(t *testing.T) {
		stranger, _ := btcec.NewPrivateKey()
		_, err := dial(ctx, p, t, stranger)
		if got := refusalCode(err); got != "unknown-key" {
			t.Fatalf("refusal = %q (%v), want unknown-key", got, err)
		}
	})

	t.Run("RotateThenErrRotatedOut", func(t *testing.T) {
		newKey, _ := btcec.NewPrivateKey()
		sig, err := authmsg.SignRotation(key, id, newKey.PubKey())
		if err != nil {
			t.Fatal(err)
		}
		live, err := dial(ctx, p, t, key)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		mustHubctl(t, dir, "device", "rotate", id,
			"--new-pubkey", hex.EncodeToString(newKey.PubKey().SerializeCompressed()),
			"--sig", hex.EncodeToString(sig))
		waitRefused(t, live, "rotated-out")

		_, err = dial(ctx, p, t, key)
		if got := refusalCode(err); got != "rotated-out" {
			t.Fatalf("old key refusal = %q (%v), want rotated-out", got, err)
		}
		s, err := dial(ctx, p, t, newKey)
		if err != nil {
			t.Fatalf("new key: %v", err)
		}
		s.Close()
		key = newKey
	})

	t.Run("RotateWithForgedSignatureRefused", func(t *testing.T) {
		newKey, _ := btcec.NewPrivateKey()
		forger, _ := btcec.NewPrivateKey()
		sig, _ := authmsg.SignRotation(forger, id, newKey.PubKey())
		out, code := hubctl(t, dir, "device", "rotate", id,
			"--new-pubkey", hex.EncodeToString(newKey.PubKey().SerializeCompressed()),
			"--sig", hex.EncodeToString(sig))
		if code == 0 || !strings.Contains(out, "signature") {
			t.Fatalf("forged rotation accepted: exit %d %s", code, out)
		}
	})

	t.Run("RevokeDropsSessionAtOnce", func(t *testing.T) {
		s, err := dial(ctx, p, t, key)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		start := time.Now()
		mustHubctl(t, dir, "device", "revoke", id, "--reason", "stolen")
		waitRefused(t, s, "revoked")
		if d := time.Since(start); d > time.Second+500*time.Millisecond {
			// hubctl's own start-up is inside this window, so allow it.
			t.Fatalf("revoked session lived %v", d)
		}
		_, err = dial(ctx, p, t, key)
		if got := refusalCode(err); got != "revoked" {
			t.Fatalf("revoked key refusal = %q (%v)", got, err)
		}
	})

	t.Run("EnrolWithToken", func(t *testing.T) {
		tok := mustHubctl(t, dir, "--json", "token", "create", "--role", "provider", "--kind", "charger", "--ttl", "1h")
		dev, _ := btcec.NewPrivateKey()
		s, err := dial(ctx, p, t, dev, m2mclient.WithEnrolToken([]byte(strings.TrimSpace(tok))))
		if err != nil {
			t.Fatalf("token enrolment: %v", err)
		}
		s.Close()
		if out := mustHubctl(t, dir, "device", "list"); !strings.Contains(out, "charger") {
			t.Fatalf("token-enrolled device not listed:\n%s", out)
		}
		// A token is single-use.
		other, _ := btcec.NewPrivateKey()
		_, err = dial(ctx, p, t, other, m2mclient.WithEnrolToken([]byte(strings.TrimSpace(tok))))
		if got := refusalCode(err); got != "enrol-refused" {
			t.Fatalf("reused token: refusal = %q (%v), want enrol-refused", got, err)
		}
	})

	t.Run("AuditVerifies", func(t *testing.T) {
		out := mustHubctl(t, dir, "audit", "verify")
		// enrol, rotate, revoke, token enrol
		if !strings.Contains(out, "4 entries") {
			t.Fatalf("audit verify: %s", out)
		}
	})

	t.Run("ErrUnauthorized", func(t *testing.T) {
		out, code := hubctl(t, dir, "--token", strings.Repeat("0", 64), "device", "list")
		if code == 0 || !strings.Contains(out, "401") {
			t.Fatalf("wrong credential: exit %d %s", code, out)
		}
	})
}

// waitRefused waits until s is closed by the hub with code.
func waitRefused(t *testing.T, s *m2mclient.Session, code string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if err := s.Err(); err != nil {
			if got := refusalCode(err); got != code {
				t.Fatalf("session ended with %q (%v), want %s", got, err, code)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("session still up 1 s after it should have been closed with %s", code)
}

// TestKill9AfterEnrol: an enrolment acknowledged to hubctl survives SIGKILL of
// hubd, the btcd child dies with hubd, and the audit chain still verifies.
func TestKill9AfterEnrol(t *testing.T) {
	dir := t.TempDir()
	p := startHubd(t, dir)
	btcdPid := readPid(t, filepath.Join(dir, datadir.BtcdDir, "btcd.pid"))
	if !alive(btcdPid) {
		t.Fatalf("btcd %d not running", btcdPid)
	}

	_, id := enrol(t, dir, "payer")
	p.Kill()

	// The kernel kills btcd when its parent dies (PR_SET_PDEATHSIG).
	deadline := time.Now().Add(5 * time.Second)
	for alive(btcdPid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(btcdPid) {
		t.Fatalf("btcd %d outlived hubd killed with SIGKILL", btcdPid)
	}

	startHubd(t, dir)
	if out := mustHubctl(t, dir, "device", "show", id); !strings.Contains(out, id) {
		t.Fatalf("device lost after kill -9:\n%s", out)
	}
	if out := mustHubctl(t, dir, "audit", "verify"); !strings.Contains(out, "1 entries") {
		t.Fatalf("audit after restart: %s", out)
	}
}

// TestAuditTamperDetected alters one stored audit entry behind hubd's back;
// hubctl audit verify must fail with exit code 4 naming that entry.
func TestAuditTamperDetected(t *testing.T) {
	dir := t.TempDir()
	p := startHubd(t, dir)
	for range 3 {
		enrol(t, dir, "payer")
	}
	p.stop(t)

	db, err := bolt.Open(filepath.Join(dir, datadir.StoreFile), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		key := []byte{0, 0, 0, 0, 0, 0, 0, 2}
		v := b.Get(key)
		if v == nil {
			return errors.New("entry 2 not found")
		}
		forged := bytes.Replace(v, []byte(`"actor":"operator"`), []byte(`"actor":"intruder"`), 1)
		if bytes.Equal(forged, v) {
			return errors.New("nothing to tamper with")
		}
		return b.Put(key, forged)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	startHubd(t, dir)
	out, code := hubctl(t, dir, "audit", "verify")
	if code != 4 || !strings.Contains(out, "entry 2") {
		t.Fatalf("tampered log: exit %d, output %q; want exit 4 naming entry 2", code, out)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}
