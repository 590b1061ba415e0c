package registry_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/txscript"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels/chantest"
	"github.com/m2mhub/m2mhub/hub/registry"
	"github.com/m2mhub/m2mhub/hub/settler"
)

func TestRegistrySetPayout(t *testing.T) {
	ctx := t.Context()
	reg := newRegistry(t)
	d, err := reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(chantest.MustKey(t).PubKey()), Roles: []hub.Role{hub.RoleProvider}}, "op")
	if err != nil {
		t.Fatal(err)
	}
	var _ settler.PayoutAddresses = reg

	if s, err := reg.PayoutScript(ctx, d.ID); err != nil || s != nil {
		t.Fatalf("payout before any is set: %x, %v", s, err)
	}
	if s, err := reg.PayoutScript(ctx, "dev-unknown"); err != nil || s != nil {
		t.Fatalf("payout of an unknown party: %x, %v", s, err)
	}
	script, err := txscript.PayToTaprootScript(chantest.MustKey(t).PubKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SetPayout(ctx, d.ID, script, "op"); err != nil {
		t.Fatal(err)
	}
	if s, err := reg.PayoutScript(ctx, d.ID); err != nil || !bytes.Equal(s, script) {
		t.Fatalf("payout after set: %x, %v", s, err)
	}
	got, err := reg.Device(ctx, d.ID)
	if err != nil || !bytes.Equal(got.Payout, script) {
		t.Fatalf("device record payout %x, %v", got.Payout, err)
	}
	audit, err := reg.Audit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	last := audit[len(audit)-1]
	if last.Kind != registry.AuditPayout || last.Subject != d.ID || last.Actor != "op" {
		t.Fatalf("last audit entry %+v", last)
	}
	// Setting the same script again writes nothing.
	if _, err := reg.SetPayout(ctx, d.ID, script, "op"); err != nil {
		t.Fatal(err)
	}
	if again, _ := reg.Audit(ctx, 0, 100); len(again) != len(audit) {
		t.Fatalf("a no-op payout change was audited (%d → %d entries)", len(audit), len(again))
	}

	for name, bad := range map[string][]byte{
		"op_return":    {txscript.OP_RETURN, 0x01, 0x00},
		"non-standard": {txscript.OP_TRUE},
		"too long":     bytes.Repeat([]byte{0x51}, 80),
	} {
		if _, err := reg.SetPayout(ctx, d.ID, bad, "op"); !errors.Is(err, hub.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := reg.SetPayout(ctx, "dev-unknown", script, "op"); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("unknown device: %v, want ErrNotFound", err)
	}
	// An empty script clears it.
	if _, err := reg.SetPayout(ctx, d.ID, nil, "op"); err != nil {
		t.Fatal(err)
	}
	if s, _ := reg.PayoutScript(ctx, d.ID); s != nil {
		t.Fatalf("payout after clearing: %x", s)
	}
}

// TestCheckPayees: a revenue split may pay an enrolled, unrevoked
// provider; an unknown device, a revoked one or a payer-only one is
// refused with ErrInvalid.
func TestCheckPayees(t *testing.T) {
	ctx := t.Context()
	reg := newRegistry(t)
	enrol := func(role hub.Role) string {
		d, err := reg.Enrol(ctx, registry.EnrolRequest{Key: hub.PubKeyOf(chantest.MustKey(t).PubKey()), Roles: []hub.Role{role}}, "op")
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	host, payer, gone := enrol(hub.RoleProvider), enrol(hub.RolePayer), enrol(hub.RoleProvider)
	if _, err := reg.Revoke(ctx, gone, "op", "left"); err != nil {
		t.Fatal(err)
	}
	if err := reg.CheckPayees(ctx, []string{host}); err != nil {
		t.Fatalf("an enrolled provider refused: %v", err)
	}
	if err := reg.CheckPayees(ctx, nil); err != nil {
		t.Fatalf("no splits refused: %v", err)
	}
	for name, id := range map[string]string{"Unknown": "dev-unknown", "Revoked": gone, "PayerOnly": payer} {
		if err := reg.CheckPayees(ctx, []string{host, id}); !errors.Is(err, hub.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}
