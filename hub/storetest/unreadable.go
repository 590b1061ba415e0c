package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/registry"
)

// Planter writes a device record and a key index entry for it straight
// into the store under test, past its checks, as an older hub did when it
// enrolled an all-zero key. Each store's test provides one (it reaches the
// store's data the way only its own package can).
type Planter func(t *testing.T, s hub.Store, id string, doc []byte, key hub.PubKey)

// RunRecords runs the checks of what a store writes and reads back: it
// refuses a device it could not read back, a record it cannot decode is
// left out of the list (and named) instead of failing it, and the operator
// can remove such a record.
func RunRecords(t *testing.T, newStore func(t *testing.T) hub.Store, plant Planter) {
	open := closing(newStore)
	t.Run("RefusesUnreadableDevice", func(t *testing.T) { testRefusesUnreadable(t, open(t)) })
	t.Run("UnreadableLeftOutAndRemoved", func(t *testing.T) { testUnreadableRemoved(t, open(t), plant) })
}

// BadDevices are devices no store may write, by what is wrong with them.
func BadDevices(tb testing.TB) map[string]hub.Device {
	tb.Helper()
	bad := map[string]func(d *hub.Device){
		"ZeroKey":        func(d *hub.Device) { d.Key = hub.PubKey{} },
		"KeyOffCurve":    func(d *hub.Device) { d.Key[0] = 0x02; copy(d.Key[1:], strings.Repeat("\xff", 32)) },
		"ZeroRetiredKey": func(d *hub.Device) { d.RetiredKeys = []hub.PubKey{{}} },
		"NoRoles":        func(d *hub.Device) { d.Roles = nil },
		"UnknownRole":    func(d *hub.Device) { d.Roles = []hub.Role{"admin"} },
		"UnknownStatus":  func(d *hub.Device) { d.Status = "zombie" },
		"LongOwner":      func(d *hub.Device) { d.Owner = strings.Repeat("o", hub.MaxOwnerLen+1) },
		"LongKind":       func(d *hub.Device) { d.Kind = strings.Repeat("k", hub.MaxKindLen+1) },
		"LongID":         func(d *hub.Device) { d.ID = strings.Repeat("i", hub.MaxIDLen+1) },
	}
	out := make(map[string]hub.Device, len(bad))
	for name, spoil := range bad {
		d := NewDevice(tb)
		spoil(&d)
		out[name] = d
	}
	return out
}

func testRefusesUnreadable(t *testing.T, s hub.Store) {
	ctx := context.Background()
	for name, d := range BadDevices(t) {
		t.Run(name, func(t *testing.T) {
			head := MustHead(t, s)
			e := MustNext(t, head, hub.AuditEnrol, d.ID)
			if err := s.Apply(ctx, hub.Change{Devices: []hub.Device{d}, Audit: e}); !errors.Is(err, hub.ErrInvalid) {
				t.Fatalf("Apply error = %v, want ErrInvalid", err)
			}
			if h := MustHead(t, s); h.Seq != head.Seq {
				t.Fatalf("AuditHead.Seq = %d after a refused change, want %d", h.Seq, head.Seq)
			}
			if ds := mustDevices(t, s); len(ds) != 0 {
				t.Fatalf("Devices = %v after refused changes, want none", ds)
			}
		})
	}
}

func testUnreadableRemoved(t *testing.T, s hub.Store, plant Planter) {
	ctx := context.Background()
	good := NewDevice(t)
	MustApply(t, s, "", good)

	// What an older hub stored for POST /v1/providers with "{}".
	var zero hub.PubKey
	bad := hub.Device{ID: hub.DeviceID(zero), Key: zero, Roles: []hub.Role{hub.RoleProvider},
		Status: hub.StatusActive, EnrolledAt: epoch(), UpdatedAt: epoch()}
	doc, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	plant(t, s, bad.ID, doc, zero)

	ds := mustDevices(t, s)
	if len(ds) != 1 || ds[0].ID != good.ID {
		t.Fatalf("Devices = %v, want only the readable %s", ds, good.ID)
	}
	un, err := s.UnreadableDevices(ctx)
	if err != nil || len(un) != 1 || un[0].ID != bad.ID || un[0].Error == "" {
		t.Fatalf("UnreadableDevices = %v, %v; want %s with a reason", un, err, bad.ID)
	}
	if _, err := s.Device(ctx, bad.ID); !errors.Is(err, hub.ErrUnreadable) || errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("Device(unreadable) error = %v, want ErrUnreadable (not ErrInvalid)", err)
	}
	if _, err := s.DeviceByKey(ctx, zero); !errors.Is(err, hub.ErrUnreadable) {
		t.Fatalf("DeviceByKey(zero) error = %v, want ErrUnreadable", err)
	}

	reg, err := registry.New(registry.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RemoveUnreadable(ctx, good.ID, "operator", "test"); !errors.Is(err, hub.ErrInvalid) {
		t.Fatalf("RemoveUnreadable(readable) error = %v, want ErrInvalid", err)
	}
	if err := reg.RemoveUnreadable(ctx, "dev-unknown", "operator", "test"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("RemoveUnreadable(unknown) error = %v, want ErrNotFound", err)
	}
	before := MustHead(t, s)
	if err := reg.RemoveUnreadable(ctx, bad.ID, "operator", "enrolled without a key"); err != nil {
		t.Fatalf("RemoveUnreadable: %v", err)
	}
	if h := MustHead(t, s); h.Seq != before.Seq+1 || h.Subject != bad.ID || h.Kind != hub.AuditAdmin {
		t.Fatalf("audit head after removal = %+v, want an admin entry about %s", h, bad.ID)
	}
	assertNotFound(t, s, bad.ID, zero)
	if un, err := s.UnreadableDevices(ctx); err != nil || len(un) != 0 {
		t.Fatalf("UnreadableDevices after removal = %v, %v; want none", un, err)
	}
	assertDevice(t, mustDevice(t, s, good.ID), good)
	assertDevice(t, mustByKey(t, s, good.Key), good)
}
