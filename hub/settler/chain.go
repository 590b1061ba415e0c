package settler

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/settlement"
)

// DecodeTxs parses a run's raw transactions.
func DecodeTxs(raw [][]byte) ([]*btcwire.MsgTx, error) {
	txs := make([]*btcwire.MsgTx, len(raw))
	for i, b := range raw {
		tx := new(btcwire.MsgTx)
		if err := tx.Deserialize(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("run transaction %d: %w", i, err)
		}
		txs[i] = tx
	}
	return txs, nil
}

// broadcast moves a signed run to broadcast: it derives each channel's
// next output from the stored transactions (input i's channel continues at
// output i), commits the run and the rollover in one write, then sends the
// transactions and tells the devices. A crash after the commit leaves a
// broadcast run whose transactions follow sends again; they are the same
// bytes, so the same txids.
func (s *Service) broadcast(ctx context.Context, r *settlement.Run) error {
	txs, err := DecodeTxs(r.Txs)
	if err != nil {
		return err
	}
	var pairs []hub.RolloverPair
	var devices []string
	for _, tx := range txs {
		txid := tx.TxHash()
		for i, in := range tx.TxIn {
			rec, err := s.cfg.Channels.Channel(ctx, in.PreviousOutPoint)
			if err != nil {
				return fmt.Errorf("channel of batch input %v: %w", in.PreviousOutPoint, err)
			}
			out, err := channelOutput(rec)
			if err != nil {
				return err
			}
			next := out.Params()
			next.Capacity = btcutilAmount(tx.TxOut[i].Value)
			nextOut, err := channel.NewOutput(next)
			if err != nil {
				return fmt.Errorf("next channel of %v: %w", rec.Funding, err)
			}
			if !bytes.Equal(nextOut.PkScript(), tx.TxOut[i].PkScript) {
				return fmt.Errorf("settler: output %d of %v is not the next channel of %v", i, txid, rec.Funding)
			}
			paid, err := s.paidAtCut(ctx, rec.Funding, r.Epoch)
			if err != nil {
				return err
			}
			pairs = append(pairs, hub.RolloverPair{
				Old: rec.Funding, Next: btcwire.OutPoint{Hash: txid, Index: uint32(i)},
				NextParams: next, PaidAtCut: paid,
			})
			devices = append(devices, rec.DeviceID)
		}
	}
	if err := r.Transition(settlement.RunBroadcast, s.clock.Now().UTC()); err != nil {
		return err
	}
	if _, err := s.cfg.Channels.Rollover(ctx, s.store, *r, pairs); err != nil {
		return fmt.Errorf("rollover of epoch %d: %w", r.Epoch.Number, err)
	}
	if err := s.after(*r); err != nil {
		return err
	}
	s.send(ctx, txs)
	for i, p := range pairs {
		s.cfg.Cosigners.Done(ctx, devices[i], Done{
			Epoch: r.Epoch.Number, Old: p.Old, Next: p.Next,
			NextCapacity: int64(p.NextParams.Capacity), NextExpiry: p.NextParams.Expiry, Txid: p.Next.Hash,
		})
	}
	s.told[r.Epoch.Number] = true
	s.log.Info("settlement broadcast", "epoch", r.Epoch.Number, "txs", len(txs), "channels", len(pairs))
	return nil
}

// tell tells the devices of a broadcast run that this process did not
// broadcast that their channels moved: input i of a batch continues at
// output i, whose channel record the rollover stored. Once per process;
// Cosigners keeps the notice until the device pays on its next channel.
func (s *Service) tell(ctx context.Context, r *settlement.Run, txs []*btcwire.MsgTx) error {
	for _, tx := range txs {
		txid := tx.TxHash()
		for i, in := range tx.TxIn {
			next := btcwire.OutPoint{Hash: txid, Index: uint32(i)}
			rec, err := s.cfg.Channels.Channel(ctx, next)
			if err != nil {
				return fmt.Errorf("next channel %v of epoch %d: %w", next, r.Epoch.Number, err)
			}
			s.cfg.Cosigners.Done(ctx, rec.DeviceID, Done{
				Epoch: r.Epoch.Number, Old: in.PreviousOutPoint, Next: next,
				NextCapacity: int64(rec.Capacity), NextExpiry: rec.Expiry, Txid: txid,
			})
		}
	}
	s.told[r.Epoch.Number] = true
	s.log.Info("settlement devices told of a run broadcast by another process", "epoch", r.Epoch.Number)
	return nil
}

// send broadcasts txs. A refusal is logged, not returned: the most common
// one is a transaction the node already has, and follow sends again
// whatever the node does not know.
func (s *Service) send(ctx context.Context, txs []*btcwire.MsgTx) {
	height, _ := s.cfg.Chain.BlockCount(ctx)
	for _, tx := range txs {
		txid, err := s.cfg.Chain.SendRawTransaction(ctx, tx)
		if err != nil {
			s.log.Info("settlement transaction not accepted", "txid", tx.TxHash(), "err", err)
			continue
		}
		if _, ok := s.sentAt[txid]; !ok {
			s.sentAt[txid] = uint32(height)
		}
	}
}

// follow watches the batches of recent runs: a broadcast run whose
// transactions all have Confirmations confirmations becomes confirmed; a
// transaction the node does not know is sent again; one waiting CPFPAfter
// blocks gets a fee-bumping child; a confirmed run whose transaction left
// the best chain (a reorg) goes back to broadcast and is sent again.
//
// Runs are read newest first, page by page, until a confirmed run older
// than the reorg watch: runs settle in epoch order, so every older one is
// settled and deep too. Empty runs have nothing on chain and are skipped,
// however many there are, so a broadcast run is never lost from view.
func (s *Service) follow(ctx context.Context) error {
	tip32, err := s.cfg.Chain.BlockCount(ctx)
	if err != nil {
		return err
	}
	tip := uint32(tip32)
	seen := 0
	for limit := 4; ; limit *= 2 {
		runs, err := s.store.Runs(ctx, limit)
		if err != nil {
			return err
		}
		for i := seen; i < len(runs); i++ {
			r := &runs[i]
			if r.State == settlement.RunConfirmed && r.ConfirmHeight+DefaultReorgWatch < tip {
				return nil
			}
			if r.State != settlement.RunBroadcast && r.State != settlement.RunConfirmed {
				continue
			}
			if err := s.followRun(ctx, r, tip); err != nil {
				return err
			}
		}
		if len(runs) < limit {
			return nil
		}
		seen = len(runs)
	}
}

func (s *Service) followRun(ctx context.Context, r *settlement.Run, tip uint32) error {
	txs, err := DecodeTxs(r.Txs)
	if err != nil {
		return err
	}
	if r.State == settlement.RunBroadcast && !s.told[r.Epoch.Number] {
		if err := s.tell(ctx, r, txs); err != nil {
			return err
		}
	}
	minConf := int64(-1)
	var missing []*btcwire.MsgTx
	for _, tx := range txs {
		txid := tx.TxHash()
		info, err := s.cfg.Chain.GetTx(ctx, txid)
		switch {
		case errors.Is(err, hub.ErrNotFound):
			missing = append(missing, tx)
			minConf = 0
			continue
		case err != nil:
			return err
		}
		if minConf < 0 || info.Confirmations < minConf {
			minConf = info.Confirmations
		}
		if info.Confirmations == 0 {
			if _, ok := s.sentAt[txid]; !ok {
				s.sentAt[txid] = tip
			}
			if _, done := s.bumped[txid]; !done && int64(tip) >= int64(s.sentAt[txid])+int64(s.cfg.CPFPAfter) {
				s.bump(ctx, tx, tip)
			}
		}
	}
	// A run with no transaction is empty, never broadcast; one read
	// back without any cannot be confirmed by the chain.
	confirmed := len(txs) > 0 && minConf >= int64(s.cfg.Confirmations)
	switch {
	case r.State == settlement.RunBroadcast && confirmed:
		r.ConfirmHeight = tip - uint32(minConf) + 1
		if err := s.transition(ctx, r, settlement.RunConfirmed); err != nil {
			return err
		}
		s.log.Info("settlement confirmed", "epoch", r.Epoch.Number, "height", r.ConfirmHeight)
	case r.State == settlement.RunConfirmed && !confirmed:
		// A reorg took the batch out of the best chain (or below the
		// depth we require). Never re-plan: the same transactions go
		// back to the mempool, and the channels already follow them.
		s.log.Warn("settlement unconfirmed by a reorg; rebroadcasting", "epoch", r.Epoch.Number,
			"confirmations", minConf)
		r.ConfirmHeight = 0
		if err := s.transition(ctx, r, settlement.RunBroadcast); err != nil {
			return err
		}
		s.send(ctx, txs)
		return nil
	}
	if len(missing) > 0 {
		s.send(ctx, missing)
	}
	return nil
}

// bump spends the hub's revenue output of tx in a child paying CPFPFeeRate
// for the child and its parent together, so a miner gets more for
// mining both. The batch itself never changes, so its txid, which every
// next channel's outpoint names, stays. The child's fee counts the
// parent's weight as if it paid nothing, which overpays a little and keeps
// the rule simple.
func (s *Service) bump(ctx context.Context, tx *btcwire.MsgTx, tip uint32) {
	txid := tx.TxHash()
	if s.cfg.RevenueKey == nil {
		return
	}
	idx := -1
	for i, out := range tx.TxOut {
		if bytes.Equal(out.PkScript, s.cfg.RevenueScript) {
			idx = i
		}
	}
	if idx < 0 {
		s.log.Warn("settlement stuck without a revenue output to bump", "txid", txid)
		s.bumped[txid] = nil
		return
	}
	prev := tx.TxOut[idx]
	child := btcwire.NewMsgTx(2)
	child.AddTxIn(btcwire.NewTxIn(&btcwire.OutPoint{Hash: txid, Index: uint32(idx)}, nil, nil))
	child.AddTxOut(btcwire.NewTxOut(0, bytes.Clone(s.cfg.RevenueScript)))
	const childWeight = 4*(4+4+1+1+(32+4+1+4)+(8+1+34)) + 2 + 1 + 1 + 65
	parentWeight := txWeight(tx)
	fee := s.cfg.CPFPFeeRate.Fee(parentWeight + childWeight)
	value := btcutilAmount(prev.Value) - fee
	if value < settlement.Dust(s.cfg.RevenueScript) {
		s.log.Warn("settlement revenue too small to bump", "txid", txid, "revenue", prev.Value, "fee", fee)
		s.bumped[txid] = nil
		return
	}
	child.TxOut[0].Value = int64(value)
	fetcher := txscript.NewCannedPrevOutputFetcher(prev.PkScript, prev.Value)
	hashes := txscript.NewTxSigHashes(child, fetcher)
	wit, err := txscript.TaprootWitnessSignature(child, hashes, 0, prev.Value, prev.PkScript,
		txscript.SigHashDefault, s.cfg.RevenueKey)
	if err != nil {
		s.log.Warn("settlement fee bump not signed", "txid", txid, "err", err)
		return
	}
	child.TxIn[0].Witness = wit
	if _, err := s.cfg.Chain.SendRawTransaction(ctx, child); err != nil {
		s.log.Warn("settlement fee bump refused", "txid", txid, "err", err)
		return
	}
	childID := child.TxHash()
	s.bumped[txid] = &childID
	s.log.Info("settlement fee bumped by CPFP", "txid", txid, "child", child.TxHash(), "fee", fee, "height", tip)
}

// Bumped returns the txid of the CPFP child this process sent for a batch
// transaction, and false when it sent none.
func (s *Service) Bumped(txid chainhash.Hash) (chainhash.Hash, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.bumped[txid]; c != nil {
		return *c, true
	}
	return chainhash.Hash{}, false
}

// txWeight is tx's weight: base size × 3 + total size.
func txWeight(tx *btcwire.MsgTx) int {
	return tx.SerializeSizeStripped()*3 + tx.SerializeSize()
}

// channelOutput derives the channel output of rec.
func channelOutput(rec hub.ChannelRecord) (*channel.Output, error) {
	dev, err := btcec.ParsePubKey(rec.DeviceKey[:])
	if err != nil {
		return nil, fmt.Errorf("channel device key: %w", err)
	}
	hk, err := btcec.ParsePubKey(rec.HubKey[:])
	if err != nil {
		return nil, fmt.Errorf("channel hub key: %w", err)
	}
	return channel.NewOutput(channel.Params{DeviceKey: dev, HubKey: hk, Capacity: rec.Capacity, Expiry: rec.Expiry})
}

// btcutilAmount converts an output value.
func btcutilAmount(v int64) btcutil.Amount { return btcutil.Amount(v) }
