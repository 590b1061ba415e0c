package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/m2mhub/m2mhub/ocpp"
)

// maxFrame bounds one incoming WebSocket message.
const maxFrame = 64 << 10

// conn is one charging station's WebSocket.
type conn struct {
	g       *Gateway
	station string
	ws      *websocket.Conn

	wmu sync.Mutex // serialises writes

	mu       sync.Mutex
	pending  map[string]chan *ocpp.Frame
	sessions map[string]*Session // by transactionId, billed (hold granted)
	byEvse   map[int]string      // evseId -> transactionId
}

func newConn(g *Gateway, station string, ws *websocket.Conn) *conn {
	ws.SetReadLimit(maxFrame)
	return &conn{g: g, station: station, ws: ws,
		pending: map[string]chan *ocpp.Frame{}, sessions: map[string]*Session{}, byEvse: map[int]string{}}
}

// run reads frames until the socket closes or ctx ends. Answers to the
// gateway's own calls go to their waiters; the station's calls are
// handled one at a time by a worker, so a slow hold request does not keep
// the reader from seeing a CALLRESULT.
func (c *conn) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	calls := make(chan *ocpp.Frame, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-calls:
				c.handleCall(ctx, f)
			}
		}
	}()
	defer func() {
		cancel()
		c.ws.Close()
		wg.Wait()
	}()
	for {
		mt, b, err := c.ws.ReadMessage()
		if err != nil {
			c.g.log.Info("ocpp station disconnected", "station", c.station, "err", err)
			return
		}
		if mt != websocket.TextMessage {
			c.write(ocpp.EncodeCallError("", ocpp.RPCFrameworkError, "OCPP-J frames are text messages"))
			continue
		}
		f, err := ocpp.Decode(b)
		if err != nil {
			var oe *ocpp.Error
			errors.As(err, &oe)
			c.g.log.Warn("ocpp bad frame", "station", c.station, "err", err)
			c.write(ocpp.EncodeCallError(oe.ID, oe.Code, oe.Message))
			continue
		}
		switch f.Type {
		case ocpp.TypeCall:
			select {
			case calls <- f:
			case <-ctx.Done():
				return
			}
		default:
			c.mu.Lock()
			ch := c.pending[f.ID]
			delete(c.pending, f.ID)
			c.mu.Unlock()
			if ch == nil {
				c.g.log.Warn("ocpp answer to no call", "station", c.station, "id", f.ID)
				continue
			}
			ch <- f
		}
	}
}

func (c *conn) write(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.g.log.Warn("ocpp write", "station", c.station, "err", err)
	}
}

// handleCall validates the station's CALL, runs its action and answers
// with a CALLRESULT checked against the response schema, or a CALLERROR.
func (c *conn) handleCall(ctx context.Context, f *ocpp.Frame) {
	fail := func(err error) {
		var oe *ocpp.Error
		if !errors.As(err, &oe) {
			c.g.log.Error("ocpp action failed", "station", c.station, "action", f.Action, "err", err)
			oe = &ocpp.Error{Code: ocpp.InternalError, Message: "internal error"}
		}
		c.write(ocpp.EncodeCallError(f.ID, oe.Code, oe.Message))
	}
	h, ok := handlerFor(f.Action)
	if !ok {
		code := ocpp.NotImplemented
		if err := c.g.cfg.Schemas.Validate(f.Action, ocpp.Request, f.Payload); !errors.Is(err, ocpp.ErrUnknownAction) {
			code = ocpp.NotSupported // an OCPP action, but not one a station sends to this CSMS
		}
		fail(&ocpp.Error{Code: code, Message: f.Action})
		return
	}
	if err := c.g.cfg.Schemas.Validate(f.Action, ocpp.Request, f.Payload); err != nil {
		c.g.log.Warn("ocpp schema violation", "station", c.station, "action", f.Action, "err", err)
		fail(err)
		return
	}
	resp, err := h(c, ctx, f.Payload)
	if err != nil {
		fail(err)
		return
	}
	body := marshal(resp)
	if err := c.g.cfg.Schemas.Validate(f.Action, ocpp.Response, body); err != nil {
		fail(fmt.Errorf("gateway: own %s response: %w", f.Action, err))
		return
	}
	b, err := ocpp.EncodeCallResult(f.ID, body)
	if err != nil {
		fail(err)
		return
	}
	c.write(b)
}

// call sends a CALL to the station and waits for its CALLRESULT, checking
// both against the schemas.
func (c *conn) call(ctx context.Context, action string, req any) (json.RawMessage, error) {
	body := marshal(req)
	if err := c.g.cfg.Schemas.Validate(action, ocpp.Request, body); err != nil {
		return nil, fmt.Errorf("gateway: own %s request: %w", action, err)
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	b, err := ocpp.EncodeCall(id, action, body)
	if err != nil {
		return nil, err
	}
	ch := make(chan *ocpp.Frame, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	c.write(b)
	ctx, cancel := context.WithTimeout(ctx, c.g.cfg.CallTimeout)
	defer cancel()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("gateway: %s to %s: %w", action, c.station, ctx.Err())
	case f := <-ch:
		if f.Type == ocpp.TypeCallError {
			return nil, fmt.Errorf("gateway: %s to %s: %w", action, c.station, &ocpp.Error{Code: f.Code, ID: f.ID, Message: f.Description})
		}
		if err := c.g.cfg.Schemas.Validate(action, ocpp.Response, f.Payload); err != nil {
			return nil, fmt.Errorf("gateway: %s answer from %s: %w", action, c.station, err)
		}
		return f.Payload, nil
	}
}

func (c *conn) requestStop(ctx context.Context, tx string) error {
	raw, err := c.call(ctx, "RequestStopTransaction", requestStopReq{TransactionID: tx})
	if err != nil {
		return err
	}
	var conf requestStopConf
	if err := json.Unmarshal(raw, &conf); err != nil {
		return fmt.Errorf("gateway: stop answer: %w", err)
	}
	if conf.Status != "Accepted" {
		return ErrStopRejected
	}
	return nil
}

func (c *conn) sessionsOf(payer string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for tx, s := range c.sessions {
		if s.Payer == payer {
			out = append(out, tx)
		}
	}
	return out
}

func (c *conn) now() string { return c.g.cfg.Clock.Now().UTC().Format(time.RFC3339) }
