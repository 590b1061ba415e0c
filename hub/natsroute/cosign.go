package natsroute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr/musig2"
	btcwire "github.com/btcsuite/btcd/wire"
	"github.com/nats-io/nats.go"

	"github.com/m2mhub/m2mhub/hub/channels"
	"github.com/m2mhub/m2mhub/hub/settler"
	"github.com/m2mhub/m2mhub/msat"
)

// onlineTimeout bounds the settler's question whether a device is online
// somewhere: the holder answers from memory, nobody holding it answers at
// once (no responders).
const onlineTimeout = time.Second

// onlineReply answers an online question.
type onlineReply struct {
	Instance string `json:"instance"`
	Online   bool   `json:"online"`
}

// cosignMsg is settler.CosignRequest for the device's instance.
type cosignMsg struct {
	Epoch        uint64                    `json:"epoch"`
	Channel      btcwire.OutPoint          `json:"channel"`
	Template     []byte                    `json:"template"`
	NextCapacity int64                     `json:"next_capacity"`
	NextExpiry   uint32                    `json:"next_expiry"`
	Spent        msat.Amount               `json:"spent"`
	Earned       msat.Amount               `json:"earned"`
	HubNonce     [musig2.PubNonceSize]byte `json:"hub_nonce"`
	// Wait is how long the asking settler waits for the device.
	Wait time.Duration `json:"wait"`
}

// cosignReply is the device's answer, or why there is none.
type cosignReply struct {
	Instance    string                    `json:"instance"`
	DeviceNonce [musig2.PubNonceSize]byte `json:"device_nonce"`
	PartialSig  [32]byte                  `json:"partial_sig"`
	Refused     string                    `json:"refused,omitempty"`
	Offline     bool                      `json:"offline,omitempty"`
	Error       string                    `json:"error,omitempty"`
}

// doneMsg is a settle-done notice for every instance.
type doneMsg struct {
	Origin string       `json:"origin"`
	Device string       `json:"device"`
	Done   settler.Done `json:"done"`
}

// Online reports whether deviceID has a session on this instance or on
// another one (settler.Cosigners).
func (r *Router) Online(deviceID string) bool {
	if r.cfg.Cosigners.Online(deviceID) {
		return true
	}
	ctx, cancel := context.WithTimeout(r.ctx, onlineTimeout)
	defer cancel()
	var rep onlineReply
	return r.relay.requestCtx(ctx, deviceID, "online", nil, &rep) == nil && rep.Online
}

// Cosign asks deviceID to co-sign req, over its session here or on the
// instance that holds it (settler.Cosigners). Errors are the local
// cosigners': channels.ErrDeviceOffline, settler.ErrRefused, ctx's error
// on timeout (ErrInstanceGone when the holder does not answer), or a
// transport error.
func (r *Router) Cosign(ctx context.Context, deviceID string, req settler.CosignRequest) (settler.CosignReply, error) {
	if r.cfg.Cosigners.Online(deviceID) {
		return r.cfg.Cosigners.Cosign(ctx, deviceID, req)
	}
	var tmpl bytes.Buffer
	if err := req.Template.Serialize(&tmpl); err != nil {
		return settler.CosignReply{}, err
	}
	wait := r.relay.timeout
	if dl, ok := ctx.Deadline(); ok {
		wait = dl.Sub(r.clock.Now())
	}
	body, err := json.Marshal(cosignMsg{
		Epoch: req.Epoch, Channel: req.Channel, Template: tmpl.Bytes(), NextCapacity: req.NextCapacity,
		NextExpiry: req.NextExpiry, Spent: req.Spent, Earned: req.Earned, HubNonce: req.HubNonce, Wait: wait,
	})
	if err != nil {
		return settler.CosignReply{}, fmt.Errorf("natsroute: encode cosign request: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	var rep cosignReply
	if err := r.relay.requestCtx(ctx, deviceID, "cosign", body, &rep); err != nil {
		return settler.CosignReply{}, err
	}
	switch {
	case rep.Offline:
		return settler.CosignReply{}, fmt.Errorf("%w: %s (left instance %s)", channels.ErrDeviceOffline, deviceID, rep.Instance)
	case rep.Refused != "":
		return settler.CosignReply{}, fmt.Errorf("%w: %s", settler.ErrRefused, rep.Refused)
	case rep.Error != "":
		return settler.CosignReply{}, fmt.Errorf("natsroute: cosign on instance %s: %s", rep.Instance, rep.Error)
	}
	return settler.CosignReply{DeviceNonce: rep.DeviceNonce, PartialSig: rep.PartialSig}, nil
}

// serveCosign runs another instance's co-signing with a device whose
// session is here, for as long as that instance waits.
func (r *Router) serveCosign(m *nats.Msg) {
	rep := cosignReply{Instance: r.cfg.Instance}
	var cm cosignMsg
	if err := json.Unmarshal(m.Data, &cm); err != nil {
		rep.Error = "bad request: " + err.Error()
		r.respond(m, rep)
		return
	}
	var tmpl btcwire.MsgTx
	if err := tmpl.Deserialize(bytes.NewReader(cm.Template)); err != nil {
		rep.Error = "bad template: " + err.Error()
		r.respond(m, rep)
		return
	}
	dev := deviceOf(m.Subject, r.relay.prefix)
	ctx, cancel := context.WithTimeout(r.ctx, cm.Wait)
	defer cancel()
	reply, err := r.cfg.Cosigners.Cosign(ctx, dev, settler.CosignRequest{
		Epoch: cm.Epoch, Channel: cm.Channel, Template: &tmpl, NextCapacity: cm.NextCapacity,
		NextExpiry: cm.NextExpiry, Spent: cm.Spent, Earned: cm.Earned, HubNonce: cm.HubNonce,
	})
	switch {
	case err == nil:
		rep.DeviceNonce, rep.PartialSig = reply.DeviceNonce, reply.PartialSig
	case errors.Is(err, settler.ErrRefused):
		rep.Refused = err.Error()
	case errors.Is(err, channels.ErrDeviceOffline):
		rep.Offline = true
	case ctx.Err() != nil:
		return // the asker has given up too
	default:
		rep.Error = err.Error()
	}
	r.respond(m, rep)
}

// Done tells deviceID its channel moved (settler.Cosigners): the local
// cosigners record the notice and send it if the device is here, and
// every other instance is told too, so the instance holding the device,
// now or at its next session, sends it.
func (r *Router) Done(ctx context.Context, deviceID string, d settler.Done) {
	r.cfg.Cosigners.Done(ctx, deviceID, d)
	b, err := json.Marshal(doneMsg{Origin: r.cfg.Instance, Device: deviceID, Done: d})
	if err == nil {
		err = r.relay.conn.Publish(r.relay.allSubject("done"), b)
	}
	if err != nil {
		r.log.Warn("natsroute: settle notice not relayed", "device", deviceID, "err", err)
	}
}

// handleDone records another instance's settle-done notice here.
func (r *Router) handleDone(m *nats.Msg) {
	var dm doneMsg
	if err := json.Unmarshal(m.Data, &dm); err != nil {
		r.log.Warn("natsroute: bad settle notice", "err", err)
		return
	}
	if dm.Origin == r.cfg.Instance {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.relay.timeout)
	defer cancel()
	r.cfg.Cosigners.Done(ctx, dm.Device, dm.Done)
}
