// Package natsintake consumes providers' usage events from NATS JetStream:
// a durable pull consumer on M2M_USAGE whose workers parse each message,
// check that every event comes from the provider whose subject carried it,
// check that the message's Nats-Msg-Id is the one its provider and bytes
// give (metering.MsgID), verify its signature against the provider's
// registered key, validate it, and hand the valid events to a Charger.
// Rejected events go to the dead-letter stream with their reason. A message is acknowledged only
// after the Charger returned (every outcome durable) and its dead letters
// are stored; any failure before that naks it, and JetStream redelivers it.
package natsintake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/lightningnetwork/lnd/clock"
	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/charging"
	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Providers looks up the provider that published a message.
type Providers interface {
	// Device returns the registered device with id, or an error wrapping
	// hub.ErrNotFound.
	Device(ctx context.Context, id string) (hub.Device, error)
}

// Charger prices and records verified events exactly once.
// *charging.Service satisfies it.
type Charger interface {
	// ChargeUsage returns one outcome per event, in order, once every
	// outcome is durable. An error means nothing can be relied on: the
	// intake naks the message and charges it again on redelivery, so
	// ChargeUsage must treat an event it recorded before as a Duplicate.
	// The intake converts each event once (charging.UsageOf, from the
	// usage metering.Validate parsed).
	ChargeUsage(ctx context.Context, evs []charging.Usage) ([]charging.Outcome, error)
}

// Config configures an Intake.
type Config struct {
	// JS is the hub's JetStream context.
	JS        jetstream.JetStream
	Providers Providers
	Charger   Charger
	// Clock gives the time events are validated against; the system
	// clock when nil.
	Clock  clock.Clock
	Logger *slog.Logger

	// Stream and Consumer name the usage stream and the durable consumer
	// (defaults metering.UsageStream and DefaultConsumer).
	Stream   string
	Consumer string
	// Duplicates is the JetStream de-duplication window
	// (DefaultDuplicates).
	Duplicates time.Duration
	// Replicas is how many copies of each metering stream a NATS cluster
	// keeps (1: a single server).
	Replicas int
	// FetchBatch is how many messages a worker pulls at once (64).
	FetchBatch int
	// MaxAckPending bounds messages delivered and not yet acknowledged
	// (1024).
	MaxAckPending int
	// AckWait is how long JetStream waits for an acknowledgement before
	// redelivering (30 s).
	AckWait time.Duration
	// NakDelay is the first redelivery delay after a failed charge; it
	// doubles with every delivery up to MaxNakDelay (1 s, 1 min).
	NakDelay    time.Duration
	MaxNakDelay time.Duration
	// Workers is how many messages are processed at once (4 ×
	// GOMAXPROCS). Parsing and signature checks are CPU-bound, but each
	// message then waits for its charge to be durable (an fsync): with
	// more workers than cores, one worker's wait overlaps another's CPU
	// work and the store commits several messages' charges per fsync.
	Workers int
	// Limits bound event times (metering defaults).
	Limits metering.Limits
}

// DefaultConsumer is the durable consumer's default name.
const DefaultConsumer = "hub-intake"

// Stats are the intake's counters since start.
type Stats struct {
	Messages     uint64 // usage messages handled to the end (acked)
	Events       uint64 // events in those messages
	Charged      uint64 // events charged now
	Duplicates   uint64 // events the Charger had recorded before
	DeadLettered uint64 // events (or whole malformed messages) dead-lettered
	Malformed    uint64 // messages that did not parse
	Naks         uint64 // messages handed back for redelivery
	ChargeErrors uint64 // Charge calls that failed
}

// counters are Stats kept with atomics.
type counters struct {
	messages, events, charged, duplicates, deadLettered, malformed, naks, chargeErrors atomic.Uint64
}

// Intake is the running usage consumer.
type Intake struct {
	cfg Config
	log *slog.Logger
	st  counters
	// keys caches parsed provider keys: a BIP-340 key parse costs a
	// square root, which would otherwise be paid per message.
	keysMu sync.Mutex
	keys   map[hub.PubKey]*btcec.PublicKey

	mu     sync.Mutex
	cancel context.CancelFunc
	iters  []jetstream.MessagesContext
	wg     sync.WaitGroup
}

// New checks cfg, fills defaults, and returns an intake that Start starts.
func New(cfg Config) (*Intake, error) {
	if cfg.JS == nil || cfg.Providers == nil || cfg.Charger == nil {
		return nil, errors.New("natsintake: JetStream, providers and charger are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stream == "" {
		cfg.Stream = metering.UsageStream
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = DefaultDuplicates
	}
	if cfg.FetchBatch <= 0 {
		cfg.FetchBatch = 64
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = 1024
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.NakDelay <= 0 {
		cfg.NakDelay = time.Second
	}
	if cfg.MaxNakDelay < cfg.NakDelay {
		cfg.MaxNakDelay = max(time.Minute, cfg.NakDelay)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	return &Intake{cfg: cfg, log: cfg.Logger, keys: map[hub.PubKey]*btcec.PublicKey{}}, nil
}

// Start ensures the metering streams and the durable consumer exist and
// starts the workers. Close stops them.
func (in *Intake) Start(ctx context.Context) error {
	if err := EnsureStreamsReplicated(ctx, in.cfg.JS, in.cfg.Duplicates, in.cfg.Replicas); err != nil {
		return err
	}
	cons, err := in.cfg.JS.CreateOrUpdateConsumer(ctx, in.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       in.cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       in.cfg.AckWait,
		MaxAckPending: in.cfg.MaxAckPending,
		// Never give up on a message: a charge that keeps failing is a
		// store outage, and dropping usage would lose money.
		MaxDeliver: -1,
	})
	if err != nil {
		return fmt.Errorf("natsintake: consumer %s: %w", in.cfg.Consumer, err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cancel != nil {
		return errors.New("natsintake: already started")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	for range in.cfg.Workers {
		it, err := cons.Messages(jetstream.PullMaxMessages(in.cfg.FetchBatch))
		if err != nil {
			cancel()
			for _, it := range in.iters {
				it.Stop()
			}
			in.iters = nil
			return fmt.Errorf("natsintake: pull: %w", err)
		}
		in.iters = append(in.iters, it)
	}
	in.cancel = cancel
	for _, it := range in.iters {
		in.wg.Add(1)
		go in.work(runCtx, it)
	}
	in.log.Info("usage intake started", "stream", in.cfg.Stream, "consumer", in.cfg.Consumer, "workers", in.cfg.Workers)
	return nil
}

// Close stops the workers and waits for them. A message being charged
// when Close is called is not acknowledged unless its charge returned; it
// is redelivered to the next intake.
func (in *Intake) Close() error {
	in.mu.Lock()
	cancel, iters := in.cancel, in.iters
	in.iters = nil
	in.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	for _, it := range iters {
		it.Stop()
	}
	in.wg.Wait()
	return nil
}

// Stats returns the counters.
func (in *Intake) Stats() Stats {
	return Stats{
		Messages: in.st.messages.Load(), Events: in.st.events.Load(), Charged: in.st.charged.Load(),
		Duplicates: in.st.duplicates.Load(), DeadLettered: in.st.deadLettered.Load(),
		Malformed: in.st.malformed.Load(), Naks: in.st.naks.Load(), ChargeErrors: in.st.chargeErrors.Load(),
	}
}

func (in *Intake) work(ctx context.Context, it jetstream.MessagesContext) {
	defer in.wg.Done()
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
			return
		}
		if err != nil {
			// Missed heartbeats while NATS reconnects: the iterator
			// re-pulls by itself.
			in.log.Warn("usage pull", "err", err)
			continue
		}
		in.handle(ctx, msg)
	}
}

// handle processes one message to its acknowledgement or nak.
func (in *Intake) handle(ctx context.Context, msg jetstream.Msg) {
	var delivered, seq uint64 = 1, 0
	if md, err := msg.Metadata(); err == nil {
		delivered, seq = md.NumDelivered, md.Sequence.Stream
	}
	n, err := in.process(ctx, msg, seq)
	if err != nil {
		delay := in.cfg.NakDelay << min(delivered-1, 16)
		if delay > in.cfg.MaxNakDelay || delay <= 0 {
			delay = in.cfg.MaxNakDelay
		}
		in.st.naks.Add(1)
		if ctx.Err() == nil {
			in.log.Warn("usage message handed back", "seq", seq, "delivered", delivered, "retry_in", delay, "err", err)
		}
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			in.log.Warn("nak failed; the message is redelivered after the ack wait", "seq", seq, "err", nerr)
		}
		return
	}
	if err := msg.Ack(); err != nil {
		// Charged and durable, but JetStream did not hear it: the
		// redelivery finds every event recorded (Duplicate).
		in.log.Warn("ack failed", "seq", seq, "err", err)
		return
	}
	in.st.messages.Add(1)
	in.st.events.Add(uint64(n))
}

// deadLetter is one rejected event, or a whole unparseable message.
type deadLetter struct {
	provider string
	body     []byte
	reason   string
	detail   string
	msgID    string
}

// process does everything but the ack and returns the number of events
// the message held: an error means "hand it back".
func (in *Intake) process(ctx context.Context, msg jetstream.Msg, seq uint64) (int, error) {
	provider, ok := strings.CutPrefix(msg.Subject(), "usage.")
	if !ok || !metering.ValidSubjectToken(provider) {
		// The stream's subject filter makes this unreachable; never
		// loop on it if a misconfigured stream lets one in.
		in.log.Error("usage message on an unexpected subject", "subject", msg.Subject())
		return 0, nil
	}
	idOf := func(i int) string { return fmt.Sprintf("%s-%d-%d", in.cfg.Stream, seq, i) }

	evs, err := metering.ParseBatch(msg.Data())
	if err != nil {
		in.st.malformed.Add(1)
		dl := deadLetter{provider: provider, body: msg.Data(), reason: metering.ReasonMalformed, detail: err.Error(), msgID: idOf(-1)}
		return 0, in.publishDead(ctx, []deadLetter{dl})
	}

	var (
		dead   []deadLetter
		valid  = make([]metering.Event, 0, len(evs))
		usage  = make([]charging.Usage, 0, len(evs))
		reject = func(i int, err error) {
			body, _ := evs[i].MarshalJSON()
			dead = append(dead, deadLetter{provider: provider, body: body, reason: metering.Reason(err), detail: err.Error(), msgID: idOf(i)})
		}
	)
	pub, perr := in.providerKey(ctx, provider)
	if perr != nil && !errors.Is(perr, metering.ErrUnknownSource) && !errors.Is(perr, metering.ErrSourceInactive) {
		return 0, perr // the registry is unreachable: try again later
	}
	if perr == nil {
		perr = checkMsgID(msg, provider)
	}
	// A batch signature, when present, authenticates every event of the
	// message with one BIP-340 check instead of one per event. If it is
	// present but wrong, the whole message is refused: nothing in it is
	// known to come from the provider.
	batchOK := false
	if sig := msg.Headers().Get(metering.HeaderBatchSig); sig != "" && perr == nil {
		if err := metering.VerifyBatch(evs, sig, pub); err != nil {
			perr = err
		} else {
			batchOK = true
		}
	}
	now := in.cfg.Clock.Now()
	for i := range evs {
		e := &evs[i]
		switch {
		case perr != nil:
			reject(i, perr)
		case e.Source != provider:
			reject(i, fmt.Errorf("%w: %q published on %s", metering.ErrSourceMismatch, e.Source, msg.Subject()))
		default:
			if err := verifyOne(e, pub, batchOK); err != nil {
				reject(i, err)
			} else if u, err := metering.Validate(e, now, in.cfg.Limits); err != nil {
				reject(i, err)
			} else if cu, err := charging.UsageOf(e, u); err != nil {
				reject(i, err)
			} else {
				valid, usage = append(valid, *e), append(usage, cu)
			}
		}
	}

	if len(valid) > 0 {
		outs, err := in.cfg.Charger.ChargeUsage(ctx, usage)
		if err == nil && len(outs) != len(valid) {
			err = fmt.Errorf("natsintake: charger returned %d outcomes for %d events", len(outs), len(valid))
		}
		if err != nil {
			in.st.chargeErrors.Add(1)
			return 0, fmt.Errorf("charge: %w", err)
		}
		var charged, dups uint64
		for i, o := range outs {
			switch {
			case o.Rejected != "":
				body, _ := valid[i].MarshalJSON()
				dead = append(dead, deadLetter{
					provider: provider, body: body, reason: o.Rejected, detail: o.Detail,
					msgID: idOf(len(evs) + i), // after the intake's own rejections
				})
			case o.Duplicate:
				dups++
			case o.Charged:
				charged++
			}
		}
		in.st.charged.Add(charged)
		in.st.duplicates.Add(dups)
	}
	return len(evs), in.publishDead(ctx, dead)
}

// checkMsgID refuses a message whose Nats-Msg-Id is not the one
// metering.MsgID computes from its subject's provider, body and batch
// signature. JetStream de-duplicates on the header across every
// provider's subject, so a header any other way could be a copy of another
// provider's id (or predictable by one) and get a message answered as a
// duplicate without ever reaching the hub. A message without the header is
// accepted: it claims no de-duplication, and the charge store's record of
// (provider, event id) still catches a retry.
func checkMsgID(msg jetstream.Msg, provider string) error {
	got := msg.Headers().Get(jetstream.MsgIDHeader)
	if got == "" {
		return nil
	}
	if want := metering.MsgID(provider, msg.Data(), msg.Headers().Get(metering.HeaderBatchSig)); got != want {
		return fmt.Errorf("%w: %q, want %q (provider/SHA-256 of batch signature, newline, body)", metering.ErrBadMsgID, got, want)
	}
	return nil
}

// verifyOne checks an event's own signature unless a verified batch
// signature already covers it.
func verifyOne(e *metering.Event, pub *btcec.PublicKey, batchOK bool) error {
	if batchOK {
		return nil
	}
	return metering.Verify(e, pub)
}

// providerKey returns the BIP-340 key of an active provider, or an error
// wrapping ErrUnknownSource or ErrSourceInactive, or a lookup failure.
func (in *Intake) providerKey(ctx context.Context, id string) (*btcec.PublicKey, error) {
	d, err := in.cfg.Providers.Device(ctx, id)
	if errors.Is(err, hub.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", metering.ErrUnknownSource, id)
	}
	if err != nil {
		return nil, fmt.Errorf("natsintake: provider %s: %w", id, err)
	}
	if d.Status != hub.StatusActive || !d.HasRole(hub.RoleProvider) {
		return nil, fmt.Errorf("%w: %s is %s (roles %v)", metering.ErrSourceInactive, id, d.Status, d.Roles)
	}
	in.keysMu.Lock()
	defer in.keysMu.Unlock()
	if k, ok := in.keys[d.Key]; ok {
		return k, nil
	}
	k, err := btcec.ParsePubKey(d.Key[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %s has an unusable key", metering.ErrSourceInactive, id)
	}
	if len(in.keys) >= 4096 {
		clear(in.keys) // providers are few; this only bounds a pathological registry
	}
	in.keys[d.Key] = k
	return k, nil
}

// publishDead stores dead letters in M2M_DLQ and waits until JetStream has
// them all. Their Nats-Msg-Id is derived from the usage message's stream
// sequence, so a redelivered message does not dead-letter twice.
func (in *Intake) publishDead(ctx context.Context, dead []deadLetter) error {
	if len(dead) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(dead))
	for _, d := range dead {
		nm := nats.NewMsg(metering.DLQSubject(d.provider))
		nm.Data = d.body
		nm.Header.Set(metering.HeaderReason, headerValue(d.reason))
		nm.Header.Set(metering.HeaderDetail, headerValue(d.detail))
		nm.Header.Set(jetstream.MsgIDHeader, d.msgID)
		f, err := in.cfg.JS.PublishMsgAsync(nm)
		if err != nil {
			return fmt.Errorf("natsintake: dead letter: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("natsintake: dead letter: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	in.st.deadLettered.Add(uint64(len(dead)))
	for _, d := range dead {
		in.log.Info("usage dead-lettered", "provider", d.provider, "reason", d.reason, "detail", d.detail)
	}
	return nil
}

// headerValue makes s safe as a NATS header value: one line, bounded.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
