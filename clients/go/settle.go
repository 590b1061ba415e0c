package m2mclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/m2mhub/m2mhub/msat"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement"
)

// ErrSettleRefused means the device refused a settlement proposal or a
// SettleDone that its records do not support; the hub is told
// "settle-refused" for a proposal. The wrapped text says which check
// failed.
var ErrSettleRefused = errors.New("m2mclient: settlement refused")

// CodeSettleRefused is the ChannelError code a device answers a
// settlement proposal it will not sign with.
const CodeSettleRefused = string(wire.ChanSettleRefused)

// subSat is the carry rule's bound (docs/settlement.md): an amount and its
// settled whole satoshis differ by less than one satoshi.
const subSat = 1000

// SettleProposal is a cooperative settlement the hub proposed for one of
// the device's channels, as DeviceConfig.OnSettle sees it once every check
// has passed.
type SettleProposal struct {
	Epoch  uint64
	ChanID btcwire.OutPoint
	// Capacity and Expiry are the current channel's terms.
	Capacity btcutil.Amount
	Expiry   uint32
	// NextCapacity and NextExpiry are the next channel's.
	NextCapacity btcutil.Amount
	NextExpiry   uint32
	// Spent and Earned are the hub's figures, checked against the
	// device's records.
	Spent, Earned msat.Amount
}

// signedSettle is what the device signed for a channel, remembered until
// SettleDone so that the switch can be checked against it. It holds no
// secret: the nonce was consumed by the signature.
type signedSettle struct {
	epoch        uint64
	nextCapacity btcutil.Amount
	nextExpiry   uint32
}

// onSettleProposal answers a SettleProposal: SettleSign when every check
// passes, ChannelError "settle-refused" otherwise.
func (d *Device) onSettleProposal(m *wire.SettleProposal) {
	ctx, cancel := context.WithTimeout(d.ctx, DefaultRequestTimeout)
	defer cancel()
	var reply wire.Message
	sig, err := d.signSettle(ctx, m)
	if err != nil {
		d.log.Warn("refusing settlement proposal", "chan", m.ChanID, "epoch", m.Epoch, "err", err)
		msg := err.Error()
		if len(msg) > wire.MaxErrorMessageSize {
			msg = msg[:wire.MaxErrorMessageSize]
		}
		chanID := m.ChanID
		reply = &wire.ChannelError{Code: wire.ChanSettleRefused, Message: msg, ChanID: &chanID}
	} else {
		reply = sig
	}
	if err := d.send(ctx, reply); err != nil {
		d.log.Warn("answering settlement proposal", "chan", m.ChanID, "err", err)
	}
}

// signSettle checks a proposal against the device's records and, when
// every check passes, partially signs the template with a fresh MuSig2
// session. It returns an error wrapping ErrSettleRefused when a check
// fails; nothing is signed then.
func (d *Device) signSettle(ctx context.Context, m *wire.SettleProposal) (*wire.SettleSign, error) {
	c, err := d.channel(m.ChanID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSettleRefused, err)
	}
	// Payments and closes on this channel wait, so the proposal is
	// checked against a state that does not move under it.
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	st, out := c.st.clone(), c.out
	c.mu.Unlock()
	if st.Status != StatusReady || st.Funding != m.ChanID {
		return nil, fmt.Errorf("%w: channel is %s", ErrSettleRefused, st.Status)
	}

	tx, err := d.checkSettleTemplate(st, m)
	if err != nil {
		return nil, err
	}
	var earned msat.Amount
	if d.cfg.Earnings != nil {
		if earned, err = d.cfg.Earnings(ctx, m.Epoch); err != nil {
			return nil, fmt.Errorf("%w: own earnings: %w", ErrSettleRefused, err)
		}
	}
	if err := checkSettleAmounts(st, m, earned); err != nil {
		return nil, err
	}
	if d.cfg.OnSettle != nil && !d.cfg.OnSettle(SettleProposal{
		Epoch: m.Epoch, ChanID: m.ChanID, Capacity: st.Capacity, Expiry: st.Expiry,
		NextCapacity: m.NextCapacity, NextExpiry: m.NextExpiry, Spent: m.Spent, Earned: m.Earned,
	}) {
		return nil, fmt.Errorf("%w: vetoed by the device", ErrSettleRefused)
	}

	// The input's value and script come from the device's own record of
	// the channel, not from the hub: the key-path digest commits to
	// them, so a template spending anything else yields a signature no
	// transaction can use.
	prev := out.TxOut()
	fetcher := txscript.NewCannedPrevOutputFetcher(prev.PkScript, prev.Value)
	sigHash, err := channel.KeySpendSigHash(tx, 0, fetcher, &txscript.TxSigHashes{}, settlement.CoopHashType)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSettleRefused, err)
	}
	// A fresh session per proposal, never stored: a nonce used for two
	// messages leaks the key, and a retried round is a new message.
	ks, err := out.NewKeySession(d.cfg.Key)
	if err != nil {
		return nil, err
	}
	psig, err := ks.Sign(sigHash, m.HubNonce)
	if err != nil {
		// An invalid hub nonce: refuse rather than guess.
		return nil, fmt.Errorf("%w: %w", ErrSettleRefused, err)
	}
	d.settleMu.Lock()
	d.settle[m.ChanID] = signedSettle{epoch: m.Epoch, nextCapacity: m.NextCapacity, nextExpiry: m.NextExpiry}
	d.settleMu.Unlock()
	reply := &wire.SettleSign{Epoch: m.Epoch, ChanID: m.ChanID, DeviceNonce: ks.PublicNonce()}
	psig.S.PutBytes(&reply.PartialSig)
	return reply, nil
}

// checkSettleTemplate parses the template and checks that it spends
// exactly the channel into exactly the next channel the proposal names:
// one input, the channel's outpoint with the claim sequence; one output,
// NextCapacity to the script of the same keys with NextCapacity and
// NextExpiry; version and lock time those of every claim; an expiry never
// shortened.
func (d *Device) checkSettleTemplate(st *ChannelState, m *wire.SettleProposal) (*btcwire.MsgTx, error) {
	tx := new(btcwire.MsgTx)
	r := bytes.NewReader(m.Template)
	if err := tx.Deserialize(r); err != nil || r.Len() != 0 {
		return nil, fmt.Errorf("%w: template does not parse (%v, %d bytes left)", ErrSettleRefused, err, r.Len())
	}
	if len(tx.TxIn) != 1 || len(tx.TxOut) != 1 {
		return nil, fmt.Errorf("%w: template has %d inputs and %d outputs, want 1 and 1",
			ErrSettleRefused, len(tx.TxIn), len(tx.TxOut))
	}
	if m.NextExpiry < st.Expiry {
		return nil, fmt.Errorf("%w: next expiry %d shortens %d", ErrSettleRefused, m.NextExpiry, st.Expiry)
	}
	next := st.Params(d.cfg.Key.PubKey())
	next.Capacity, next.Expiry = m.NextCapacity, m.NextExpiry
	nextOut, err := channel.NewOutput(next)
	if err != nil {
		return nil, fmt.Errorf("%w: next channel: %w", ErrSettleRefused, err)
	}
	if err := settlement.VerifyOwnOutput(tx, 0, st.Funding, int64(m.NextCapacity), nextOut.PkScript()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSettleRefused, err)
	}
	return tx, nil
}

// checkSettleAmounts checks the proposal's figures against the device's
// records (docs/protocol.md, "Settlement"): Spent is the acknowledged Paid
// of the channel (or the Paid of the payment signed and not yet
// acknowledged, which the hub may hold), Earned what the device earned,
// each within the sub-satoshi carry; and the capacity change is the net,
// rounded toward zero after a carried remainder of less than one satoshi,
// by the device's figures and by the hub's alike.
func checkSettleAmounts(st *ChannelState, m *wire.SettleProposal, earned msat.Amount) error {
	paid := st.Paid
	if st.Pending != nil && msatDist(m.Spent, st.Pending.Paid) < msatDist(m.Spent, paid) {
		paid = st.Pending.Paid
	}
	switch {
	case msatDist(m.Spent, paid) >= subSat:
		return fmt.Errorf("%w: hub says %d msat spent, device paid %d msat", ErrSettleRefused, uint64(m.Spent), uint64(paid))
	case msatDist(m.Earned, earned) >= subSat:
		return fmt.Errorf("%w: hub says %d msat earned, device counts %d msat", ErrSettleRefused, uint64(m.Earned), uint64(earned))
	}
	moved := m.NextCapacity - st.Capacity
	floor := -(st.Capacity - channel.Reserve - 1)
	for _, net := range []settlement.Msat{
		settlement.MsatOf(earned) - settlement.MsatOf(paid),
		settlement.MsatOf(m.Earned) - settlement.MsatOf(m.Spent),
	} {
		lo, _ := (net - (subSat - 1)).Split()
		hi, _ := (net + (subSat - 1)).Split()
		lo, hi = max(lo, floor), max(hi, floor)
		if moved < lo || moved > hi {
			return fmt.Errorf("%w: next capacity %d sat moves %d sat, net %d msat allows %d..%d sat",
				ErrSettleRefused, m.NextCapacity, moved, int64(net), lo, hi)
		}
	}
	return nil
}

func msatDist(a, b msat.Amount) msat.Amount {
	if a > b {
		return a - b
	}
	return b - a
}

// onSettleDone switches the channel to its next outpoint once the hub
// reports the settlement broadcast, keeping the old channel's record as a
// closed channel (closed by Txid) so History still finds it.
func (d *Device) onSettleDone(m *wire.SettleDone) {
	if err := d.settleDone(d.ctx, m); err != nil {
		d.log.Error("not following the hub's settlement", "chan", m.ChanID, "epoch", m.Epoch, "err", err)
	}
}

func (d *Device) settleDone(ctx context.Context, m *wire.SettleDone) error {
	c, err := d.channel(m.ChanID)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSettleRefused, err)
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if st.Status == StatusClosed && st.CloseTx != nil && *st.CloseTx == m.Txid {
		return nil // already switched: a repeated notice
	}
	if st.Status != StatusReady || st.Funding != m.ChanID {
		return fmt.Errorf("%w: channel is %s", ErrSettleRefused, st.Status)
	}
	if m.NextOutpoint.Hash != m.Txid {
		return fmt.Errorf("%w: next outpoint %v is not an output of %s", ErrSettleRefused, m.NextOutpoint, m.Txid)
	}
	d.settleMu.Lock()
	signed, ok := d.settle[m.ChanID]
	d.settleMu.Unlock()
	if err := checkSettleDone(st, m, signed, ok && signed.epoch == m.Epoch); err != nil {
		return err
	}
	next := st.Params(d.cfg.Key.PubKey())
	next.Capacity, next.Expiry = m.NextCapacity, m.NextExpiry
	nextOut, err := channel.NewOutput(next)
	if err != nil {
		return fmt.Errorf("%w: next channel: %w", ErrSettleRefused, err)
	}

	// The old channel's last state stays on record as a channel closed by
	// the settlement, under a key derived from the live record's.
	old := st.clone()
	txid := m.Txid
	old.PendingID = settledKey(st.PendingID, st.Funding)
	old.Status, old.CloseTx, old.Pending = StatusClosed, &txid, nil

	// The live record moves first, in one Save: a crash before the
	// history is written loses only the duplicate of the old state (its
	// receipts stay in the store under the old outpoint), never the
	// switch. Holds stay reserved: the device signed them and still pays
	// their captures within their bounds.
	cur := *st.clone()
	cur.Funding, cur.Capacity, cur.Expiry = m.NextOutpoint, m.NextCapacity, m.NextExpiry
	cur.Seq, cur.Paid, cur.Sig, cur.Pending, cur.CloseTx = 0, 0, [64]byte{}, nil, nil
	cur.Status = StatusReady
	if err := d.cfg.Store.Save(context.WithoutCancel(ctx), cur); err != nil {
		return err
	}
	hist := &devChannel{st: old, out: c.out}
	*c.st, c.out = cur, nextOut
	if err := d.cfg.Store.Save(context.WithoutCancel(ctx), *old); err != nil {
		d.log.Error("saving the settled channel's history", "chan", m.ChanID, "err", err)
	}
	d.mu.Lock()
	d.chans[old.PendingID] = hist
	d.byID[m.ChanID] = hist
	d.byID[m.NextOutpoint] = c
	d.mu.Unlock()
	d.settleMu.Lock()
	delete(d.settle, m.ChanID)
	d.settleMu.Unlock()
	d.log.Info("channel settled", "old", m.ChanID, "new", m.NextOutpoint,
		"capacity", m.NextCapacity, "expiry", m.NextExpiry, "tx", m.Txid)
	return nil
}

// checkSettleDone accepts the hub's report of the channel's next output
// when it is one the device agreed to: the terms it signed in this epoch's
// proposal; or, without one, the claim's next output (capacity − PaidSat of
// the acknowledged or the pending state, same expiry), which is what the
// hub settles an absent device with; or, when the device restarted after
// signing and forgot what it signed, terms it would have signed from its
// own records, counting no earnings (it never accepts less).
func checkSettleDone(st *ChannelState, m *wire.SettleDone, signed signedSettle, haveSigned bool) error {
	if haveSigned {
		if m.NextCapacity != signed.nextCapacity || m.NextExpiry != signed.nextExpiry {
			return fmt.Errorf("%w: hub reports %d sat expiring at %d, device signed %d sat expiring at %d",
				ErrSettleRefused, m.NextCapacity, m.NextExpiry, signed.nextCapacity, signed.nextExpiry)
		}
		return nil
	}
	claims := []msat.Amount{st.Paid}
	if st.Pending != nil {
		claims = append(claims, st.Pending.Paid)
	}
	for _, paid := range claims {
		if m.NextExpiry == st.Expiry && m.NextCapacity == st.Capacity-paid.ToSatoshis() {
			return nil
		}
	}
	paid := st.Paid
	if st.Pending != nil {
		paid = st.Pending.Paid
	}
	lo, _ := (-settlement.MsatOf(paid) - (subSat - 1)).Split()
	if m.NextExpiry >= st.Expiry && m.NextCapacity-st.Capacity >= lo {
		return nil
	}
	return fmt.Errorf("%w: hub reports %d sat expiring at %d; the device signed no such channel",
		ErrSettleRefused, m.NextCapacity, m.NextExpiry)
}

// settledKey names the record of a settled channel: the live record keeps
// the channel's pending id (its hub key derives from it), so its history
// needs a key of its own, derived so a repeated notice finds the same one.
func settledKey(pendingID [32]byte, funding btcwire.OutPoint) [32]byte {
	h := sha256.New()
	h.Write([]byte("m2mhub/settled"))
	h.Write(pendingID[:])
	h.Write(funding.Hash[:])
	_ = binary.Write(h, binary.BigEndian, funding.Index)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}
