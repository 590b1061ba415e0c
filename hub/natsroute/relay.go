package natsroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub"
	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/internal/wire"
)

// RelayConfig configures NewRelay.
type RelayConfig struct {
	// Conn is the instance's NATS connection. Required.
	Conn *nats.Conn
	// Prefix defaults to DefaultPrefix, Timeout to DefaultTimeout.
	Prefix  string
	Timeout time.Duration
	Logger  *slog.Logger
}

// Relay is the sending half of the routing: it reaches the instance that
// holds a device's session, for the channel manager (channels.Relay), the
// registry's revocations (Drop) and the Router. It subscribes nothing, so
// it is built before the channel manager, which the Router serves.
type Relay struct {
	conn    *nats.Conn
	prefix  string
	timeout time.Duration
	log     *slog.Logger
}

var _ channels.Relay = (*Relay)(nil)

// NewRelay returns the relay of one instance.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Conn == nil {
		return nil, fmt.Errorf("%w: natsroute: relay needs a NATS connection", hub.ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Relay{conn: cfg.Conn, prefix: cfg.Prefix, timeout: cfg.Timeout, log: cfg.Logger}, nil
}

func (r *Relay) devSubject(deviceID, what string) string {
	return r.prefix + ".dev." + deviceID + "." + what
}

func (r *Relay) instSubject(instance, what string) string {
	return r.prefix + ".inst." + instance + "." + what
}

// allSubject is heard by every instance (no queue group).
func (r *Relay) allSubject(what string) string { return r.prefix + ".all." + what }

// request sends body to deviceID's holder and decodes its JSON answer
// into rep. It returns an error wrapping channels.ErrDeviceOffline when
// nobody holds the session and one wrapping ErrInstanceGone when the
// holder does not answer within ctx or the relay's timeout.
func (r *Relay) request(ctx context.Context, deviceID, what string, body []byte, rep any) error {
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.requestCtx(rctx, deviceID, what, body, rep)
}

// requestCtx is request bounded by ctx alone.
func (r *Relay) requestCtx(ctx context.Context, deviceID, what string, body []byte, rep any) error {
	m, err := r.conn.RequestWithContext(ctx, r.devSubject(deviceID, what), body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %s (no instance holds its session)", channels.ErrDeviceOffline, deviceID)
	case err != nil:
		return fmt.Errorf("%w: device %s: %w", ErrInstanceGone, deviceID, err)
	}
	if err := json.Unmarshal(m.Data, rep); err != nil {
		return fmt.Errorf("natsroute: decode %s reply for %s: %w", what, deviceID, err)
	}
	return nil
}

// Notify publishes msg to the instance holding deviceID's session, which
// sends it there (channels.Relay). It only buffers the message in the NATS
// client, so it never blocks; nobody holding the session drops it.
func (r *Relay) Notify(_ context.Context, deviceID string, msg wire.Message) bool {
	b, err := wire.EncodeMessage(msg)
	if err == nil {
		err = r.conn.Publish(r.devSubject(deviceID, "notice"), b)
	}
	if err != nil {
		r.log.Debug("natsroute: notice not relayed", "device", deviceID, "type", uint16(msg.MsgType()), "err", err)
		return false
	}
	return true
}

// forwardMsg is a provider's hold message for the payer's instance.
type forwardMsg struct {
	Provider string `json:"provider"`
	Msg      []byte `json:"msg"` // wire.EncodeMessage
}

// forwardReply answers a forwardMsg.
type forwardReply struct {
	Instance string `json:"instance"`
	Offline  bool   `json:"offline,omitempty"`
	Refusal  []byte `json:"refusal,omitempty"` // an encoded *wire.ChannelError
	Error    string `json:"error,omitempty"`
}

// Forward hands a provider's hold message to the instance holding payer's
// session and returns its manager's answer (channels.Relay). A hold
// message is not retried: a capture asked twice would be asked twice.
func (r *Relay) Forward(ctx context.Context, payer, provider string, msg wire.Message) error {
	b, err := wire.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("natsroute: encode forwarded message: %w", err)
	}
	body, err := json.Marshal(forwardMsg{Provider: provider, Msg: b})
	if err != nil {
		return fmt.Errorf("natsroute: encode forwarded message: %w", err)
	}
	var rep forwardReply
	if err := r.request(ctx, payer, "forward", body, &rep); err != nil {
		return err
	}
	switch {
	case rep.Offline:
		return fmt.Errorf("%w: %s (left instance %s)", channels.ErrDeviceOffline, payer, rep.Instance)
	case rep.Refusal != nil:
		m, err := wire.DecodeMessage(rep.Refusal)
		if err != nil {
			return fmt.Errorf("natsroute: decode refusal from %s: %w", rep.Instance, err)
		}
		ce, ok := m.(*wire.ChannelError)
		if !ok {
			return fmt.Errorf("natsroute: refusal from %s is a %T", rep.Instance, m)
		}
		return ce
	case rep.Error != "":
		return fmt.Errorf("natsroute: instance %s: %s", rep.Instance, rep.Error)
	}
	return nil
}

// dropMsg asks every instance to close a device's session.
type dropMsg struct {
	Device string `json:"device"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// Drop asks every instance to close deviceID's live session, telling the
// device code and reason, as session.Directory.Drop does on one instance
// (a revocation takes effect at once cluster-wide). Best effort: an
// instance that does not hear it refuses the revoked device's next
// handshake anyway.
func (r *Relay) Drop(deviceID, code, reason string) {
	b, err := json.Marshal(dropMsg{Device: deviceID, Code: code, Reason: reason})
	if err == nil {
		err = r.conn.Publish(r.allSubject("drop"), b)
	}
	if err != nil {
		r.log.Warn("natsroute: drop not relayed", "device", deviceID, "err", err)
	}
}
