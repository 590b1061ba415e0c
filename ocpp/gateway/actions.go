package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// handlerFunc runs one action the station called; the payload has passed
// the request schema.
type handlerFunc func(c *conn, ctx context.Context, payload json.RawMessage) (any, error)

// handlerFor routes a station's CALL by action.
func handlerFor(action string) (handlerFunc, bool) {
	switch action {
	case "BootNotification":
		return (*conn).boot, true
	case "Heartbeat":
		return (*conn).heartbeat, true
	case "StatusNotification":
		return (*conn).status, true
	case "Authorize":
		return (*conn).authorize, true
	case "TransactionEvent":
		return (*conn).transactionEvent, true
	case "MeterValues":
		return (*conn).meterValues, true
	}
	return nil, false
}

// The idTokenInfo statuses the gateway gives.
const (
	statusAccepted = "Accepted"
	statusUnknown  = "Unknown"  // a token no payer is registered for
	statusNoCredit = "NoCredit" // the payer or hub refused the hold
)

func (c *conn) boot(ctx context.Context, _ json.RawMessage) (any, error) {
	c.g.log.Info("ocpp station booted", "station", c.station)
	return bootConf{CurrentTime: c.now(), Interval: int(c.g.cfg.HeartbeatInterval.Seconds()), Status: "Accepted"}, nil
}

func (c *conn) heartbeat(ctx context.Context, _ json.RawMessage) (any, error) {
	return heartbeatConf{CurrentTime: c.now()}, nil
}

func (c *conn) status(ctx context.Context, _ json.RawMessage) (any, error) {
	return struct{}{}, nil
}

func (c *conn) authorize(ctx context.Context, payload json.RawMessage) (any, error) {
	var req authorizeReq
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, err
	}
	status := statusUnknown
	if _, ok := c.g.cfg.Tokens[req.IDToken.IDToken]; ok {
		status = statusAccepted
	}
	return authorizeConf{IDTokenInfo: idTokenInfo{Status: status}}, nil
}

// transactionEvent begins billing when the transaction first carries a
// known idToken (the hold is requested then), hands its signed readings
// over, and ends billing at Ended. Readings of a transaction without a
// granted hold are logged and not billed.
func (c *conn) transactionEvent(ctx context.Context, payload json.RawMessage) (any, error) {
	var req transactionEventReq
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, err
	}
	tx := req.TransactionInfo.TransactionID
	c.mu.Lock()
	s := c.sessions[tx]
	c.mu.Unlock()

	var conf transactionEventConf
	if req.IDToken != nil {
		status := statusAccepted
		if s == nil {
			var err error
			if s, status, err = c.begin(ctx, tx, req); err != nil {
				return nil, err
			}
		}
		conf.IDTokenInfo = &idTokenInfo{Status: status}
	}
	if s != nil && req.Evse != nil && s.EvseID == 0 {
		c.mu.Lock()
		s.EvseID = req.Evse.ID
		c.byEvse[s.EvseID] = tx
		c.mu.Unlock()
	}
	if signed := signedReadings(req.MeterValue); len(signed) > 0 {
		if s == nil {
			c.g.log.Warn("ocpp readings of an unbilled transaction dropped", "station", c.station, "transaction", tx, "readings", len(signed))
		} else if err := c.g.cfg.Billing.Readings(ctx, *s, signed); err != nil {
			return nil, fmt.Errorf("gateway: readings of %s: %w", tx, err)
		}
	}
	if req.EventType == "Ended" && s != nil {
		if err := c.g.cfg.Billing.End(ctx, *s); err != nil {
			return nil, fmt.Errorf("gateway: end of %s: %w", tx, err)
		}
		c.mu.Lock()
		delete(c.sessions, tx)
		if c.byEvse[s.EvseID] == tx {
			delete(c.byEvse, s.EvseID)
		}
		c.mu.Unlock()
	}
	return conf, nil
}

// begin maps the token to its payer and asks for the hold. It returns a
// nil session with the status to tell the station when the token is
// unknown or the hold refused.
func (c *conn) begin(ctx context.Context, tx string, req transactionEventReq) (*Session, string, error) {
	payer, ok := c.g.cfg.Tokens[req.IDToken.IDToken]
	if !ok {
		c.g.log.Warn("ocpp unknown idToken", "station", c.station, "transaction", tx)
		return nil, statusUnknown, nil
	}
	s := &Session{Station: c.station, TransactionID: tx, IDToken: req.IDToken.IDToken, Payer: payer}
	if req.Evse != nil {
		s.EvseID = req.Evse.ID
	}
	if err := c.g.cfg.Billing.Begin(ctx, *s); err != nil {
		if errors.Is(err, ErrRefused) {
			c.g.log.Warn("ocpp hold refused", "station", c.station, "transaction", tx, "payer", payer, "err", err)
			return nil, statusNoCredit, nil
		}
		return nil, "", fmt.Errorf("gateway: begin %s: %w", tx, err)
	}
	c.mu.Lock()
	c.sessions[tx] = s
	if s.EvseID != 0 {
		c.byEvse[s.EvseID] = tx
	}
	c.mu.Unlock()
	return s, statusAccepted, nil
}

// meterValues bills the signed readings of the transaction running on
// the EVSE.
func (c *conn) meterValues(ctx context.Context, payload json.RawMessage) (any, error) {
	var req meterValuesReq
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, err
	}
	signed := signedReadings(req.MeterValue)
	if len(signed) > 0 {
		c.mu.Lock()
		var s *Session
		if tx, ok := c.byEvse[req.EvseID]; ok {
			s = c.sessions[tx]
		}
		c.mu.Unlock()
		if s == nil {
			c.g.log.Warn("ocpp readings of an EVSE without a billed transaction dropped", "station", c.station, "evse", req.EvseID)
		} else if err := c.g.cfg.Billing.Readings(ctx, *s, signed); err != nil {
			return nil, fmt.Errorf("gateway: readings of %s: %w", s.TransactionID, err)
		}
	}
	return struct{}{}, nil
}
