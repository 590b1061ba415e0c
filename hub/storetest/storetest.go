// Package storetest is the conformance suite that every hub.Store
// implementation must pass, so the embedded store and the Redis store cannot
// drift apart in the behaviour the registry relies on: atomic changes, the
// audit-link check, single-use tokens and the key index.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/m2mhub/m2mhub/hub"
)

// Run runs the suite against the stores newStore makes.
//
// newStore must tie the data it opens to t.Name(): the first call for a test
// returns an empty store, and a later call with the same t, after the earlier
// store was closed, opens the same data again (this is how "ReopenKeepsData"
// checks persistence). A t.TempDir-per-top-level-test directory joined with
// a file name derived from t.Name(), or a Redis key prefix derived from it,
// does this. Run closes every store it gets, so Close must tolerate being
// called twice.
func Run(t *testing.T, newStore func(t *testing.T) hub.Store) {
	open := closing(newStore)

	t.Run("EmptyStore", func(t *testing.T) { testEmptyStore(t, open(t)) })
	t.Run("ApplyThenRead", func(t *testing.T) { testApplyThenRead(t, open(t)) })
	t.Run("ReplaceDevice", func(t *testing.T) { testReplaceDevice(t, open(t)) })
	t.Run("DevicesOrderedByID", func(t *testing.T) { testDevicesOrderedByID(t, open(t)) })
	t.Run("ErrAuditConflict", func(t *testing.T) { testErrAuditConflict(t, open(t)) })
	t.Run("ErrTokenUsed", func(t *testing.T) { testErrTokenUsed(t, open(t)) })
	t.Run("ErrAlreadyExists", func(t *testing.T) { testErrAlreadyExists(t, open(t)) })
	t.Run("ErrAlreadyExistsWithinChange", func(t *testing.T) { testErrAlreadyExistsWithinChange(t, open(t)) })
	t.Run("ErrInvalid", func(t *testing.T) { testErrInvalid(t, open(t)) })
	t.Run("RetiredKeyIndexed", func(t *testing.T) { testRetiredKeyIndexed(t, open(t)) })
	t.Run("DroppedKeyUnindexed", func(t *testing.T) { testDroppedKeyUnindexed(t, open(t)) })
	t.Run("AuditOnlyChange", func(t *testing.T) { testAuditOnlyChange(t, open(t)) })
	t.Run("AuditRangePaging", func(t *testing.T) { testAuditRangePaging(t, open(t)) })
	t.Run("ConcurrentAppendsSerialize", func(t *testing.T) { testConcurrentAppends(t, open(t)) })
	t.Run("ReopenKeepsData", func(t *testing.T) { testReopenKeepsData(t, newStore) })
}

// epoch is the fixed time of the suite, 2026-03-01T12:00:00Z. Entries and
// devices carry UTC times without a monotonic reading, so they compare
// exactly after a round trip through any encoding.
func epoch() time.Time { return time.Unix(1772366400, 0).UTC() }

// NewKey returns a fresh valid compressed public key.
func NewKey(tb testing.TB) hub.PubKey {
	tb.Helper()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		tb.Fatalf("new key: %v", err)
	}
	return hub.PubKeyOf(priv.PubKey())
}

// NewDevice returns an active payer device enrolled with a fresh key.
func NewDevice(tb testing.TB) hub.Device {
	tb.Helper()
	k := NewKey(tb)
	return hub.Device{
		ID:         hub.DeviceID(k),
		Key:        k,
		Roles:      []hub.Role{hub.RolePayer},
		Owner:      "fleet-1",
		Kind:       "car",
		Status:     hub.StatusActive,
		EnrolledAt: epoch(),
		UpdatedAt:  epoch(),
	}
}

// MustNext returns the audit entry that follows head.
func MustNext(tb testing.TB, head hub.AuditEntry, kind, subject string) hub.AuditEntry {
	tb.Helper()
	e, err := hub.NextAuditEntry(head, epoch().Add(time.Duration(head.Seq+1)*time.Second), kind, subject, "operator",
		map[string]string{"note": fmt.Sprintf("entry %d", head.Seq+1)})
	if err != nil {
		tb.Fatalf("NextAuditEntry: %v", err)
	}
	return e
}

// MustHead returns the store's audit head.
func MustHead(tb testing.TB, s hub.Store) hub.AuditEntry {
	tb.Helper()
	h, err := s.AuditHead(context.Background())
	if err != nil {
		tb.Fatalf("AuditHead: %v", err)
	}
	return h
}

// MustApply applies a change with the given devices, linked to the current
// head, and returns its audit entry.
func MustApply(tb testing.TB, s hub.Store, token string, devs ...hub.Device) hub.AuditEntry {
	tb.Helper()
	subject := ""
	if len(devs) > 0 {
		subject = devs[0].ID
	}
	e := MustNext(tb, MustHead(tb, s), hub.AuditEnrol, subject)
	if err := s.Apply(context.Background(), hub.Change{Devices: devs, Audit: e, SpendToken: token}); err != nil {
		tb.Fatalf("Apply: %v", err)
	}
	return e
}

func mustDevice(tb testing.TB, s hub.Store, id string) hub.Device {
	tb.Helper()
	d, err := s.Device(context.Background(), id)
	if err != nil {
		tb.Fatalf("Device(%s): %v", id, err)
	}
	return d
}

func mustByKey(tb testing.TB, s hub.Store, k hub.PubKey) hub.Device {
	tb.Helper()
	d, err := s.DeviceByKey(context.Background(), k)
	if err != nil {
		tb.Fatalf("DeviceByKey(%s): %v", k, err)
	}
	return d
}

func mustDevices(tb testing.TB, s hub.Store) []hub.Device {
	tb.Helper()
	ds, err := s.Devices(context.Background())
	if err != nil {
		tb.Fatalf("Devices: %v", err)
	}
	return ds
}

func mustRange(tb testing.TB, s hub.Store, from uint64, limit int) []hub.AuditEntry {
	tb.Helper()
	es, err := s.AuditRange(context.Background(), from, limit)
	if err != nil {
		tb.Fatalf("AuditRange(%d, %d): %v", from, limit, err)
	}
	return es
}

func assertDevice(tb testing.TB, got, want hub.Device) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("device mismatch:\n got  %+v\n want %+v", got, want)
	}
}

func assertEntry(tb testing.TB, got, want hub.AuditEntry) {
	tb.Helper()
	// Detail is compared as JSON text; the rest must survive byte for byte
	// because the hash covers it.
	if got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Kind != want.Kind ||
		got.Subject != want.Subject || got.Actor != want.Actor || string(got.Detail) != string(want.Detail) ||
		got.Prev != want.Prev || got.Hash != want.Hash {
		tb.Fatalf("audit entry mismatch:\n got  %+v\n want %+v", got, want)
	}
	if got.ComputeHash() != got.Hash {
		tb.Fatalf("audit entry %d read back does not match its hash", got.Seq)
	}
}

func assertNotFound(tb testing.TB, s hub.Store, id string, k hub.PubKey) {
	tb.Helper()
	ctx := context.Background()
	if id != "" {
		if _, err := s.Device(ctx, id); !errors.Is(err, hub.ErrNotFound) {
			tb.Fatalf("Device(%s) error = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := s.DeviceByKey(ctx, k); !errors.Is(err, hub.ErrNotFound) {
		tb.Fatalf("DeviceByKey(%s) error = %v, want ErrNotFound", k, err)
	}
}

func testEmptyStore(t *testing.T, s hub.Store) {
	d := NewDevice(t)
	assertNotFound(t, s, d.ID, d.Key)
	if ds := mustDevices(t, s); len(ds) != 0 {
		t.Fatalf("Devices = %d devices, want none", len(ds))
	}
	if h := MustHead(t, s); !reflect.DeepEqual(h, hub.AuditEntry{}) {
		t.Fatalf("AuditHead of empty log = %+v, want the zero entry", h)
	}
	if es := mustRange(t, s, 1, 10); len(es) != 0 {
		t.Fatalf("AuditRange of empty log = %d entries, want none", len(es))
	}
}

func testApplyThenRead(t *testing.T, s hub.Store) {
	d := NewDevice(t)
	d.Roles = []hub.Role{hub.RolePayer, hub.RoleProvider}
	e := MustApply(t, s, "tok-1", d)

	assertDevice(t, mustDevice(t, s, d.ID), d)
	assertDevice(t, mustByKey(t, s, d.Key), d)
	ds := mustDevices(t, s)
	if len(ds) != 1 {
		t.Fatalf("Devices = %d devices, want 1", len(ds))
	}
	assertDevice(t, ds[0], d)
	assertEntry(t, MustHead(t, s), e)
	es := mustRange(t, s, 1, 10)
	if len(es) != 1 {
		t.Fatalf("AuditRange = %d entries, want 1", len(es))
	}
	assertEntry(t, es[0], e)
}

func testReplaceDevice(t *testing.T, s hub.Store) {
	d := NewDevice(t)
	MustApply(t, s, "", d)
	d.Status = hub.StatusRevoked
	d.UpdatedAt = epoch().Add(time.Hour)
	MustApply(t, s, "", d)
	assertDevice(t, mustDevice(t, s, d.ID), d)
	assertDevice(t, mustByKey(t, s, d.Key), d)
	if n := len(mustDevices(t, s)); n != 1 {
		t.Fatalf("Devices = %d after replacing one device, want 1", n)
	}
}

func testDevicesOrderedByID(t *testing.T, s hub.Store) {
	var devs []hub.Device
	for range 12 {
		devs = append(devs, NewDevice(t))
	}
	// Two at a time, so the order of writes does not give the order of ids.
	for i := 0; i < len(devs); i += 2 {
		MustApply(t, s, "", devs[i], devs[i+1])
	}
	got := mustDevices(t, s)
	if len(got) != len(devs) {
		t.Fatalf("Devices = %d devices, want %d", len(got), len(devs))
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].ID >= got[i].ID {
			t.Fatalf("Devices not ordered by id: %s before %s", got[i-1].ID, got[i].ID)
		}
	}
}

func testErrAuditConflict(t *testing.T, s hub.Store) {
	ctx := context.Background()
	MustApply(t, s, "", NewDevice(t))
	MustApply(t, s, "", NewDevice(t))

	// Each case builds its bad entry from the head at the time it runs, so
	// the seq check alone cannot catch a bad link by accident.
	cases := []struct {
		name string
		bad  func(head, prev hub.AuditEntry) hub.AuditEntry
	}{
		{"Replay", func(head, _ hub.AuditEntry) hub.AuditEntry { return head }},
		{"SeqGap", func(head, _ hub.AuditEntry) hub.AuditEntry {
			return MustNext(t, MustNext(t, head, hub.AuditAdmin, ""), hub.AuditAdmin, "")
		}},
		{"StaleHead", func(_, prev hub.AuditEntry) hub.AuditEntry {
			return MustNext(t, prev, hub.AuditAdmin, "fork")
		}},
		{"WrongPrev", func(head, _ hub.AuditEntry) hub.AuditEntry {
			e := MustNext(t, head, hub.AuditAdmin, "")
			e.Prev = hub.Hash{1}
			e.Hash = e.ComputeHash()
			return e
		}},
		{"RightSeqOtherChain", func(head, _ hub.AuditEntry) hub.AuditEntry {
			// Same seq, linked to a different entry with the same seq as
			// the head: only the hash link tells them apart.
			other := head
			other.Subject = "other-chain"
			other.Hash = other.ComputeHash()
			return MustNext(t, other, hub.AuditAdmin, "")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			head := MustHead(t, s)
			prev := mustRange(t, s, head.Seq-1, 1)[0]
			e := c.bad(head, prev)
			d := NewDevice(t)
			err := s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e, SpendToken: "tok-" + c.name})
			if !errors.Is(err, hub.ErrAuditConflict) {
				t.Fatalf("Apply error = %v, want ErrAuditConflict", err)
			}
			// Nothing of the refused change may be visible.
			assertNotFound(t, s, d.ID, d.Key)
			assertEntry(t, MustHead(t, s), head)
			// The token was not spent by the refused change.
			MustApply(t, s, "tok-"+c.name)
		})
	}
}

func testErrTokenUsed(t *testing.T, s hub.Store) {
	ctx := context.Background()
	MustApply(t, s, "tok-A", NewDevice(t))
	head := MustHead(t, s)

	d := NewDevice(t)
	e := MustNext(t, head, hub.AuditEnrol, d.ID)
	err := s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e, SpendToken: "tok-A"})
	if !errors.Is(err, hub.ErrTokenUsed) {
		t.Fatalf("Apply with a spent token: error = %v, want ErrTokenUsed", err)
	}
	assertNotFound(t, s, d.ID, d.Key)
	assertEntry(t, MustHead(t, s), head)

	// Another token still works, and so does the same entry without a token.
	if err := s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e, SpendToken: "tok-B"}); err != nil {
		t.Fatalf("Apply with a fresh token: %v", err)
	}
}

func testErrAlreadyExists(t *testing.T, s hub.Store) {
	ctx := context.Background()
	a := NewDevice(t)
	MustApply(t, s, "", a)
	head := MustHead(t, s)

	sameKey := NewDevice(t)
	sameKey.Key = a.Key
	retiredKey := NewDevice(t)
	retiredKey.RetiredKeys = []hub.PubKey{a.Key}

	for name, d := range map[string]hub.Device{"CurrentKey": sameKey, "RetiredKey": retiredKey} {
		t.Run(name, func(t *testing.T) {
			e := MustNext(t, head, hub.AuditEnrol, d.ID)
			err := s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e, SpendToken: "tok-" + name})
			if !errors.Is(err, hub.ErrAlreadyExists) {
				t.Fatalf("Apply error = %v, want ErrAlreadyExists", err)
			}
			if _, err := s.Device(ctx, d.ID); !errors.Is(err, hub.ErrNotFound) {
				t.Fatalf("refused device is stored: Device error = %v", err)
			}
			assertDevice(t, mustByKey(t, s, a.Key), a)
			assertEntry(t, MustHead(t, s), head)
		})
	}
	// Neither refused change spent its token.
	MustApply(t, s, "tok-CurrentKey")
	MustApply(t, s, "tok-RetiredKey")
}

func testErrAlreadyExistsWithinChange(t *testing.T, s hub.Store) {
	ctx := context.Background()
	ok := NewDevice(t)
	a := NewDevice(t)
	b := NewDevice(t)
	b.Key = a.Key
	e := MustNext(t, hub.AuditEntry{}, hub.AuditEnrol, a.ID)
	err := s.Apply(ctx, hub.Change{Devices: []hub.Device{ok, a, b}, Audit: e, SpendToken: "tok"})
	if !errors.Is(err, hub.ErrAlreadyExists) {
		t.Fatalf("Apply of two devices sharing a key: error = %v, want ErrAlreadyExists", err)
	}
	// All or nothing: the device before the conflicting ones is not stored.
	assertNotFound(t, s, ok.ID, ok.Key)
	assertNotFound(t, s, a.ID, a.Key)
	if h := MustHead(t, s); h.Seq != 0 {
		t.Fatalf("AuditHead.Seq = %d after a refused change, want 0", h.Seq)
	}
	MustApply(t, s, "tok", ok)
}

func testErrInvalid(t *testing.T, s hub.Store) {
	ctx := context.Background()
	d := NewDevice(t)
	tampered := MustNext(t, hub.AuditEntry{}, hub.AuditEnrol, d.ID)
	tampered.Subject = "someone-else"
	noID := NewDevice(t)
	noID.ID = ""

	cases := map[string]hub.Change{
		"HashMismatch": {Devices: []hub.Device{d}, Audit: tampered},
		"EmptyID":      {Devices: []hub.Device{noID}, Audit: MustNext(t, hub.AuditEntry{}, hub.AuditEnrol, "")},
	}
	for name, ch := range cases {
		t.Run(name, func(t *testing.T) {
			if err := s.Apply(ctx, ch); !errors.Is(err, hub.ErrInvalid) {
				t.Fatalf("Apply error = %v, want ErrInvalid", err)
			}
			if h := MustHead(t, s); h.Seq != 0 {
				t.Fatalf("AuditHead.Seq = %d after an invalid change, want 0", h.Seq)
			}
		})
	}
}

func testRetiredKeyIndexed(t *testing.T, s hub.Store) {
	d := NewDevice(t)
	MustApply(t, s, "", d)
	old := d.Key

	d.RetiredKeys = append(d.RetiredKeys, old)
	d.Key = NewKey(t)
	d.UpdatedAt = epoch().Add(time.Minute)
	MustApply(t, s, "", d)

	d.RetiredKeys = append(d.RetiredKeys, d.Key)
	d.Key = NewKey(t)
	MustApply(t, s, "", d)

	assertDevice(t, mustByKey(t, s, d.Key), d)
	for _, k := range d.RetiredKeys {
		got := mustByKey(t, s, k)
		assertDevice(t, got, d)
		if err := got.Authorize(k); !errors.Is(err, hub.ErrRotatedOut) {
			t.Fatalf("Authorize(retired key) = %v, want ErrRotatedOut", err)
		}
	}
	// A retired key stays taken: no other device may claim it.
	other := NewDevice(t)
	other.Key = old
	err := s.Apply(context.Background(), hub.Change{Devices: []hub.Device{other}, Audit: MustNext(t, MustHead(t, s), hub.AuditEnrol, other.ID)})
	if !errors.Is(err, hub.ErrAlreadyExists) {
		t.Fatalf("claiming a retired key: error = %v, want ErrAlreadyExists", err)
	}
}

func testDroppedKeyUnindexed(t *testing.T, s hub.Store) {
	// A device rewritten without one of its keys (neither current nor
	// retired) must not be found by it any more, and the key is free again.
	d := NewDevice(t)
	dropped := NewKey(t)
	d.RetiredKeys = []hub.PubKey{dropped}
	MustApply(t, s, "", d)
	d.RetiredKeys = nil
	MustApply(t, s, "", d)

	assertNotFound(t, s, "", dropped)
	assertDevice(t, mustByKey(t, s, d.Key), d)
	other := NewDevice(t)
	other.Key = dropped
	MustApply(t, s, "", other)
	assertDevice(t, mustByKey(t, s, dropped), other)
}

func testAuditOnlyChange(t *testing.T, s hub.Store) {
	e1 := MustApply(t, s, "")
	e2 := MustApply(t, s, "tok")
	es := mustRange(t, s, 0, 10)
	if len(es) != 2 {
		t.Fatalf("AuditRange = %d entries, want 2", len(es))
	}
	assertEntry(t, es[0], e1)
	assertEntry(t, es[1], e2)
	if ds := mustDevices(t, s); len(ds) != 0 {
		t.Fatalf("Devices = %d after audit-only changes, want 0", len(ds))
	}
}

func testAuditRangePaging(t *testing.T, s hub.Store) {
	const n = 25
	var want []hub.AuditEntry
	for range n {
		want = append(want, MustApply(t, s, ""))
	}

	var v hub.AuditVerifier
	var got []hub.AuditEntry
	for from := uint64(1); ; {
		page := mustRange(t, s, from, 10)
		if len(page) == 0 {
			break
		}
		if len(page) > 10 {
			t.Fatalf("AuditRange returned %d entries, limit was 10", len(page))
		}
		for _, e := range page {
			if err := v.Next(e); err != nil {
				t.Fatalf("verify page from %d: %v", from, err)
			}
		}
		got = append(got, page...)
		from = page[len(page)-1].Seq + 1
	}
	if len(got) != n {
		t.Fatalf("paged through %d entries, want %d", len(got), n)
	}
	for i := range want {
		assertEntry(t, got[i], want[i])
	}

	cases := []struct {
		name      string
		from      uint64
		limit     int
		wantFirst uint64
		wantLen   int
	}{
		{"FromZeroMeansFirst", 0, 3, 1, 3},
		{"Middle", 10, 5, 10, 5},
		{"TailShort", 23, 10, 23, 3},
		{"LastOnly", n, 10, n, 1},
		{"PastHead", n + 1, 10, 0, 0},
		{"FarPastHead", 1 << 40, 10, 0, 0},
		{"ZeroLimit", 1, 0, 0, 0},
		{"NegativeLimit", 1, -1, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es := mustRange(t, s, c.from, c.limit)
			if len(es) != c.wantLen {
				t.Fatalf("AuditRange(%d, %d) = %d entries, want %d", c.from, c.limit, len(es), c.wantLen)
			}
			for i, e := range es {
				assertEntry(t, e, want[c.wantFirst-1+uint64(i)])
			}
		})
	}
}

func testConcurrentAppends(t *testing.T, s hub.Store) {
	// Each writer rebuilds on the head it reads and retries when another
	// writer linked first, as the registry does. The store must let exactly
	// one writer extend each head, so the result is one unbroken chain with
	// every writer's entry in it once.
	const writers = 16
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	devs := make([]hub.Device, writers)
	for i := range devs {
		devs[i] = NewDevice(t)
	}
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; ; attempt++ {
				if attempt > 10*writers {
					errs <- fmt.Errorf("writer %d: no progress after %d attempts", i, attempt)
					return
				}
				head, err := s.AuditHead(ctx)
				if err != nil {
					errs <- err
					return
				}
				e, err := hub.NextAuditEntry(head, epoch(), hub.AuditEnrol, d.ID, "operator", nil)
				if err != nil {
					errs <- err
					return
				}
				err = s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e, SpendToken: fmt.Sprintf("tok-%d", i)})
				if errors.Is(err, hub.ErrAuditConflict) {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", i, err)
				}
				return
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	es := mustRange(t, s, 1, 10*writers)
	if len(es) != writers {
		t.Fatalf("audit log has %d entries, want %d", len(es), writers)
	}
	var v hub.AuditVerifier
	subjects := map[string]bool{}
	for _, e := range es {
		if err := v.Next(e); err != nil {
			t.Fatal(err)
		}
		subjects[e.Subject] = true
	}
	if len(subjects) != writers {
		t.Fatalf("audit log names %d distinct devices, want %d", len(subjects), writers)
	}
	if n := len(mustDevices(t, s)); n != writers {
		t.Fatalf("Devices = %d, want %d", n, writers)
	}
	assertEntry(t, MustHead(t, s), es[len(es)-1])
}

func testReopenKeepsData(t *testing.T, newStore func(t *testing.T) hub.Store) {
	s := newStore(t)
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	d := NewDevice(t)
	MustApply(t, s, "tok-1", d)
	d.RetiredKeys = []hub.PubKey{d.Key}
	d.Key = NewKey(t)
	MustApply(t, s, "", d)
	head := MustHead(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true

	s2 := newStore(t)
	t.Cleanup(func() { s2.Close() })
	assertDevice(t, mustDevice(t, s2, d.ID), d)
	assertDevice(t, mustByKey(t, s2, d.RetiredKeys[0]), d)
	assertEntry(t, MustHead(t, s2), head)

	// The reopened store keeps enforcing what it stored: the spent token and
	// the audit link.
	e := MustNext(t, head, hub.AuditEnrol, "")
	if err := s2.Apply(context.Background(), hub.Change{Audit: e, SpendToken: "tok-1"}); !errors.Is(err, hub.ErrTokenUsed) {
		t.Fatalf("spent token after reopen: error = %v, want ErrTokenUsed", err)
	}
	if err := s2.Apply(context.Background(), hub.Change{Audit: MustNext(t, hub.AuditEntry{}, hub.AuditEnrol, "")}); !errors.Is(err, hub.ErrAuditConflict) {
		t.Fatalf("stale entry after reopen: error = %v, want ErrAuditConflict", err)
	}
	if err := s2.Apply(context.Background(), hub.Change{Audit: e}); err != nil {
		t.Fatalf("next entry after reopen: %v", err)
	}
}

// closing wraps newStore so every store a subtest opens is closed when that
// subtest ends; each suite (Run, RunChannels, RunMetering, RunSettlement)
// opens its stores through it.
func closing[S interface{ Close() error }](newStore func(t *testing.T) S) func(t *testing.T) S {
	return func(t *testing.T) S {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
}
