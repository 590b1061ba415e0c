package channel

import (
	"bytes"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"
	"pgregory.net/rapid"
)

func TestCheckUpdate(t *testing.T) {
	id := wire.OutPoint{Hash: chainhash.HashH([]byte("c")), Index: 0}
	p := Params{Capacity: 10_330} // MaxPaid is 10,000 sat
	cur := State{ChannelID: id, Seq: 5, Paid: 5_000_000}
	cases := map[string]struct {
		next State
		want error
	}{
		"OK":               {State{id, 6, 5_000_001}, nil},
		"OKSamePaid":       {State{id, 6, 5_000_000}, nil},
		"OKMaxPaid":        {State{id, 6, 10_000_000}, nil},
		"ErrStaleState":    {State{id, 5, 6_000_000}, ErrStaleState},
		"ErrStaleOld":      {State{id, 1, 1_000}, ErrStaleState},
		"ErrSeqGap":        {State{id, 7, 6_000_000}, ErrSeqGap},
		"ErrPaidDecreased": {State{id, 6, 4_999_999}, ErrPaidDecreased},
		"ErrOverCapacity":  {State{id, 6, 10_000_001}, ErrOverCapacity},
		"ErrWrongChannel":  {State{wire.OutPoint{Hash: id.Hash, Index: 1}, 6, 5_000_000}, ErrWrongChannel},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := p.CheckUpdate(cur, c.next)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("CheckUpdate = %v, want %v", err, c.want)
			}
		})
	}
}

// TestCheckUpdateProperties drives one channel through random sequences of
// honest payments, replays, reorderings, gaps, decreases, overdrafts and
// arbitrary garbage, and checks after every step that the accepted history
// only moves forward (I4) and never leaves more than 1 sat of credit (I1).
func TestCheckUpdateProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		p := Params{Capacity: btcutil.Amount(rapid.Int64Range(int64(Reserve)+1, 50_000_000).Draw(rt, "capacity"))}
		max := p.MaxPaid()
		id := wire.OutPoint{Hash: chainhash.HashH([]byte("prop")), Index: 3}
		cur := Initial(id)
		accepted := []State{cur}

		// offer submits next and checks the verdict against want (nil:
		// must be accepted).
		offer := func(rt *rapid.T, next State, want error) {
			err := p.CheckUpdate(cur, next)
			switch {
			case want == nil && err != nil:
				rt.Fatalf("honest update %+v after %+v refused: %v", next, cur, err)
			case want != nil && !errors.Is(err, want):
				rt.Fatalf("update %+v after %+v: got %v, want %v", next, cur, err, want)
			case err == nil:
				cur = next
				accepted = append(accepted, next)
			}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"pay": func(rt *rapid.T) {
				delta := rapid.Uint64Range(0, uint64(max-cur.Paid)).Draw(rt, "delta")
				offer(rt, State{id, cur.Seq + 1, cur.Paid + msat.Amount(delta)}, nil)
			},
			"replay": func(rt *rapid.T) {
				old := rapid.SampledFrom(accepted).Draw(rt, "old")
				// A replay may even claim to pay more: still stale.
				old.Paid = max
				offer(rt, old, ErrStaleState)
			},
			"reorder": func(rt *rapid.T) {
				if cur.Paid == max {
					return
				}
				a := State{id, cur.Seq + 1, cur.Paid + 1}
				b := State{id, cur.Seq + 2, a.Paid + 1}
				if b.Paid > max {
					b.Paid = max
				}
				offer(rt, b, ErrSeqGap) // second arrives first
				offer(rt, a, nil)
				offer(rt, b, nil)
				offer(rt, a, ErrStaleState) // first arrives again
			},
			"gap": func(rt *rapid.T) {
				skip := rapid.Uint64Range(2, 1<<40).Draw(rt, "skip")
				offer(rt, State{id, cur.Seq + skip, cur.Paid}, ErrSeqGap)
			},
			"decrease": func(rt *rapid.T) {
				if cur.Paid == 0 {
					return
				}
				less := rapid.Uint64Range(0, uint64(cur.Paid)-1).Draw(rt, "less")
				offer(rt, State{id, cur.Seq + 1, msat.Amount(less)}, ErrPaidDecreased)
			},
			"overdraw": func(rt *rapid.T) {
				over := rapid.Uint64Range(uint64(max)+1, 1<<62).Draw(rt, "over")
				offer(rt, State{id, cur.Seq + 1, msat.Amount(over)}, ErrOverCapacity)
			},
			"otherChannel": func(rt *rapid.T) {
				other := id
				other.Index = rapid.Uint32Range(4, 1<<31).Draw(rt, "index")
				offer(rt, State{other, cur.Seq + 1, cur.Paid}, ErrWrongChannel)
			},
			"garbage": func(rt *rapid.T) {
				next := State{
					ChannelID: id,
					Seq:       rapid.Uint64Range(0, cur.Seq+3).Draw(rt, "seq"),
					Paid:      msat.Amount(rapid.Uint64Range(0, uint64(max)+2000).Draw(rt, "paid")),
				}
				legal := next.Seq == cur.Seq+1 && next.Paid >= cur.Paid && next.Paid <= max
				err := p.CheckUpdate(cur, next)
				if legal != (err == nil) {
					rt.Fatalf("update %+v after %+v: legal %v, got %v", next, cur, legal, err)
				}
				if err == nil {
					cur = next
					accepted = append(accepted, next)
				}
			},
			"": func(rt *rapid.T) {
				for i := 1; i < len(accepted); i++ {
					prev, s := accepted[i-1], accepted[i]
					if s.Seq != prev.Seq+1 || s.Paid < prev.Paid || s.Paid > max {
						rt.Fatalf("history step %d: %+v after %+v", i, s, prev)
					}
				}
				if cur != accepted[len(accepted)-1] || cur.Seq != uint64(len(accepted)-1) {
					rt.Fatalf("current %+v is not the last of %d accepted", cur, len(accepted))
				}
				if cur.Credit() >= 1000 {
					rt.Fatalf("credit %d msat", cur.Credit())
				}
			},
		})
	})
}

func TestStateEncoding(t *testing.T) {
	s := State{
		ChannelID: wire.OutPoint{Hash: chainhash.HashH([]byte("enc")), Index: 0x01020304},
		Seq:       0x0a0b0c0d0e0f1011,
		Paid:      0x1213141516171819,
	}
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != StateSize || !bytes.Equal(b[32:], []byte{
		1, 2, 3, 4,
		0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11,
		0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19,
	}) {
		t.Fatalf("encoding %x", b)
	}
	var got State
	if err := got.UnmarshalBinary(b); err != nil || got != s {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if err := got.UnmarshalBinary(b[1:]); !errors.Is(err, ErrBadEncoding) {
		t.Fatalf("short state: %v, want ErrBadEncoding", err)
	}

	c := Claim{State: s}
	for i := range c.DeviceSig {
		c.DeviceSig[i] = byte(i)
	}
	cb, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var gotClaim Claim
	if err := gotClaim.UnmarshalBinary(cb); err != nil || gotClaim != c {
		t.Fatalf("claim round trip: %+v, %v", gotClaim, err)
	}
	if err := gotClaim.UnmarshalBinary(append(cb, 0)); !errors.Is(err, ErrBadEncoding) {
		t.Fatalf("long claim: %v, want ErrBadEncoding", err)
	}
}
