package m2mclient

import (
	"bytes"
	"context"
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// CloseChannel closes the channel cooperatively: the hub proposes a
// transaction spending the channel by its MuSig2 key path, paying the
// device its share (capacity − paid) to destScript; the device checks it
// before signing (one input, the channel; the device output exact, or short
// by at most MaxCloseFee when the hub's own share cannot cover the fee),
// then sends its partial signature. The hub signs last, combines, and
// broadcasts (docs/protocol.md §2.7). CloseChannel waits for the hub's
// ChannelClosed and returns the close transaction without its witness (its
// txid, which names it on chain, is final).
//
// The device records the close and its partial signature before it sends
// CloseSign. A close whose connection dropped after that is resumed: the
// device sends its CloseSign again at every reconnect, and CloseChannel
// called again on the closing channel sends it and waits for ChannelClosed
// (destScript is then ignored). When the hub no longer knows the attempt
// (a *ChannelError with CodeCloseUnknown: it restarted, or CloseTimeout
// passed), nothing can spend the channel with that signature, so the
// device marks the channel ready again and CloseChannel may be called
// anew.
//
// Errors: ErrUnknownChannel, ErrNotReady, ErrBadProposal, *ChannelError
// (errors.Is: ErrHoldActive while holds are active, ErrCreditOwed while
// service given on credit is unpaid; neither is worth retrying before that
// changes), or a transport or context error.
func (d *Device) CloseChannel(ctx context.Context, chanID btcwire.OutPoint, destScript []byte) (*btcwire.MsgTx, error) {
	if len(destScript) == 0 || len(destScript) > wire.MaxPkScriptSize {
		return nil, fmt.Errorf("m2mclient: close: destination script of %d bytes", len(destScript))
	}
	c, err := d.channel(chanID)
	if err != nil {
		return nil, err
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	status, hasPending, resumable := c.st.Status, c.st.Pending != nil, c.st.CloseSig != nil
	c.mu.Unlock()
	if status == StatusClosing && resumable {
		return d.resumeClose(ctx, c)
	}
	if status != StatusReady {
		return nil, fmt.Errorf("%w: channel is %s", ErrNotReady, status)
	}
	if hasPending {
		if err := d.resync(ctx, c); err != nil {
			return nil, fmt.Errorf("m2mclient: resolving the pending payment: %w", err)
		}
	}
	c.mu.Lock()
	st := c.st.clone()
	c.mu.Unlock()

	// A fresh session, hence fresh nonces, for every attempt: a nonce
	// used for two different messages leaks the key.
	ks, err := c.out.NewKeySession(d.cfg.Key)
	if err != nil {
		return nil, err
	}
	ch, done := d.w.add(waitKey{kind: 'c', chanID: chanID})
	defer done()
	req := &wire.CloseRequest{ChanID: chanID, PkScript: destScript, DeviceNonce: ks.PublicNonce()}
	if err := d.send(ctx, req); err != nil {
		return nil, fmt.Errorf("m2mclient: close: %w", err)
	}
	var prop *wire.CloseProposal
	for prop == nil {
		msg, err := d.await(ctx, ch)
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *wire.ChannelError:
			if m.Seq != nil || m.HoldID != nil {
				continue // about a payment or a hold on the channel
			}
			return nil, asError(m)
		case *wire.CloseProposal:
			prop = m
		}
	}

	tx := new(btcwire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(prop.Tx)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadProposal, err)
	}
	if err := d.checkProposal(tx, st, destScript); err != nil {
		return nil, err
	}
	prev := c.out.TxOut()
	fetcher := txscript.NewCannedPrevOutputFetcher(prev.PkScript, prev.Value)
	sigHash, err := channel.KeySpendSigHash(tx, 0, fetcher, nil, txscript.SigHashDefault)
	if err != nil {
		return nil, err
	}
	ours, err := ks.Sign(sigHash, prop.HubNonce)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadProposal, err)
	}

	// Record the close before releasing the signature: from now on the
	// hub can complete and broadcast it, and no further payment may be
	// signed. The partial signature and the transaction are kept, so a
	// close whose CloseSign or ChannelClosed is lost resumes.
	txid := tx.TxHash()
	var psig [32]byte
	ours.S.PutBytes(&psig)
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.st.Status, c.st.CloseTx, c.st.CloseSig, c.st.CloseRaw = StatusClosing, &txid, &psig, raw.Bytes()
	err = d.save(ctx, c)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := d.send(ctx, &wire.CloseSign{ChanID: chanID, DevicePartialSig: psig}); err != nil {
		return tx, fmt.Errorf("m2mclient: close: %w", err)
	}
	return tx, d.awaitClosed(ctx, c, ch, txid)
}

// resumeClose sends a closing channel's CloseSign again and waits for the
// hub's ChannelClosed; c.op is held.
func (d *Device) resumeClose(ctx context.Context, c *devChannel) (*btcwire.MsgTx, error) {
	c.mu.Lock()
	chanID, txid, psig := c.st.Funding, *c.st.CloseTx, *c.st.CloseSig
	raw := bytes.Clone(c.st.CloseRaw)
	c.mu.Unlock()
	var tx *btcwire.MsgTx
	if len(raw) > 0 {
		tx = new(btcwire.MsgTx)
		if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("m2mclient: stored close of %v: %w", chanID, err)
		}
	}
	ch, done := d.w.add(waitKey{kind: 'c', chanID: chanID})
	defer done()
	if err := d.send(ctx, &wire.CloseSign{ChanID: chanID, DevicePartialSig: psig}); err != nil {
		return tx, fmt.Errorf("m2mclient: close: %w", err)
	}
	return tx, d.awaitClosed(ctx, c, ch, txid)
}

// resendCloseSigns sends the CloseSign of every channel still closing
// without waiting for the answers: the hub's ChannelClosed is recorded by
// markClosed. It runs at every connection.
func (d *Device) resendCloseSigns() {
	d.mu.Lock()
	all := make([]*devChannel, 0, len(d.byID))
	for _, c := range d.byID {
		all = append(all, c)
	}
	d.mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		closing := c.st.Status == StatusClosing && c.st.CloseSig != nil
		var m *wire.CloseSign
		if closing {
			m = &wire.CloseSign{ChanID: c.st.Funding, DevicePartialSig: *c.st.CloseSig}
		}
		c.mu.Unlock()
		if m == nil {
			continue
		}
		if err := d.send(d.ctx, m); err != nil {
			d.log.Info("resending close signature", "chan", m.ChanID, "err", err)
			return
		}
	}
}

// awaitClosed waits on ch for the hub's ChannelClosed of c's close txid.
func (d *Device) awaitClosed(ctx context.Context, c *devChannel, ch <-chan wire.Message, txid chainhash.Hash) error {
	for {
		msg, err := d.await(ctx, ch)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *wire.ChannelError:
			if m.Seq != nil || m.HoldID != nil {
				continue
			}
			if m.Code == wire.ChanCloseUnknown {
				d.reopenAfterLostClose(c)
			}
			return asError(m)
		case *wire.ChannelClosed:
			if m.Txid != txid {
				return fmt.Errorf("%w: hub closed with %s, device signed %s", ErrBadProposal, m.Txid, txid)
			}
			// dispatch already recorded the close.
			return nil
		}
	}
}

// onCloseUnknown handles a close-unknown refusal no call waited for (the
// answer to a CloseSign resent at reconnect).
func (d *Device) onCloseUnknown(m *wire.ChannelError) {
	if m.ChanID == nil {
		return
	}
	c, err := d.channel(*m.ChanID)
	if err != nil {
		return
	}
	d.reopenAfterLostClose(c)
}

// reopenAfterLostClose marks a closing channel ready again once the hub
// said it no longer knows the close attempt: the hub signs last, so the
// device's partial signature alone spends nothing, and the channel goes on
// from its latest state.
func (d *Device) reopenAfterLostClose(c *devChannel) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Status != StatusClosing || c.st.CloseSig == nil {
		return
	}
	c.st.Status, c.st.CloseTx, c.st.CloseSig, c.st.CloseRaw = StatusReady, nil, nil, nil
	if err := d.save(d.ctx, c); err != nil {
		d.log.Error("saving a channel reopened after a lost close", "chan", c.st.Funding, "err", err)
		return
	}
	d.log.Info("hub no longer knows the close attempt; channel ready again", "chan", c.st.Funding)
}

// checkProposal checks the hub's close transaction before the device signs
// it (docs/protocol.md §2.7): version 2, lock time 0, one final input
// spending the channel, and the device paid capacity − floor(paid) to
// destScript, less at most MaxCloseFee when the hub's share is too small to
// pay the fee (then the hub takes no output). A lock time or a relative
// lock (BIP 68 applies to a version 2 input without sequence 0xffffffff)
// would keep the device's money out of reach, so neither is signed.
func (d *Device) checkProposal(tx *btcwire.MsgTx, st *ChannelState, dest []byte) error {
	if len(tx.TxIn) != 1 || tx.TxIn[0].PreviousOutPoint != st.Funding {
		return fmt.Errorf("%w: must spend exactly the channel output", ErrBadProposal)
	}
	if tx.Version != channel.TxVersion || tx.LockTime != 0 || tx.TxIn[0].Sequence != btcwire.MaxTxInSequenceNum {
		return fmt.Errorf("%w: version %d, lock time %d, sequence %#x; want %d, 0, %#x", ErrBadProposal,
			tx.Version, tx.LockTime, tx.TxIn[0].Sequence, channel.TxVersion, uint32(btcwire.MaxTxInSequenceNum))
	}
	owed := st.Capacity - st.Paid.ToSatoshis()
	var mine, others btcutil.Amount
	found := 0
	for _, out := range tx.TxOut {
		if bytes.Equal(out.PkScript, dest) {
			mine += btcutil.Amount(out.Value)
			found++
		} else {
			others += btcutil.Amount(out.Value)
		}
	}
	switch {
	case found != 1:
		return fmt.Errorf("%w: %d outputs pay the device's script, want 1", ErrBadProposal, found)
	case len(tx.TxOut) > 2:
		return fmt.Errorf("%w: %d outputs", ErrBadProposal, len(tx.TxOut))
	case mine > owed:
		// More than owed is the hub's loss, but a hub that pays more
		// than its records say is one whose records are wrong.
		return fmt.Errorf("%w: pays the device %d sat, owed %d sat", ErrBadProposal, mine, owed)
	case len(tx.TxOut) == 2 && mine != owed:
		return fmt.Errorf("%w: pays the device %d sat, owed %d sat", ErrBadProposal, mine, owed)
	case owed-mine > d.cfg.MaxCloseFee:
		return fmt.Errorf("%w: device pays %d sat of fee, limit %d sat", ErrBadProposal, owed-mine, d.cfg.MaxCloseFee)
	case mine+others > st.Capacity:
		return fmt.Errorf("%w: outputs exceed the capacity", ErrBadProposal)
	}
	return nil
}
