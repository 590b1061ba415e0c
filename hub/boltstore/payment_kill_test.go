package boltstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/storetest"
)

// payChildDirEnv names the data directory for TestChildPayer when the test
// binary runs as the child of TestKillNineKeepsAcknowledgedPayments.
const payChildDirEnv = "BOLTSTORE_TEST_PAY_CHILD_DIR"

// killChannels is how many channels the child pays into; fewer than its
// writers, so writers also race on channels and some updates are refused.
const killChannels = 12

// TestKillNineKeepsAcknowledgedPayments runs concurrent payers in a child
// process, kills it with SIGKILL in the middle of the stream, and checks
// after reopening that every payment the child saw acknowledged is stored
// (state and receipt), and that nothing beyond what it attempted is: the
// stored seq of each channel lies between the last acknowledged and the
// last attempted one, and every receipt up to it is the one sent (I5).
func TestKillNineKeepsAcknowledgedPayments(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	byOp := map[string]hub.ChannelRecord{}
	for i := range killChannels {
		c := storetest.NewChannel(t, fmt.Sprintf("dev-%d", i%4))
		storetest.MustPutChannel(t, s, c)
		byOp[c.Funding.String()] = c
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	proc := startChild(t, "TestChildPayer", payChildDirEnv+"="+dir)
	out := proc.out

	// The child prints "try <op> <seq>" before each ApplyPayment and
	// "acked <op> <seq>" after one returns nil.
	acked, tried := map[string]uint64{}, map[string]uint64{}
	nAcked := 0
	read := func(line string) {
		f := strings.Fields(line)
		if len(f) != 3 {
			return
		}
		seq, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return
		}
		switch f[0] {
		case "try":
			tried[f[1]] = max(tried[f[1]], seq)
		case "acked":
			acked[f[1]] = max(acked[f[1]], seq)
			nAcked++
		}
	}
	sc := bufio.NewScanner(out)
	const killAfter = 1500
	for nAcked < killAfter && sc.Scan() {
		read(sc.Text())
	}
	if nAcked < killAfter {
		t.Fatalf("child stopped after %d acknowledged payments: %v", nAcked, sc.Err())
	}
	proc.kill(t)
	// Lines already in the pipe were written before the kill.
	for sc.Scan() {
		read(sc.Text())
	}
	proc.wait()

	s = mustOpen(t, dir)
	defer s.Close()
	ctx := context.Background()
	var stored uint64
	for op, c := range byOp {
		got := storetest.MustChannel(t, s, c.Funding)
		if got.Seq < acked[op] {
			t.Fatalf("channel %s: stored seq %d, but seq %d was acknowledged", op, got.Seq, acked[op])
		}
		if got.Seq > tried[op] {
			t.Fatalf("channel %s: stored seq %d, but only up to %d was attempted", op, got.Seq, tried[op])
		}
		if want := killPayment(c, got.Seq); got.Seq > 0 && (got.Paid != want.Paid || got.DeviceSig != want.DeviceSig) {
			t.Fatalf("channel %s: state at seq %d is not the update sent for it", op, got.Seq)
		}
		rs, err := s.Receipts(ctx, c.Funding, 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(rs)) != got.Seq {
			t.Fatalf("channel %s: %d receipts for seq %d", op, len(rs), got.Seq)
		}
		for i, r := range rs {
			if string(r) != string(storetest.Receipt(c.Funding, uint64(i+1))) {
				t.Fatalf("channel %s: receipt %d is not the one sent", op, i+1)
			}
		}
		stored += got.Seq
	}
	t.Logf("%d payments acknowledged before SIGKILL; %d stored", nAcked, stored)
}

// killPayment is the update the child sends for seq: derived from the seq
// alone, so the parent can check what was stored.
func killPayment(c hub.ChannelRecord, seq uint64) hub.PaymentUpdate {
	return storetest.Payment(c.Funding, seq, msat.Amount(seq*1_000))
}

// TestChildPayer is the child side of TestKillNineKeepsAcknowledgedPayments;
// it does nothing in a normal run.
func TestChildPayer(t *testing.T) {
	dir := os.Getenv(payChildDirEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestKillNineKeepsAcknowledgedPayments")
	}
	s := mustOpen(t, dir)
	ctx := context.Background()
	chans, err := s.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // one line at a time on stdout
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; ; k++ {
				c := chans[k%len(chans)]
				cur, err := s.Channel(ctx, c.Funding)
				if err != nil {
					t.Error(err)
					return
				}
				u := killPayment(c, cur.Seq+1)
				mu.Lock()
				fmt.Printf("try %s %d\n", c.Funding, u.Seq)
				mu.Unlock()
				_, err = s.ApplyPayment(ctx, u)
				if errors.Is(err, hub.ErrSeqConflict) {
					continue // another writer took this seq
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Printf("acked %s %d\n", c.Funding, u.Seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait() // only reached on error; the parent kills this process
}
