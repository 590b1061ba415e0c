package registry

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/txscript"
	"github.com/m2mhub/m2mhub/hub"
)

// AuditPayout records a party's payout script set or cleared by an
// operator.
const AuditPayout = "device.payout"

// maxPayoutScript bounds a payout script: the longest standard output
// script (a 40-byte witness program) is 42 bytes.
const maxPayoutScript = 42

// SetPayout sets the pkScript the settlement pays id's earnings to when
// they are not settled into a channel of its own (a provider without one,
// or a prosumer settled by claim); an empty script clears it, and the
// earnings are carried from then on. The script must be a standard output
// (segwit v0, taproot, P2PKH or P2SH): a non-standard one would make every
// batch that pays it unrelayable. The change and its audit entry (kind
// AuditPayout, detail {"script": hex}) are written atomically. It returns
// an error wrapping ErrNotFound for an unknown id and ErrInvalid for a
// script that is not standard.
func (r *Registry) SetPayout(ctx context.Context, id string, pkScript []byte, actor string) (hub.Device, error) {
	if err := checkPayoutScript(pkScript); err != nil {
		return hub.Device{}, err
	}
	var out hub.Device
	err := r.apply(ctx, func(head hub.AuditEntry) (hub.Change, error) {
		d, err := r.store.Device(ctx, id)
		if err != nil {
			return hub.Change{}, err
		}
		if bytes.Equal(d.Payout, pkScript) {
			out = d
			return hub.Change{}, errNoChange
		}
		d.Payout, d.UpdatedAt = bytes.Clone(pkScript), r.clock.Now().UTC()
		if len(d.Payout) == 0 {
			d.Payout = nil
		}
		out = d
		e, err := hub.NextAuditEntry(head, d.UpdatedAt, AuditPayout, id, actor,
			map[string]string{"script": hex.EncodeToString(pkScript)})
		return hub.Change{Devices: []hub.Device{d}, Audit: e}, err
	})
	if errors.Is(err, errNoChange) {
		return out, nil
	}
	if err != nil {
		return hub.Device{}, fmt.Errorf("set payout of %s: %w", id, err)
	}
	r.log.Info("payout script set", "id", id, "actor", actor, "script", hex.EncodeToString(pkScript))
	return out, nil
}

// PayoutScript returns the payout script registered for id, or nil when
// it has none or is not a registered device (the settlement then carries
// its earnings). It makes *Registry a PayoutAddresses.
func (r *Registry) PayoutScript(ctx context.Context, id string) ([]byte, error) {
	d, err := r.store.Device(ctx, id)
	switch {
	case errors.Is(err, hub.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return bytes.Clone(d.Payout), nil
}

// checkPayoutScript accepts an empty script (clear) or a standard output
// script that pays someone.
func checkPayoutScript(s []byte) error {
	if len(s) == 0 {
		return nil
	}
	if len(s) > maxPayoutScript {
		return fmt.Errorf("%w: payout script of %d bytes", hub.ErrInvalid, len(s))
	}
	switch txscript.GetScriptClass(s) {
	case txscript.WitnessV0PubKeyHashTy, txscript.WitnessV0ScriptHashTy, txscript.WitnessV1TaprootTy,
		txscript.PubKeyHashTy, txscript.ScriptHashTy:
		return nil
	}
	return fmt.Errorf("%w: payout script %x is not a standard output", hub.ErrInvalid, s)
}

// CheckPayees checks that every id a contract's revenue splits pay is an
// enrolled device that may earn: known, not revoked, with the provider
// role (a payee's income is settled as a provider's: into its channel, or
// to its payout script). A contract paying anyone else would credit money
// that no participant can be settled, so it is refused before it is
// published. Errors wrap hub.ErrInvalid, naming the payee.
func (r *Registry) CheckPayees(ctx context.Context, ids []string) error {
	for _, id := range ids {
		d, err := r.store.Device(ctx, id)
		switch {
		case errors.Is(err, hub.ErrNotFound):
			return fmt.Errorf("%w: split payee %q is not an enrolled device", hub.ErrInvalid, id)
		case err != nil:
			return fmt.Errorf("split payee %q: %w", id, err)
		case d.Status == hub.StatusRevoked:
			return fmt.Errorf("%w: split payee %s is revoked", hub.ErrInvalid, id)
		case !d.HasRole(hub.RoleProvider):
			return fmt.Errorf("%w: split payee %s has no provider role", hub.ErrInvalid, id)
		}
	}
	return nil
}
