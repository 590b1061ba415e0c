package cosign

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/lightningnetwork/lnd/clock"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/session"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/internal/wire"
	"github.com/m2mhub/m2mhub/settlement"
)

// Channels is what Cosigners needs from the channel
// manager: a channel record by funding outpoint, to tell whether a device
// already uses its next channel. *channels.Manager satisfies it.
type Channels interface {
	// Channel returns a channel by funding outpoint, or ErrNotFound.
	Channel(ctx context.Context, op btcwire.OutPoint) (hub.ChannelRecord, error)
}

// Runs gives the latest settlement runs, from which Cosigners
// rebuilds the SettleDone notices devices may not have seen after a hub
// restart. Both hub stores satisfy it.
type Runs interface {
	// Runs returns up to limit runs (latest attempt per epoch), newest
	// first.
	Runs(ctx context.Context, limit int) ([]settlement.Run, error)
}

// Defaults for Config.
const (
	// DefaultNoticePoll is how often devices owed a SettleDone are
	// looked for among the live sessions.
	DefaultNoticePoll = time.Second
	// noticeRuns is how many recent runs a restart derives notices
	// from: a channel rolled over by an older run has been rolled over
	// again since, or its device has been told at the next round.
	noticeRuns = 3
)

// Config configures Cosigners.
type Config struct {
	// Sessions reaches online devices. Required.
	Sessions channels.Sessions
	// Channels tells whether a device uses its next channel yet.
	// Required.
	Channels Channels
	// Runs rebuilds the pending SettleDone notices at start. Required.
	Runs Runs
	// PollInterval is how often reconnected devices are sent the
	// notices they are owed.
	PollInterval time.Duration
	Clock        clock.Clock
	Logger       *slog.Logger
}

// Cosigners is the Cosigners of a running hub: it reaches devices
// over their BOLT 8 sessions. Cosign sends a SettleProposal and waits for
// the device's SettleSign or its "settle-refused" ChannelError; Done sends
// a SettleDone.
//
// Replies reach it through the session handler that Handler wraps around
// the channel manager, so the channel manager needs no settlement state.
//
// A device switches to its next channel only when it gets SettleDone, so a
// device that was offline at broadcast (one settled by its claim, or one
// that dropped between signing and broadcast) must get it later. Pending
// notices are kept in memory and sent again on every new session of their
// device, until the device pays on its next channel (Seq > 0) or that
// channel is no longer open. After a restart they are derived from the
// store: every open channel created by one of the last runs that has no
// payment yet. A device that switched but never paid gets the notice again
// at each reconnect; it ignores a notice it already followed.
type Cosigners struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	waiting map[cosignKey]*cosignWait
	// notices are the SettleDone messages owed, by device and old
	// channel; loaded reports whether the store's were merged in.
	notices map[string]map[btcwire.OutPoint]*notice
	loaded  bool

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

type cosignKey struct {
	device string
	chanID btcwire.OutPoint
}

type cosignWait struct {
	epoch uint64
	reply chan wire.Message // *wire.SettleSign or *wire.ChannelError, buffered 1
}

// notice is one SettleDone owed and the session it was last sent on.
type notice struct {
	msg    wire.SettleDone
	sentOn *session.Session
}

// New returns session-based cosigners. Call Start to send
// owed notices to reconnecting devices, and install Handler as the
// session server's handler.
func New(cfg Config) (*Cosigners, error) {
	if cfg.Sessions == nil || cfg.Channels == nil || cfg.Runs == nil {
		return nil, fmt.Errorf("%w: cosigners: sessions, channels and runs are required", hub.ErrInvalid)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultNoticePoll
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.NewDefaultClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cosigners{
		cfg: cfg, log: cfg.Logger,
		waiting: make(map[cosignKey]*cosignWait),
		notices: make(map[string]map[btcwire.OutPoint]*notice),
		ctx:     ctx, cancel: cancel,
	}, nil
}

// Start launches the loop that loads the owed notices from the store and
// sends them to devices as they connect.
func (c *Cosigners) Start() {
	c.startOnce.Do(func() {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.loop()
		}()
	})
}

// Close stops the loop and waits for it. Cosign calls in flight end with
// their own contexts.
func (c *Cosigners) Close() error {
	c.closeOnce.Do(c.cancel)
	c.wg.Wait()
	return nil
}

func (c *Cosigners) loop() {
	t := c.cfg.Clock.TickAfter(0)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t:
		}
		if err := c.Deliver(c.ctx); err != nil && c.ctx.Err() == nil {
			c.log.Warn("settlement notices", "err", err)
		}
		t = c.cfg.Clock.TickAfter(c.cfg.PollInterval)
	}
}

// Online reports whether deviceID has a live session.
func (c *Cosigners) Online(deviceID string) bool {
	_, ok := c.cfg.Sessions.Session(deviceID)
	return ok
}

// Cosign sends req to deviceID as a SettleProposal and waits for its
// answer until ctx ends. It returns ErrDeviceOffline without a session,
// an error wrapping settler.ErrRefused when the device refuses, and ctx's
// error when it does not answer in time.
func (c *Cosigners) Cosign(ctx context.Context, deviceID string, req settler.CosignRequest) (settler.CosignReply, error) {
	var tmpl bytes.Buffer
	if err := req.Template.Serialize(&tmpl); err != nil {
		return settler.CosignReply{}, err
	}
	s, ok := c.cfg.Sessions.Session(deviceID)
	if !ok {
		return settler.CosignReply{}, channels.ErrDeviceOffline
	}
	key := cosignKey{deviceID, req.Channel}
	w := &cosignWait{epoch: req.Epoch, reply: make(chan wire.Message, 1)}
	c.mu.Lock()
	c.waiting[key] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiting[key] == w {
			delete(c.waiting, key)
		}
		c.mu.Unlock()
	}()
	err := s.Send(ctx, &wire.SettleProposal{
		Epoch: req.Epoch, ChanID: req.Channel, Template: tmpl.Bytes(),
		NextCapacity: btcutil.Amount(req.NextCapacity), NextExpiry: req.NextExpiry,
		Spent: req.Spent, Earned: req.Earned, HubNonce: req.HubNonce,
	})
	if err != nil {
		return settler.CosignReply{}, err
	}
	select {
	case <-ctx.Done():
		return settler.CosignReply{}, ctx.Err()
	case m := <-w.reply:
		switch m := m.(type) {
		case *wire.SettleSign:
			return settler.CosignReply{DeviceNonce: m.DeviceNonce, PartialSig: m.PartialSig}, nil
		case *wire.ChannelError:
			return settler.CosignReply{}, fmt.Errorf("%w: %s", settler.ErrRefused, m.Message)
		}
		return settler.CosignReply{}, fmt.Errorf("cosign: unexpected settlement reply %T", m)
	}
}

// Done records the notice as owed to deviceID and sends it now if the
// device is online; the loop sends it again at the device's next session
// until the device uses its next channel.
func (c *Cosigners) Done(ctx context.Context, deviceID string, d settler.Done) {
	n := &notice{msg: wire.SettleDone{
		Epoch: d.Epoch, ChanID: d.Old, NextOutpoint: d.Next,
		NextCapacity: btcutil.Amount(d.NextCapacity), NextExpiry: d.NextExpiry, Txid: d.Txid,
	}}
	c.mu.Lock()
	if c.notices[deviceID] == nil {
		c.notices[deviceID] = make(map[btcwire.OutPoint]*notice)
	}
	c.notices[deviceID][d.Old] = n
	c.mu.Unlock()
	c.deliver(ctx, deviceID)
}

// Pending returns the SettleDone notices still owed to deviceID.
func (c *Cosigners) Pending(deviceID string) []settler.Done {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []settler.Done
	for _, n := range c.notices[deviceID] {
		out = append(out, settler.Done{
			Epoch: n.msg.Epoch, Old: n.msg.ChanID, Next: n.msg.NextOutpoint,
			NextCapacity: int64(n.msg.NextCapacity), NextExpiry: n.msg.NextExpiry, Txid: n.msg.Txid,
		})
	}
	return out
}

// Deliver runs one pass of the loop: it merges the store's owed notices
// in (once), drops the notices whose device uses its next channel, and
// sends the others to every device on a session they were not yet sent
// on.
func (c *Cosigners) Deliver(ctx context.Context) error {
	c.mu.Lock()
	loaded := c.loaded
	c.mu.Unlock()
	if !loaded {
		if err := c.load(ctx); err != nil {
			return err
		}
	}
	c.mu.Lock()
	devices := make([]string, 0, len(c.notices))
	for d := range c.notices {
		devices = append(devices, d)
	}
	c.mu.Unlock()
	for _, d := range devices {
		c.deliver(ctx, d)
	}
	return nil
}

// deliver drops deviceID's notices it no longer needs and sends the
// others on its current session, once per session. Each pass reads one
// channel record per owed notice: a notice lives only until its device's
// next payment, so they are few.
func (c *Cosigners) deliver(ctx context.Context, deviceID string) {
	s, online := c.cfg.Sessions.Session(deviceID)
	c.mu.Lock()
	owed := make([]*notice, 0, len(c.notices[deviceID]))
	for _, n := range c.notices[deviceID] {
		owed = append(owed, n)
	}
	c.mu.Unlock()
	for _, n := range owed {
		if c.acknowledged(ctx, n) {
			c.forget(deviceID, n)
			continue
		}
		c.mu.Lock()
		due := online && n.sentOn != s
		c.mu.Unlock()
		if !due {
			continue
		}
		if err := s.Send(ctx, &n.msg); err != nil {
			c.log.Debug("settle notice not delivered", "device", deviceID, "err", err)
			continue
		}
		c.mu.Lock()
		n.sentOn = s
		c.mu.Unlock()
	}
}

// acknowledged reports whether a notice is no longer needed: the device
// paid on its next channel (it must have switched), or that channel is
// closed or settled again. A lookup error keeps the notice.
func (c *Cosigners) acknowledged(ctx context.Context, n *notice) bool {
	rec, err := c.cfg.Channels.Channel(ctx, n.msg.NextOutpoint)
	switch {
	case errors.Is(err, hub.ErrNotFound):
		return true
	case err != nil:
		return false
	}
	return rec.Seq > 0 || rec.Status != hub.ChannelReady && rec.Status != hub.ChannelFrozen
}

func (c *Cosigners) forget(deviceID string, n *notice) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.notices[deviceID]
	if m[n.msg.ChanID] == n {
		delete(m, n.msg.ChanID)
	}
	if len(m) == 0 {
		delete(c.notices, deviceID)
	}
}

// load derives the owed notices from the last runs: input i of a batch
// continues at output i, so every open channel at (txid, i) without a
// payment yet is owed the notice of the channel its batch spent there.
func (c *Cosigners) load(ctx context.Context) error {
	runs, err := c.cfg.Runs.Runs(ctx, noticeRuns)
	if err != nil {
		return err
	}
	found := make(map[string]map[btcwire.OutPoint]*notice)
	for _, r := range runs {
		if r.State != settlement.RunBroadcast && r.State != settlement.RunConfirmed {
			continue
		}
		txs, err := settler.DecodeTxs(r.Txs)
		if err != nil {
			return err
		}
		for _, tx := range txs {
			txid := tx.TxHash()
			for i, in := range tx.TxIn {
				next := btcwire.OutPoint{Hash: txid, Index: uint32(i)}
				rec, err := c.cfg.Channels.Channel(ctx, next)
				switch {
				case errors.Is(err, hub.ErrNotFound):
					continue // a payout or revenue output, or not ours
				case err != nil:
					return err
				}
				if rec.Seq > 0 || rec.Status != hub.ChannelReady && rec.Status != hub.ChannelFrozen {
					continue
				}
				if found[rec.DeviceID] == nil {
					found[rec.DeviceID] = make(map[btcwire.OutPoint]*notice)
				}
				found[rec.DeviceID][in.PreviousOutPoint] = &notice{msg: wire.SettleDone{
					Epoch: r.Epoch.Number, ChanID: in.PreviousOutPoint, NextOutpoint: next,
					NextCapacity: rec.Capacity, NextExpiry: rec.Expiry, Txid: txid,
				}}
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, ns := range found {
		if c.notices[d] == nil {
			c.notices[d] = make(map[btcwire.OutPoint]*notice)
		}
		for old, n := range ns {
			// One recorded by Done in this process is the same notice
			// and knows where it was sent.
			if _, ok := c.notices[d][old]; !ok {
				c.notices[d][old] = n
			}
		}
	}
	c.loaded = true
	return nil
}

// HandleMessage takes the devices' answers to settlement proposals: a
// SettleSign, and a ChannelError "settle-refused". Route those two to it
// (session.Router); it logs and drops any other message. An answer nobody
// waits for (it came after the round timeout) is dropped: the round already
// re-planned the device as absent.
func (c *Cosigners) HandleMessage(_ context.Context, s *session.Session, msg wire.Message) error {
	switch m := msg.(type) {
	case *wire.SettleSign:
		if !c.reply(s.DeviceID(), m.ChanID, m.Epoch, m, true) {
			c.log.Debug("late or unexpected settle sign", "device", s.DeviceID(), "chan", m.ChanID, "epoch", m.Epoch)
		}
		return nil
	case *wire.ChannelError:
		if m.Code == wire.ChanSettleRefused && m.ChanID != nil && c.reply(s.DeviceID(), *m.ChanID, 0, m, false) {
			return nil
		}
		c.log.Info("device reported an error", "device", s.DeviceID(), "code", m.Code, "message", m.Message)
		return nil
	}
	c.log.Warn("message routed to the cosigners is not theirs", "device", s.DeviceID(), "type", uint16(msg.MsgType()))
	return nil
}

// reply hands m to the Cosign waiting for (deviceID, chanID), checking
// the epoch when checkEpoch is set. It reports whether one was waiting.
func (c *Cosigners) reply(deviceID string, chanID btcwire.OutPoint, epoch uint64, m wire.Message, checkEpoch bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.waiting[cosignKey{deviceID, chanID}]
	if w == nil || checkEpoch && w.epoch != epoch {
		return false
	}
	select {
	case w.reply <- m:
		return true
	default:
		return false // already answered
	}
}
