//go:build unix

// Unix only: the hub's CPU time is read with getrusage, so the figure
// means something on a shared machine where wall time does not.

package settler_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	btcwire "github.com/btcsuite/btcd/wire"

	"github.com/m2mhub/m2mhub/channel"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/settlement"
)

// benchEpoch is a 10,000-channel epoch held in memory: the hub's identity
// key, each channel's record (as the store holds it) and, for the
// simulated devices, each device key.
type benchEpoch struct {
	hubKey *btcec.PrivateKey
	recs   []hub.ChannelRecord
	devs   []*btcec.PrivateKey
	in     settlement.PlanInput
}

func newBenchEpoch(b *testing.B, n int) *benchEpoch {
	b.Helper()
	hubKey, err := btcec.NewPrivateKey()
	if err != nil {
		b.Fatal(err)
	}
	rev, err := txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(hubKey.PubKey()))
	if err != nil {
		b.Fatal(err)
	}
	e := &benchEpoch{
		hubKey: hubKey, recs: make([]hub.ChannelRecord, n), devs: make([]*btcec.PrivateKey, n),
		in: settlement.PlanInput{RevenueScript: rev, FeeRate: 2000, Height: 1000, ExpiryMargin: 144},
	}
	for i := range n {
		dev, err := btcec.NewPrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		var pid [32]byte
		_, _ = rand.Read(pid[:])
		hubPub, err := channel.HubChannelPubKey(hubKey.PubKey(), channel.ChannelKeyTweak(dev.PubKey(), pid))
		if err != nil {
			b.Fatal(err)
		}
		p := channel.Params{DeviceKey: dev.PubKey(), HubKey: hubPub, Capacity: 100_000, Expiry: 5000}
		out, err := channel.NewOutput(p)
		if err != nil {
			b.Fatal(err)
		}
		var idx [4]byte
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		op := btcwire.OutPoint{Hash: chainhash.HashH(idx[:]), Index: uint32(i % 4)}
		e.devs[i] = dev
		e.recs[i] = hub.ChannelRecord{
			PendingID: pid, DeviceID: fmt.Sprintf("dev-%05d", i), DeviceKey: hub.PubKeyOf(dev.PubKey()),
			HubKey: hub.PubKeyOf(hubPub), Capacity: p.Capacity, Expiry: p.Expiry, Status: hub.ChannelReady, Funding: op,
		}
		e.in.Channels = append(e.in.Channels, settlement.ChannelInput{
			Participant: e.recs[i].DeviceID, Output: out, Funding: op, Net: -10_000_000, Cooperative: true,
		})
	}
	return e
}

// benchJob is one cooperative input through the round.
type benchJob struct {
	tx  *settlement.PlannedTx
	i   int
	rec *hub.ChannelRecord
	dev *btcec.PrivateKey

	// Hub's first half: key, message, template, session.
	msg  [32]byte
	tmpl *btcwire.MsgTx
	sess *channel.KeySession
	// Device's answer.
	devNonce [musig2.PubNonceSize]byte
	devSig   *musig2.PartialSignature
}

// parallel runs f on every job over GOMAXPROCS workers and fails b on the
// first error.
func parallel(b *testing.B, jobs []benchJob, f func(*benchJob) error) {
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; j < len(jobs); j += workers {
				if err := f(&jobs[j]); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// hubFirst is the hub's work before it asks the device: the channel's
// hub key (derived from the record, as Channels.SettleKey does), the
// sighash, the template and a fresh MuSig2 session.
func (e *benchEpoch) hubFirst(j *benchJob) error {
	root, ok := channels.RootPendingID(*j.rec, e.hubKey.PubKey())
	if !ok {
		return channel.ErrNotParticipant
	}
	dev, err := btcec.ParsePubKey(j.rec.DeviceKey[:])
	if err != nil {
		return err
	}
	key, err := channel.HubChannelPrivKey(e.hubKey, channel.ChannelKeyTweak(dev, root))
	if err != nil {
		return err
	}
	if j.msg, err = j.tx.CoopSigHash(j.i); err != nil {
		return err
	}
	if j.tmpl, err = j.tx.CoopTemplate(j.i); err != nil {
		return err
	}
	j.sess, err = j.tx.Channels[j.i].Output.NewKeySession(key)
	return err
}

// deviceSign is the device's side: check its output on the template, compute
// the sighash itself, and sign with a fresh session.
func deviceSign(j *benchJob) error {
	pc := j.tx.Channels[j.i]
	if err := settlement.VerifyOwnOutput(j.tmpl, 0, j.tx.Tx.TxIn[j.i].PreviousOutPoint,
		int64(pc.Next.Capacity), pc.NextScript); err != nil {
		return err
	}
	out := pc.Output
	fetcher := txscript.NewCannedPrevOutputFetcher(out.PkScript(), int64(out.Params().Capacity))
	msg, err := channel.KeySpendSigHash(j.tmpl, 0, fetcher, nil, settlement.CoopHashType)
	if err != nil {
		return err
	}
	sess, err := out.NewKeySession(j.dev)
	if err != nil {
		return err
	}
	j.devNonce = sess.PublicNonce()
	j.devSig, err = sess.Sign(msg, j.sess.PublicNonce())
	return err
}

// hubSecond is the hub's work on the device's answer: its partial
// signature, the combination (verifying the device's partial and the final
// signature) and the witness, verified again as it goes into the batch.
func hubSecond(j *benchJob) error {
	if _, err := j.sess.Sign(j.msg, j.devNonce); err != nil {
		return err
	}
	final, err := j.sess.Combine(j.devSig)
	if err != nil {
		return err
	}
	return j.tx.SetCoopSignature(j.i, final)
}

// cpuTime is the CPU time (user and system, all threads) the process
// has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// settle runs one epoch: plan, the round for every channel, and the
// serialized batch the hub stores before broadcasting. With hubOnly the
// devices' part is run with the timer stopped. It returns the CPU time of
// the hub's part, which, unlike wall time, other load on the machine does
// not inflate.
func (e *benchEpoch) settle(b *testing.B, hubOnly bool) time.Duration {
	cpu0 := cpuTime(b)
	plan, err := e.in.Plan()
	if err != nil {
		b.Fatal(err)
	}
	byOp := make(map[btcwire.OutPoint]int, len(e.recs))
	for i := range e.recs {
		byOp[e.recs[i].Funding] = i
	}
	jobs := make([]benchJob, 0, len(e.recs))
	for _, t := range plan.Txs {
		for i := range t.Channels {
			k := byOp[t.Tx.TxIn[i].PreviousOutPoint]
			jobs = append(jobs, benchJob{tx: t, i: i, rec: &e.recs[k], dev: e.devs[k]})
		}
	}
	if len(jobs) != len(e.recs) {
		b.Fatalf("planned %d cooperative channels of %d", len(jobs), len(e.recs))
	}
	parallel(b, jobs, e.hubFirst)
	if hubOnly {
		b.StopTimer()
	}
	cpu1 := cpuTime(b)
	parallel(b, jobs, deviceSign)
	cpu2 := cpuTime(b)
	if hubOnly {
		b.StartTimer()
	}
	parallel(b, jobs, hubSecond)
	var size int
	for _, t := range plan.Txs {
		if !t.Signed() || t.Weight > settlement.MaxStandardWeight {
			b.Fatalf("batch signed %v, weight %d", t.Signed(), t.Weight)
		}
		var buf bytes.Buffer
		if err := t.Tx.Serialize(&buf); err != nil {
			b.Fatal(err)
		}
		size += buf.Len()
	}
	b.ReportMetric(float64(len(plan.Txs)), "txs")
	b.ReportMetric(float64(size)/float64(len(jobs)), "bytes/channel")
	return cpuTime(b) - cpu2 + cpu1 - cpu0
}

// BenchmarkSettle10000 plans and signs a 10,000-channel epoch, every
// device cooperative, in process and without a chain. "hub" times only
// the hub's work (plan, per-channel key derivation, sighash, template,
// MuSig2 session, partial signature, combination with both checks,
// witness, serialization); the devices' partial signatures are made with
// the timer stopped. "total" times the devices' part too, on the same
// cores, as an upper bound of a round with devices that answer at once.
// hub-cpu-s is the hub's CPU time per epoch over all cores: divided by the
// core count it is the wall time on an otherwise idle machine.
func BenchmarkSettle10000(b *testing.B) {
	e := newBenchEpoch(b, 10_000)
	for _, c := range []struct {
		name    string
		hubOnly bool
	}{{"hub", true}, {"total", false}} {
		b.Run(c.name, func(b *testing.B) {
			var cpu time.Duration
			for b.Loop() {
				cpu += e.settle(b, c.hubOnly)
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/epoch")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "hub-cpu-s/epoch")
		})
	}
}
