package channel

import (
	"errors"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/m2mhub/m2mhub/msat"
)

func TestParamsValidate(t *testing.T) {
	device := mustKey(t, "d").PubKey()
	hub := mustKey(t, "h").PubKey()
	ok := Params{DeviceKey: device, HubKey: hub, Capacity: 100_000, Expiry: 800_000}
	if err := ok.Validate(); err != nil {
		t.Fatalf("OK: %v", err)
	}
	bad := map[string]func(p *Params){
		"NoDeviceKey":      func(p *Params) { p.DeviceKey = nil },
		"NoHubKey":         func(p *Params) { p.HubKey = nil },
		"SameKeys":         func(p *Params) { p.HubKey = p.DeviceKey },
		"CapacityReserve":  func(p *Params) { p.Capacity = Reserve },
		"CapacityTooLarge": func(p *Params) { p.Capacity = 21e14 + 1 },
		"ExpiryZero":       func(p *Params) { p.Expiry = 0 },
		"ExpiryIsTime":     func(p *Params) { p.Expiry = txscript.LockTimeThreshold },
	}
	for name, mutate := range bad {
		t.Run("ErrInvalidParams/"+name, func(t *testing.T) {
			p := ok
			mutate(&p)
			if err := p.Validate(); !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("Validate = %v, want ErrInvalidParams", err)
			}
			if _, err := NewOutput(p); !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("NewOutput = %v, want ErrInvalidParams", err)
			}
		})
	}
}

func TestOutputShape(t *testing.T) {
	p := mustParty(t, "shape", 100_000, 800_000)
	o := p.out

	t.Run("InternalKeyIsSortedMuSig2Aggregate", func(t *testing.T) {
		for _, keys := range [][2]int{{0, 1}, {1, 0}} {
			pubs := []*btcec.PublicKey{p.device.PubKey(), p.hub.PubKey()}
			agg, _, _, err := musig2.AggregateKeys([]*btcec.PublicKey{pubs[keys[0]], pubs[keys[1]]}, true)
			if err != nil {
				t.Fatal(err)
			}
			if !agg.PreTweakedKey.IsEqual(o.InternalKey()) {
				t.Fatalf("internal key differs from sorted aggregate (order %v)", keys)
			}
		}
	})

	t.Run("PkScriptCommitsToTapTree", func(t *testing.T) {
		want := txscript.ComputeTaprootOutputKey(o.InternalKey(), o.ScriptRoot())
		if !want.IsEqual(o.OutputKey()) {
			t.Fatal("output key is not internal key tweaked by script root")
		}
		if !txscript.IsPayToTaproot(o.PkScript()) || len(o.PkScript()) != 34 {
			t.Fatalf("pkScript %x is not P2TR", o.PkScript())
		}
	})

	t.Run("ControlBlocksProveLeaves", func(t *testing.T) {
		for name, c := range map[string]struct {
			cb   []byte
			leaf txscript.TapLeaf
		}{
			"claim":  {o.ClaimControlBlock(), o.ClaimLeaf()},
			"refund": {o.RefundControlBlock(), o.RefundLeaf()},
		} {
			cb, err := txscript.ParseControlBlock(c.cb)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := txscript.VerifyTaprootLeafCommitment(cb, o.PkScript()[2:], c.leaf.Script); err != nil {
				t.Fatalf("%s: leaf commitment: %v", name, err)
			}
		}
	})

	t.Run("Scripts", func(t *testing.T) {
		claim, err := txscript.DisasmString(o.ClaimLeaf().Script)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(claim, "OP_CHECKSIG") || !strings.Contains(claim, "OP_CHECKSIGVERIFY") {
			t.Fatalf("claim script %q", claim)
		}
		refund, err := txscript.DisasmString(o.RefundLeaf().Script)
		if err != nil {
			t.Fatal(err)
		}
		// 800000 = 0x0c3500 as a little-endian script number.
		if !strings.HasPrefix(refund, "00350c OP_CHECKLOCKTIMEVERIFY OP_DROP ") {
			t.Fatalf("refund script %q", refund)
		}
	})

	t.Run("Address", func(t *testing.T) {
		for net, prefix := range map[*chaincfg.Params]string{
			&chaincfg.MainNetParams:       "bc1p",
			&chaincfg.RegressionNetParams: "bcrt1p",
		} {
			addr, err := o.Address(net)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(addr.EncodeAddress(), prefix) {
				t.Fatalf("address %s, want prefix %s", addr.EncodeAddress(), prefix)
			}
			script, err := txscript.PayToAddrScript(addr)
			if err != nil {
				t.Fatal(err)
			}
			if string(script) != string(o.PkScript()) {
				t.Fatal("address does not pay to PkScript")
			}
		}
	})

	t.Run("NextKeepsScript", func(t *testing.T) {
		next, err := o.Next(12_345_678)
		if err != nil {
			t.Fatal(err)
		}
		if string(next.PkScript()) != string(o.PkScript()) {
			t.Fatal("next channel output has a different script")
		}
		if got, want := next.Params().Capacity, o.Params().Capacity-12_345; got != want {
			t.Fatalf("next capacity %d, want %d", got, want)
		}
		if _, err := o.Next(o.Params().MaxPaid() + 1); !errors.Is(err, ErrOverCapacity) {
			t.Fatalf("Next over max = %v, want ErrOverCapacity", err)
		}
	})

	t.Run("KeyOrderMatters", func(t *testing.T) {
		// Swapping roles keeps the internal key but must change the
		// output: the claim and refund leaves name who is who.
		swapped, err := NewOutput(Params{
			DeviceKey: p.hub.PubKey(), HubKey: p.device.PubKey(),
			Capacity: o.Params().Capacity, Expiry: o.Params().Expiry,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !swapped.InternalKey().IsEqual(o.InternalKey()) {
			t.Fatal("internal key depends on key order")
		}
		if string(swapped.PkScript()) == string(o.PkScript()) {
			t.Fatal("swapping device and hub gives the same output")
		}
	})

	if got := o.Params().MaxPaid(); got != msat.Amount(99_670_000) {
		t.Fatalf("MaxPaid %d", got)
	}
}
