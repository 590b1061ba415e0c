package channels

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// dustLimit is the smallest output the hub creates: the P2TR dust limit at
// the default dust relay fee, the same figure as channel.Reserve.
const dustLimit = channel.Reserve

// closeAttempt is one cooperative close negotiation. Its MuSig2 session,
// and with it the secret nonce, lives only here: never stored, never
// reused, dropped after one CloseSign or when the attempt times out. The
// hub signs last: until the device's partial signature arrives nobody
// holds a signature of tx, so an attempt that lapses leaves nothing that
// could spend the channel at its old state.
type closeAttempt struct {
	sess        *channel.KeySession
	tx          *btcwire.MsgTx
	sigHash     [32]byte
	deviceNonce [musig2.PubNonceSize]byte
	started     time.Time
}

// closeUnderWay reports whether a cooperative close of e is being
// negotiated. Payments wait for it: the close transaction pays the state
// it was built on, and a newer one would be lost.
func (c *Manager) closeUnderWay(e *chanEntry) bool {
	return e.closing != nil && c.clock.Now().Sub(e.closing.started) < c.cfg.CloseTimeout
}

// closeRequest answers a device's CloseRequest with the close transaction
// and the hub's nonce; the hub's partial signature waits for CloseSign.
func (c *Manager) closeRequest(ctx context.Context, s *session.Session, m *wire.CloseRequest) error {
	e, err := c.ownedEntry(ctx, s, m.ChanID)
	if err != nil {
		return err
	}
	defer e.unlock()
	switch {
	case e.rec.Status != hub.ChannelReady && e.rec.Status != hub.ChannelFrozen:
		return refuse(statusCode(e.rec.Status), "channel is %s", e.rec.Status)
	case len(e.holds) > 0:
		return refuse(wire.ChanHoldActive, "channel has %d active holds", len(e.holds))
	case e.rec.Owed > 0:
		return refuse(wire.ChanCreditOwed, "channel owes %d msat of unsigned credit; pay it first", uint64(e.rec.Owed))
	}
	if cls := txscript.GetScriptClass(m.PkScript); cls == txscript.NonStandardTy || cls == txscript.NullDataTy {
		return refuse(wire.ChanBadParams, "payout script is not a standard output script")
	}
	tx, err := c.closeTx(e, m.PkScript)
	if err != nil {
		return refuse(wire.ChanBadParams, "%v", err)
	}
	key, err := c.hubChannelKey(e.rec)
	if err != nil {
		return err
	}
	// A fresh session per attempt: a nonce signs once.
	sess, err := e.out.NewKeySession(key)
	if err != nil {
		return err
	}
	sigHash, err := channel.KeySpendSigHash(tx, 0, c.fundingFetcher(e), nil, txscript.SigHashDefault)
	if err != nil {
		return err
	}
	if _, err := musig2.AggregateNonces([][musig2.PubNonceSize]byte{sess.PublicNonce(), m.DeviceNonce}); err != nil {
		return refuse(wire.ChanBadParams, "device nonce: %v", err)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return err
	}
	prop := &wire.CloseProposal{ChanID: m.ChanID, Tx: raw.Bytes(), HubNonce: sess.PublicNonce()}
	e.closing = &closeAttempt{sess: sess, tx: tx, sigHash: sigHash, deviceNonce: m.DeviceNonce, started: c.clock.Now()}
	c.log.Info("cooperative close proposed", "channel", m.ChanID, "paid", e.rec.Paid)
	return s.Send(ctx, prop)
}

// ownedEntry returns s's channel op, locked; the caller unlocks it.
func (c *Manager) ownedEntry(ctx context.Context, s *session.Session, op btcwire.OutPoint) (*chanEntry, error) {
	e, err := c.entry(ctx, op)
	if errors.Is(err, hub.ErrNotFound) {
		return nil, refuse(wire.ChanUnknownChannel, "no channel %v", op)
	}
	if err != nil {
		return nil, err
	}
	e.lock()
	if e.rec.DeviceID != s.DeviceID() {
		e.unlock()
		return nil, refuse(wire.ChanNotOwner, "channel belongs to another device")
	}
	return e, nil
}

// closeTx builds the unsigned cooperative close: output 0 the device's
// share to its script, output 1 the hub's whole-satoshi share less the fee
// to the hub wallet. A hub share too small to pay the fee and stay above
// dust is dropped into the fee, and the device's output pays what the fee
// still lacks.
func (c *Manager) closeTx(e *chanEntry, deviceScript []byte) (*btcwire.MsgTx, error) {
	hubShare := e.state().PaidSat()
	devShare := e.rec.Capacity - hubShare
	tx := btcwire.NewMsgTx(channel.TxVersion)
	tx.AddTxIn(btcwire.NewTxIn(&e.rec.Funding, nil, nil))
	tx.AddTxOut(btcwire.NewTxOut(int64(devShare), bytes.Clone(deviceScript)))
	tx.AddTxOut(btcwire.NewTxOut(int64(hubShare), bytes.Clone(c.cfg.PayoutScript)))
	keySpend := btcwire.TxWitness{make([]byte, schnorr.SignatureSize)}
	fee := c.fee(tx, keySpend)
	if hubShare >= fee+dustLimit {
		tx.TxOut[1].Value = int64(hubShare - fee)
		return tx, nil
	}
	tx.TxOut = tx.TxOut[:1]
	fee = c.fee(tx, keySpend)
	if fee > hubShare {
		devShare -= fee - hubShare
	}
	if devShare < dustLimit {
		return nil, fmt.Errorf("the device's share %d sat cannot pay the fee %d sat", int64(devShare), int64(fee))
	}
	tx.TxOut[0].Value = int64(devShare)
	return tx, nil
}

// fee is FeeRate times tx's virtual size once input 0 carries a witness of
// w's shape.
func (c *Manager) fee(tx *btcwire.MsgTx, w btcwire.TxWitness) btcutil.Amount {
	cp := tx.Copy()
	cp.TxIn[0].Witness = w
	weight := int64(cp.SerializeSizeStripped()*3 + cp.SerializeSize())
	return c.cfg.FeeRate * btcutil.Amount((weight+3)/4)
}

// fundingFetcher knows the channel output, the only input of a close or
// claim.
func (c *Manager) fundingFetcher(e *chanEntry) txscript.PrevOutputFetcher {
	return txscript.NewCannedPrevOutputFetcher(e.out.PkScript(), int64(e.rec.Capacity))
}

// closeSign makes the hub's partial signature now that the device's is
// in, combines both, checks the signed close with btcd's script engine,
// records the channel closing with the transaction and broadcasts it.
func (c *Manager) closeSign(ctx context.Context, s *session.Session, m *wire.CloseSign) error {
	e, err := c.ownedEntry(ctx, s, m.ChanID)
	if err != nil {
		return err
	}
	defer e.unlock()
	if e.closing == nil && (e.rec.Status == hub.ChannelClosing || e.rec.Status == hub.ChannelClosed) && e.rec.CloseTx != nil {
		// A CloseSign sent again after a lost connection, whose first
		// copy closed the channel (or a close the hub made otherwise):
		// say how it closed again (docs/protocol.md §2.7).
		return s.Send(ctx, &wire.ChannelClosed{ChanID: m.ChanID, Txid: *e.rec.CloseTx})
	}
	if !c.closeUnderWay(e) {
		e.closing = nil
		return refuse(wire.ChanCloseUnknown, "no cooperative close is being negotiated")
	}
	attempt := e.closing
	e.closing = nil // one partial signature per attempt, right or wrong
	var sc btcec.ModNScalar
	if overflow := sc.SetBytes(&m.DevicePartialSig); overflow != 0 {
		return refuse(wire.ChanBadSignature, "partial signature out of range")
	}
	if _, err := attempt.sess.Sign(attempt.sigHash, attempt.deviceNonce); err != nil {
		return err
	}
	final, err := attempt.sess.Combine(&musig2.PartialSignature{S: &sc})
	if err != nil {
		return refuse(wire.ChanBadSignature, "partial signature does not verify")
	}
	attempt.tx.TxIn[0].Witness = channel.KeySpendWitness(final, txscript.SigHashDefault)
	// The close is fully signed: record it even if the device's session
	// ends meanwhile (a replaced session cancels its context).
	txid, err := c.broadcastClose(context.WithoutCancel(ctx), e, attempt.tx)
	if err != nil {
		return err
	}
	return s.Send(ctx, &wire.ChannelClosed{ChanID: m.ChanID, Txid: txid})
}

// broadcastClose verifies a fully signed spend of the channel, records the
// channel closing with it and then broadcasts it. e is locked. Recording
// comes first: a transaction that may be on the network while the record
// still says ready would let payments through that it does not pay. Once
// recorded, a failed broadcast is not the caller's to undo: the watcher
// sends the stored transaction again at every block until the node knows
// it (rebroadcastClose), and the error is only reported.
func (c *Manager) broadcastClose(ctx context.Context, e *chanEntry, tx *btcwire.MsgTx) (chainhash.Hash, error) {
	if err := verifySpend(tx, e.out.PkScript(), int64(e.rec.Capacity)); err != nil {
		return chainhash.Hash{}, fmt.Errorf("close of %v does not verify: %w", e.rec.Funding, err)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return chainhash.Hash{}, err
	}
	txid := tx.TxHash()
	rec := e.rec
	rec.CloseTx, rec.CloseRaw = &txid, raw.Bytes()
	rec, err := c.putStatus(ctx, rec, hub.ChannelClosing)
	if err != nil {
		return chainhash.Hash{}, err
	}
	e.rec = rec
	c.watchClosing(rec.Funding)
	c.closeHoldsLocked(ctx, e, hub.HoldReleased, wire.HoldChannelClosed)
	c.log.Info("channel closing", "channel", rec.Funding, "txid", txid, "paid", rec.Paid)
	if _, err := c.cfg.Chain.SendRawTransaction(ctx, tx); err != nil {
		c.log.Warn("broadcasting a recorded close failed; the watcher sends it again", "channel", rec.Funding, "txid", txid, "err", err)
	}
	return txid, nil
}

// verifySpend runs btcd's script engine on input 0 of tx, which spends
// value from pkScript.
func verifySpend(tx *btcwire.MsgTx, pkScript []byte, value int64) error {
	fetcher := txscript.NewCannedPrevOutputFetcher(pkScript, value)
	vm, err := txscript.NewEngine(pkScript, tx, 0, txscript.StandardVerifyFlags, nil,
		txscript.NewTxSigHashes(tx, fetcher), value, fetcher)
	if err != nil {
		return err
	}
	return vm.Execute()
}

// Claim spends channel op alone with the latest device signature through
// the claim leaf: output 0 is the device's next channel output exactly as
// the device signed it, output 1 the hub's share less the fee to the hub
// wallet. It broadcasts the claim, marks the channel closing and returns
// the txid. It returns ErrNotFound, ErrChannelState when the channel is not
// ready or frozen or a cooperative close is under way, and
// ErrNothingToClaim.
func (c *Manager) Claim(ctx context.Context, op btcwire.OutPoint) (chainhash.Hash, error) {
	e, err := c.entry(ctx, op)
	if err != nil {
		return chainhash.Hash{}, err
	}
	e.lock()
	defer e.unlock()
	if e.rec.Status != hub.ChannelReady && e.rec.Status != hub.ChannelFrozen || c.closeUnderWay(e) {
		return chainhash.Hash{}, fmt.Errorf("%w: channel %v is %s", ErrChannelState, op, e.rec.Status)
	}
	st := e.state()
	hubShare := st.PaidSat()
	if hubShare == 0 {
		return chainhash.Hash{}, fmt.Errorf("%w: channel %v paid %d msat", ErrNothingToClaim, op, uint64(st.Paid))
	}
	devSig, err := schnorr.ParseSignature(e.rec.DeviceSig[:])
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("stored claim signature of %v: %w", op, err)
	}
	tx := btcwire.NewMsgTx(channel.TxVersion)
	tx.LockTime = channel.ClaimLockTime
	if _, err := channel.AppendClaim(tx, e.out, st); err != nil {
		return chainhash.Hash{}, err
	}
	tx.AddTxOut(btcwire.NewTxOut(int64(hubShare), bytes.Clone(c.cfg.PayoutScript)))
	shape := e.out.ClaimWitness(devSig, make([]byte, schnorr.SignatureSize))
	fee := c.fee(tx, shape)
	if hubShare < fee+dustLimit {
		return chainhash.Hash{}, fmt.Errorf("%w: share %d sat, fee %d sat", ErrNothingToClaim, int64(hubShare), int64(fee))
	}
	tx.TxOut[1].Value = int64(hubShare - fee)
	key, err := c.hubChannelKey(e.rec)
	if err != nil {
		return chainhash.Hash{}, err
	}
	hubSig, err := e.out.SignClaimHub(tx, 0, c.fundingFetcher(e), nil, key, txscript.SigHashDefault)
	if err != nil {
		return chainhash.Hash{}, err
	}
	tx.TxIn[0].Witness = e.out.ClaimWitness(devSig, hubSig)
	txid, err := c.broadcastClose(ctx, e, tx)
	if err != nil {
		return chainhash.Hash{}, err
	}
	c.send(ctx, e.rec.DeviceID, &wire.ChannelClosed{ChanID: op, Txid: txid})
	return txid, nil
}
