package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	m2mclient "github.com/m2mhub/m2mhub/clients/go"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/natsintake"
	"github.com/m2mhub/m2mhub/hub/redisstore"
	"github.com/m2mhub/m2mhub/metering"
)

// drain lets every device resolve a payment left pending (one more small
// payment each) and waits until the hub's intake has taken every usage
// message off the stream.
func (r *run) drain(ctx context.Context) error {
	for _, d := range r.devices {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			rc, err := d.dev.Pay(pctx, d.ch, r.provs[0].id, 1, "")
			cancel()
			if err == nil {
				d.mu.Lock()
				d.acked++
				d.ackSeq, d.ackPaid = max(d.ackSeq, rc.Seq), max(d.ackPaid, rc.Paid)
				d.mu.Unlock()
				break
			}
			if time.Now().After(deadline) {
				r.res.Problems = append(r.res.Problems, fmt.Sprintf("device %s cannot pay after the faults: %v", d.id, err))
				break
			}
			pause(ctx, 500*time.Millisecond)
		}
	}

	nc, err := nats.Connect("nats://" + r.nats.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	quiet := 0
	for quiet < 3 {
		if time.Now().After(deadline) {
			r.res.Problems = append(r.res.Problems, "the hub's intake did not drain the usage stream within 5 minutes")
			return nil
		}
		pause(ctx, time.Second)
		c, err := js.Consumer(ctx, metering.UsageStream, natsintake.DefaultConsumer)
		if err != nil {
			quiet = 0
			continue
		}
		info, err := c.Info(ctx)
		if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
			quiet = 0
			continue
		}
		quiet++
	}
	return nil
}

// checkChain checks that the chain survived every btcd kill: no lower than
// after setup, and every channel's funding confirmed on it.
func (r *run) checkChain(ctx context.Context, setupHeight int32) error {
	chain, err := r.chain()
	if err != nil {
		return err
	}
	defer chain.Close()
	h, err := chain.BlockCount(ctx)
	if err != nil {
		r.res.Problems = append(r.res.Problems, fmt.Sprintf("btcd does not answer after the faults: %v", err))
		return nil
	}
	if h < setupHeight {
		r.res.Problems = append(r.res.Problems, fmt.Sprintf("chain height %d after the faults, %d before", h, setupHeight))
	}
	for _, d := range r.devices {
		info, err := chain.GetTx(ctx, d.ch.Hash)
		if err != nil || info.Confirmations == 0 {
			r.res.Problems = append(r.res.Problems, fmt.Sprintf("funding of channel %v is not confirmed on chain after the faults (%v)", d.ch, err))
		}
	}
	return nil
}

// compare stops hubd and the devices and compares each device's store
// with the hub's channel state in Redis, and each accepted event with the
// hub's charges and dead letters.
func (r *run) compare(ctx context.Context) error {
	dead, err := r.deadLetters(ctx)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = r.proc.Stop(sctx)
	cancel()
	if err != nil {
		r.res.Problems = append(r.res.Problems, fmt.Sprintf("hubd did not stop cleanly: %v", err))
	}
	r.proc = nil
	for _, d := range r.devices {
		_ = d.dev.Close()
		_ = d.sess.Close()
		d.dev, d.sess = nil, nil
	}

	st, err := redisstore.New(redisstore.Config{URL: "redis://" + r.redis.addr + "/0", Logger: r.quit})
	if err != nil {
		return err
	}
	defer st.Close()
	for _, d := range r.devices {
		if err := r.compareDevice(ctx, st, d); err != nil {
			return err
		}
	}
	accepted := map[string]int{} // event id → providers that sent one
	for _, p := range r.provs {
		for _, id := range p.accepted {
			accepted[id]++
		}
	}
	for _, p := range r.provs {
		for _, id := range p.accepted {
			r.res.Accepted++
			_, err := st.Charge(ctx, p.id, id)
			switch {
			case err == nil:
				r.res.Charged++
			case !errors.Is(err, hub.ErrNotFound):
				return err
			case dead[p.id+"/"+id]:
				r.res.DeadLettered++
			default:
				r.res.EventsLost++
				if accepted[id] > 1 {
					r.res.LostSharedID++
				}
				if r.res.EventsLost <= 10 {
					r.say("event lost: provider %s event %s (accepted by Meter, no charge, no dead letter)", p.id, id)
				}
			}
		}
	}
	return nil
}

// compareDevice counts the device's acknowledged payments the hub lost and
// the states the hub holds beyond what the device signed.
func (r *run) compareDevice(ctx context.Context, st *redisstore.Store, d *device) error {
	fs, err := m2mclient.NewFileStore(d.dir)
	if err != nil {
		return err
	}
	sts, err := fs.Load(ctx)
	if err != nil {
		return err
	}
	var dev *m2mclient.ChannelState
	for i := range sts {
		if sts[i].Funding == d.ch {
			dev = &sts[i]
		}
	}
	if dev == nil {
		r.res.Problems = append(r.res.Problems, fmt.Sprintf("device %s has no record of its channel", d.id))
		return nil
	}
	rec, err := st.Channel(ctx, d.ch)
	if err != nil {
		return fmt.Errorf("chaos: hub channel %v: %w", d.ch, err)
	}
	r.res.Acked += d.acked
	if dev.Seq < d.ackSeq {
		r.res.Problems = append(r.res.Problems, fmt.Sprintf("device %s: its store is at seq %d, below the acknowledged %d", d.id, dev.Seq, d.ackSeq))
	}
	// Lost: acknowledged on the device, not in the hub's channel state.
	if rec.Seq < d.ackSeq || rec.Paid < d.ackPaid {
		r.res.Lost += int(max(d.ackSeq-min(rec.Seq, d.ackSeq), 1))
		r.say("device %s: hub at seq %d paid %d, device acknowledged seq %d paid %d", d.id, rec.Seq, rec.Paid, d.ackSeq, d.ackPaid)
	}
	// Doubled: the hub holds more paid than the device signed (its
	// acknowledged state, or the pending one it signed and sent).
	signedSeq, signedPaid := dev.Seq, dev.Paid
	if dev.Pending != nil {
		signedSeq, signedPaid = dev.Pending.Seq, dev.Pending.Paid
	}
	if rec.Seq > signedSeq || rec.Paid > signedPaid || (rec.Seq == dev.Seq && rec.Paid != dev.Paid) {
		r.res.Doubled++
		r.say("device %s: hub at seq %d paid %d, device signed up to seq %d paid %d", d.id, rec.Seq, rec.Paid, signedSeq, signedPaid)
	}
	if rec.Status != hub.ChannelReady {
		r.res.Problems = append(r.res.Problems, fmt.Sprintf("channel %v is %s after the faults", d.ch, rec.Status))
	}
	return nil
}

// deadLetters reads M2M_DLQ: the provider/event ids the hub dead-lettered.
func (r *run) deadLetters(ctx context.Context) (map[string]bool, error) {
	nc, err := nats.Connect("nats://" + r.nats.addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, metering.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("chaos: dead-letter stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		prov := strings.TrimPrefix(m.Subject, metering.DLQSubject(""))
		var one struct {
			ID string `json:"id"`
		}
		var many []struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m.Data, &one) == nil && one.ID != "" {
			out[prov+"/"+one.ID] = true
		} else if json.Unmarshal(m.Data, &many) == nil {
			for _, e := range many {
				out[prov+"/"+e.ID] = true
			}
		}
	}
	return out, nil
}
