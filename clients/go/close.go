package m2mclient

import (
	"bytes"
	"context"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/lnwire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// CloseChannel closes the channel cooperatively: the hub proposes a
// transaction spending the channel by its MuSig2 key path, paying the
// device its share (capacity − paid) to destScript; the device checks it
// before signing (one input, the channel; the device output exact, or short
// by at most MaxCloseFee when the hub's own share cannot cover the fee), then
// both sign with fresh nonces. It waits for the hub's ChannelClosed and
// returns the fully signed transaction, which the device may broadcast
// itself too. (Close, without arguments, stops the Device.)
//
// The device records the close, its partial signature and the signed
// transaction before it sends CloseSign. A close whose connection dropped
// after that is resumed: the device sends its CloseSign again at every
// reconnect, and CloseChannel called again on the closing channel sends it
// and waits for ChannelClosed (destScript is then ignored). When the hub
// no longer knows the attempt (a *ChannelError with CodeCloseUnknown), the returned transaction
// is still valid: broadcast it.
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
		return nil, err
	}
	// Combining checks the hub's partial signature and yields the final
	// one, so the device ends up with a transaction it can broadcast
	// itself.
	var s btcec.ModNScalar
	if s.SetBytes(&prop.HubPartialSig) != 0 {
		return nil, fmt.Errorf("%w: hub partial signature out of range", ErrBadProposal)
	}
	final, err := ks.Combine(&musig2.PartialSignature{S: &s})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadProposal, err)
	}
	tx.TxIn[0].Witness = channel.KeySpendWitness(final, txscript.SigHashDefault)
	vm, err := txscript.NewEngine(prev.PkScript, tx, 0, txscript.StandardVerifyFlags,
		nil, txscript.NewTxSigHashes(tx, fetcher), prev.Value, fetcher)
	if err == nil {
		err = vm.Execute()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: signed close does not verify: %w", ErrBadProposal, err)
	}

	// Record the close before releasing the signature: from now on the
	// hub can broadcast it, and no further payment may be signed. The
	// partial signature and the signed transaction are kept, so a close
	// whose CloseSign or ChannelClosed is lost resumes.
	txid := tx.TxHash()
	var psig [32]byte
	ours.S.PutBytes(&psig)
	var signed bytes.Buffer
	if err := tx.Serialize(&signed); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.st.Status, c.st.CloseTx, c.st.CloseSig, c.st.CloseSigned = StatusClosing, &txid, &psig, signed.Bytes()
	err = d.save(ctx, c)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := d.send(ctx, &wire.CloseSign{ChanID: chanID, DevicePartialSig: psig}); err != nil {
		return tx, fmt.Errorf("m2mclient: close: %w", err)
	}
	return tx, d.awaitClosed(ctx, ch, txid)
}

// resumeClose sends a closing channel's CloseSign again and waits for the
// hub's ChannelClosed; c.op is held.
func (d *Device) resumeClose(ctx context.Context, c *devChannel) (*btcwire.MsgTx, error) {
	c.mu.Lock()
	chanID, txid, psig := c.st.Funding, *c.st.CloseTx, *c.st.CloseSig
	raw := bytes.Clone(c.st.CloseSigned)
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
	return tx, d.awaitClosed(ctx, ch, txid)
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

// awaitClosed waits on ch for the hub's ChannelClosed of the close txid.
func (d *Device) awaitClosed(ctx context.Context, ch <-chan lnwire.Message, txid chainhash.Hash) error {
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
