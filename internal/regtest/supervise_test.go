package regtest

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/m2mhub/m2mhub/internal/btcrpc"
)

// waitRestarted waits until s runs a node other than the one with pid old.
func waitRestarted(t *testing.T, s *Supervisor, old int) *Node {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if n := s.Node(); n != nil && n.Pid() != old {
			return n
		}
		select {
		case <-deadline:
			t.Fatalf("btcd (pid %d) not restarted", old)
		case <-tick.C:
		}
	}
}

// A btcd killed with SIGKILL is started again on the same address with the
// same credentials and the same chain, so a client made before the kill
// reaches the new process unchanged.
func TestSupervisorRestartsKilledNode(t *testing.T) {
	ctx := t.Context()
	s, err := Supervise(ctx, Config{Dir: t.TempDir(), MiningAddr: mustTaprootAddr(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())

	mined, err := s.Mine(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	tip := mined[len(mined)-1]
	before := s.RPC()
	client := btcrpc.New(btcrpc.Config{Host: before.Host, User: before.User, Pass: before.Pass, Cert: before.Cert})
	defer client.Close()

	for round := 1; round <= 2; round++ {
		pid := s.Pid()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n := waitRestarted(t, s, pid)
		if got := s.Restarts(); got != int64(round) {
			t.Fatalf("Restarts = %d, want %d", got, round)
		}
		if rpc := s.RPC(); rpc.Host != before.Host || rpc.User != before.User || rpc.Pass != before.Pass {
			t.Fatalf("restarted on %s as %s, want %s as %s", rpc.Host, rpc.User, before.Host, before.User)
		}
		var best string
		if err := client.Call(ctx, btcjson.NewGetBestBlockHashCmd(), &best); err != nil {
			t.Fatalf("round %d: old client after restart: %v", round, err)
		}
		if best != tip.String() {
			t.Fatalf("round %d: best block %s after restart, want %s (chain not kept)", round, best, tip)
		}
		// The restarted node keeps archiving: what it mines survives
		// the next kill.
		mined, err := n.Mine(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		tip = mined[0]
	}
}

// Stop ends supervision: the node is stopped, not restarted.
func TestSupervisorStop(t *testing.T) {
	s, err := Supervise(t.Context(), Config{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n := s.Node()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-n.Exited()
	if s.Node() != n || s.Restarts() != 0 {
		t.Fatalf("node replaced after Stop (restarts %d)", s.Restarts())
	}
}
