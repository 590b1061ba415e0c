package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/m2mhub/m2mhub/hub/httpapi"
	"github.com/m2mhub/m2mhub/internal/cluster"
	"github.com/m2mhub/m2mhub/internal/datadir"
	"github.com/m2mhub/m2mhub/settlement"
)

// pauseLeaseTTL is the settlement lease of TestClusterPausedLeader: short,
// so the hand-over fits the test.
const pauseLeaseTTL = time.Second

// epochCutLine is the settler's log line for a cut, with the epoch closed.
var epochCutLine = regexp.MustCompile(`msg="epoch cut" epoch=(\d+)`)

// settleWrite is the log line of a settlement write a leader makes, and
// the run state it writes (none for a cut, which closes the epoch).
type settleWrite struct {
	line  string
	state settlement.RunState
}

// settleWriteLines are the log lines of settlement writes a leader makes.
var settleWriteLines = []settleWrite{
	{line: `msg="epoch cut"`},
	{line: `msg="settlement signed"`, state: settlement.RunSigned},
	{line: `msg="settlement broadcast"`, state: settlement.RunBroadcast},
	{line: `msg="settlement empty`, state: settlement.RunEmpty},
}

// logEpoch is the epoch a settlement log line names.
var logEpoch = regexp.MustCompile(` epoch=(\d+)`)

// storedBefore reports whether the write logged in l is already in the
// store as it was read at the stop: its epoch cut, or its run in the state
// it writes.
func (w settleWrite) storedBefore(l string, atStop map[uint64]httpapi.EpochView) bool {
	m := logEpoch.FindStringSubmatch(l)
	if m == nil {
		return false
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	e, ok := atStop[n]
	if !ok {
		return false
	}
	if w.state == "" {
		return !e.Open()
	}
	return e.RunState == w.state
}

// Issue 12: a settlement leader stopped with SIGSTOP past its lease is
// replaced by the other instance (which keeps cutting epochs), and once
// continued with SIGCONT it learns it lost the lease and writes nothing:
// the epochs stay one chain with every epoch cut once, by one instance,
// and none while a run was open. Reports the hand-over time (SIGSTOP to
// the other's first lease, as seen through its /v1/info).
func TestClusterPausedLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := t.Context()
	dir := t.TempDir()
	c, err := cluster.Start(ctx, cluster.Config{
		Hubd: filepath.Join(binDir, "hubd"), Dir: dir, Instances: 2, Btcd: true,
		HubArgs: append(killHubArgs(), "--settle.lease-ttl", pauseLeaseTTL.String(), "--settle.period", "1s"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	admins := make([]*httpapi.Client, c.Instances())
	for i := range admins {
		token, err := datadir.Dir(c.DataDir(i)).ReadToken(datadir.AdminTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		admins[i] = httpapi.NewClient(c.Hub(i).Runtime().AdminAddr, token)
	}
	info := func(i int) (httpapi.Info, error) {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return admins[i].Info(ictx)
	}
	epochs := func(i int) []httpapi.EpochView {
		t.Helper()
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		es, err := admins[i].Epochs(ectx, 1000)
		if err != nil {
			t.Fatalf("epochs from instance %d: %v", i, err)
		}
		return es
	}
	// waitFor polls cond every 20 ms until it holds or d has passed.
	waitFor := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("after %v: %s\n--- hubd-0 ---\n%s\n--- hubd-1 ---\n%s", d, what, c.LogTail(0, 3000), c.LogTail(1, 3000))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// closedAbove reports whether instance i's store view has a closed
	// epoch numbered above n.
	closedAbove := func(i int, n uint64) bool {
		for _, e := range epochs(i) {
			if !e.Open() && e.Number > n {
				return true
			}
		}
		return false
	}

	// The leader is whichever instance says so; it cuts an epoch by itself.
	old := -1
	var oldToken uint64
	waitFor(10*time.Second, "no instance leads settlement", func() bool {
		for i := range c.Instances() {
			if in, err := info(i); err == nil && in.SettleLeading {
				old, oldToken = i, in.SettleLeaderToken
				return true
			}
		}
		return false
	})
	other := 1 - old
	if in, err := info(other); err != nil || in.SettleLeading || in.SettleLeaderToken != oldToken {
		t.Fatalf("instance %d, not the leader, reports %+v (%v); the leader %d holds token %d", other, in, err, old, oldToken)
	}
	waitFor(15*time.Second, "the leader cut no epoch", func() bool { return closedAbove(other, 0) })

	// SIGSTOP, and note where its log stood once it is stopped: whatever
	// follows in the log it wrote after SIGCONT.
	stopped := time.Now()
	if err := c.Pause(old); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = c.Resume(old)
		}
	})
	waitFor(5*time.Second, "the paused leader is not stopped", func() bool { return procStopped(t, c.Hub(old).Pid()) })
	mark := int64(len(readLog(t, c.LogPath(old), 0)))
	// What the store holds while the old leader is stopped, before the
	// other instance can lead: a write it made just before the SIGSTOP may
	// have its log line printed only after the SIGCONT.
	atStop := map[uint64]httpapi.EpochView{}
	for _, e := range epochs(other) {
		atStop[e.Number] = e
	}

	var newToken uint64
	waitFor(10*pauseLeaseTTL, "the other instance did not take the lease", func() bool {
		in, err := info(other)
		if err != nil || !in.SettleLeading {
			return false
		}
		newToken = in.SettleLeaderToken
		return true
	})
	handOver := time.Since(stopped)
	if newToken <= oldToken {
		t.Fatalf("the new leader's token %d is not above the paused leader's %d", newToken, oldToken)
	}
	if handOver < pauseLeaseTTL/2 {
		t.Errorf("the lease changed hands %v after SIGSTOP, before the %v lease could lapse", handOver, pauseLeaseTTL)
	}
	before := epochs(other)
	t.Logf("leader hand-over: %v from SIGSTOP of instance %d (token %d) to instance %d leading (token %d), lease TTL %v",
		handOver.Round(time.Millisecond), old, oldToken, other, newToken, pauseLeaseTTL)

	// SIGCONT: the old leader finds its lease lost while the new one goes
	// on cutting.
	if err := c.Resume(old); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitFor(10*time.Second, "the resumed former leader still claims the lease", func() bool {
		in, err := info(old)
		return err == nil && !in.SettleLeading && in.SettleLeader != "" && in.SettleLeaderToken == newToken
	})
	if in, err := info(other); err != nil || !in.SettleLeading || in.SettleLeaderToken != newToken {
		t.Fatalf("the new leader lost the lease to the resumed one: %+v (%v)", in, err)
	}
	var top uint64
	for _, e := range before {
		top = max(top, e.Number)
	}
	waitFor(15*time.Second, "the new leader cut no epoch after the old one resumed", func() bool { return closedAbove(other, top) })
	after := epochs(other)

	// The epochs are one chain: numbered without gaps or repeats, each
	// starting where the previous ended, one open (the newest), and every
	// closed one's run settled before the next was cut.
	checkEpochChain(t, after)
	// The old leader's resumption rewrote nothing already there.
	byNum := map[uint64]httpapi.EpochView{}
	for _, e := range after {
		byNum[e.Number] = e
	}
	for _, e := range before {
		a, ok := byNum[e.Number]
		if !ok || !a.Start.Equal(e.Start) || (!e.Open() && !a.End.Equal(e.End)) {
			t.Errorf("epoch %d changed after the old leader resumed: %+v, then %+v", e.Number, e.Epoch, a.Epoch)
		}
	}
	// Every epoch was cut once, by one instance.
	cutBy := map[uint64]int{}
	for i := range c.Instances() {
		for _, m := range epochCutLine.FindAllStringSubmatch(readLog(t, c.LogPath(i), 0), -1) {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			if j, dup := cutBy[n]; dup {
				t.Errorf("epoch %d was cut by instance %d and again by instance %d", n, j, i)
			}
			cutBy[n] = i
		}
	}
	for _, e := range after {
		if _, ok := cutBy[e.Number]; !e.Open() && !ok {
			t.Errorf("closed epoch %d was cut by no instance's log", e.Number)
		}
	}
	// The old leader wrote nothing after SIGCONT: each write its log
	// shows after SIGCONT was in the store while it was stopped.
	tail := readLog(t, c.LogPath(old), mark)
	for _, l := range strings.Split(tail, "\n") {
		for _, w := range settleWriteLines {
			if strings.Contains(l, w.line) && !w.storedBefore(l, atStop) {
				t.Errorf("the former leader wrote after SIGCONT: %s", l)
			}
		}
	}
	switch {
	case strings.Contains(tail, "fenced"):
		t.Logf("the former leader's writes after SIGCONT were refused by the store (fenced)")
	case strings.Contains(tail, `msg="settlement leadership lost"`):
		t.Logf("the former leader found its lease lost after SIGCONT and made no settlement write")
	default:
		t.Logf("the former leader made no settlement write after SIGCONT")
	}
	t.Logf("epochs %d..%d, %d cut by instance %d before the pause and %d by instance %d",
		after[len(after)-1].Number, after[0].Number, countCuts(cutBy, old), old, countCuts(cutBy, other), other)
}

// checkEpochChain checks es (newest first, as /v1/epochs answers) is one
// chain of epochs: numbers descending by one to 1, each epoch starting at
// its predecessor's end time and height, only the newest open, and every
// closed epoch's run settled (empty, broadcast or confirmed) unless it is
// the newest closed one, whose run may still be under way: no epoch was
// cut while the run before it was open.
func checkEpochChain(t *testing.T, es []httpapi.EpochView) {
	t.Helper()
	if len(es) == 0 || !es[0].Open() {
		t.Fatalf("no open epoch at the head of %d epochs", len(es))
	}
	for k, e := range es {
		if want := uint64(len(es) - k); e.Number != want {
			t.Fatalf("epoch %d at position %d of %d: numbers repeat or skip", e.Number, k, len(es))
		}
		if k == 0 {
			continue
		}
		if e.Open() {
			t.Errorf("epoch %d is open and so is %d", e.Number, es[0].Number)
		}
		if next := es[k-1]; !next.Start.Equal(e.End) || next.StartHeight != e.EndHeight {
			t.Errorf("epoch %d ends at %v height %d but %d starts at %v height %d",
				e.Number, e.End, e.EndHeight, next.Number, next.Start, next.StartHeight)
		}
		if k > 1 && !e.RunState.Settled() {
			t.Errorf("epoch %d's run is %q, yet epoch %d was cut after it", e.Number, e.RunState, es[k-1].Number)
		}
	}
}

func countCuts(cutBy map[uint64]int, i int) int {
	n := 0
	for _, j := range cutBy {
		if j == i {
			n++
		}
	}
	return n
}

// procStopped reports whether process pid is in the stopped state (T).
func procStopped(t *testing.T, pid int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'T'
}

// readLog is path's content from byte from on.
func readLog(t *testing.T, path string, from int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[min(from, int64(len(b))):])
}
