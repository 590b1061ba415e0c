package metering

import (
	"bytes"
	"fmt"
)

// ParseBatch decodes a NATS message body: one event object or a JSON array
// of 1..MaxBatchEvents events, at most MaxBatchBytes. It is strict: only
// strings, arrays and objects; no unknown or duplicate fields; no
// present-but-empty optional fields; every string bounded. Errors wrap
// ErrMalformed. It checks shape only: Validate checks meaning and Verify the
// signature.
func ParseBatch(b []byte) ([]Event, error) {
	if len(b) > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxBatchBytes)
	}
	v, err := decodeTree(b)
	if err != nil {
		return nil, err
	}
	var items []any
	switch t := v.(type) {
	case map[string]any:
		items = []any{t}
	case []any:
		if len(t) == 0 || len(t) > MaxBatchEvents {
			return nil, fmt.Errorf("%w: a batch holds 1..%d events, got %d", ErrMalformed, MaxBatchEvents, len(t))
		}
		items = t
	default:
		return nil, fmt.Errorf("%w: body is neither an event nor an array of events", ErrMalformed)
	}
	evs := make([]Event, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: batch item %d is not an object", ErrMalformed, i)
		}
		if evs[i], err = eventFromTree(m); err != nil {
			return nil, fmt.Errorf("batch item %d: %w", i, err)
		}
	}
	return evs, nil
}

// fields reads the string fields of one object, refusing unknown keys.
type fields struct {
	m    map[string]any
	seen int
	err  error
	at   string // where m sits, for error messages
}

func (f *fields) str(key string, required bool, maxLen int) string {
	v, ok := f.m[key]
	if !ok {
		if required && f.err == nil {
			f.err = fmt.Errorf("%w: %s%s is required", ErrMalformed, f.at, key)
		}
		return ""
	}
	f.seen++
	s, ok := v.(string)
	switch {
	case f.err != nil:
	case !ok:
		f.err = fmt.Errorf("%w: %s%s must be a string", ErrMalformed, f.at, key)
	case s == "":
		f.err = fmt.Errorf("%w: %s%s is empty (omit empty fields)", ErrMalformed, f.at, key)
	case len(s) > maxLen:
		f.err = fmt.Errorf("%w: %s%s longer than %d bytes", ErrMalformed, f.at, key, maxLen)
	}
	return s
}

// list returns the objects of an optional array field.
func (f *fields) list(key string, maxLen int) []map[string]any {
	v, ok := f.m[key]
	if !ok || f.err != nil {
		return nil
	}
	f.seen++
	a, ok := v.([]any)
	if !ok || len(a) == 0 || len(a) > maxLen {
		f.err = fmt.Errorf("%w: %s%s must be an array of 1..%d objects", ErrMalformed, f.at, key, maxLen)
		return nil
	}
	out := make([]map[string]any, len(a))
	for i, e := range a {
		if out[i], ok = e.(map[string]any); !ok {
			f.err = fmt.Errorf("%w: %s%s[%d] is not an object", ErrMalformed, f.at, key, i)
			return nil
		}
	}
	return out
}

// strs returns the strings of an optional array field: 1..maxN non-empty
// strings of at most maxLen bytes.
func (f *fields) strs(key string, maxN, maxLen int) []string {
	v, ok := f.m[key]
	if !ok || f.err != nil {
		return nil
	}
	f.seen++
	a, ok := v.([]any)
	if !ok || len(a) == 0 || len(a) > maxN {
		f.err = fmt.Errorf("%w: %s%s must be an array of 1..%d strings", ErrMalformed, f.at, key, maxN)
		return nil
	}
	out := make([]string, len(a))
	for i, e := range a {
		if out[i], ok = e.(string); !ok || out[i] == "" || len(out[i]) > maxLen {
			f.err = fmt.Errorf("%w: %s%s[%d] must be a string of 1..%d bytes", ErrMalformed, f.at, key, i, maxLen)
			return nil
		}
	}
	return out
}

// done reports the first error, or an unknown key if any was left unread.
func (f *fields) done() error {
	if f.err != nil {
		return f.err
	}
	if f.seen != len(f.m) {
		return fmt.Errorf("%w: %sunknown field", ErrMalformed, f.at)
	}
	return nil
}

func eventFromTree(m map[string]any) (Event, error) {
	f := fields{m: m}
	e := Event{
		SpecVersion:     f.str("specversion", true, MaxValueLen),
		ID:              f.str("id", true, MaxIDLen),
		Source:          f.str("source", true, MaxNameLen),
		Type:            f.str("type", true, MaxValueLen),
		Subject:         f.str("subject", true, MaxNameLen),
		Time:            f.str("time", true, MaxValueLen),
		DataContentType: f.str("datacontenttype", false, MaxValueLen),
		Sig:             f.str("m2mhubsig", false, MaxValueLen),
	}
	dv, ok := m["data"]
	if !ok {
		return Event{}, fmt.Errorf("%w: data is required", ErrMalformed)
	}
	f.seen++
	if err := f.done(); err != nil {
		return Event{}, err
	}
	dm, ok := dv.(map[string]any)
	if !ok {
		return Event{}, fmt.Errorf("%w: data must be an object", ErrMalformed)
	}
	var err error
	if e.Data, err = dataFromTree(dm); err != nil {
		return Event{}, err
	}
	return e, nil
}

func dataFromTree(m map[string]any) (Data, error) {
	f := fields{m: m, at: "data."}
	d := Data{
		Contract:     f.str("contract", true, MaxValueLen),
		Session:      f.str("session", false, MaxNameLen),
		Quantity:     f.str("quantity", false, MaxValueLen),
		Unit:         f.str("unit", false, MaxNameLen),
		Start:        f.str("start", false, MaxValueLen),
		End:          f.str("end", false, MaxValueLen),
		VehicleClass: f.str("vehicle_class", false, MaxNameLen),
		SellerMeter:  f.str("seller_meter", false, MaxNameLen),
		BuyerMeter:   f.str("buyer_meter", false, MaxNameLen),
		TariffType:   f.str("tariff_type", false, MaxNameLen),
	}
	for _, pm := range f.list("periods", MaxPeriods) {
		pf := fields{m: pm, at: "data.periods[]."}
		p := Period{
			Start:     pf.str("start", true, MaxValueLen),
			EnergyKWh: pf.str("energy_kwh", false, MaxValueLen),
			PowerKW:   pf.str("power_kw", false, MaxValueLen),
			CurrentA:  pf.str("current_a", false, MaxValueLen),
			State:     pf.str("state", true, MaxNameLen),
		}
		if err := pf.done(); err != nil {
			return Data{}, err
		}
		d.Periods = append(d.Periods, p)
	}
	for _, rm := range f.list("readings", MaxReadings) {
		rf := fields{m: rm, at: "data.readings[]."}
		r := Reading{Time: rf.str("time", false, MaxValueLen), Value: rf.str("value", true, MaxValueLen)}
		if err := rf.done(); err != nil {
			return Data{}, err
		}
		d.Readings = append(d.Readings, r)
	}
	d.SignedReadings = f.strs("signed_readings", MaxReadings, MaxSignedLen)
	if rv, ok := m["reservation"]; ok && f.err == nil {
		f.seen++
		rm, ok := rv.(map[string]any)
		if !ok {
			return Data{}, fmt.Errorf("%w: data.reservation must be an object", ErrMalformed)
		}
		rf := fields{m: rm, at: "data.reservation."}
		r := &Reservation{Start: rf.str("start", true, MaxValueLen), End: rf.str("end", true, MaxValueLen), Expired: rf.str("expired", false, MaxValueLen)}
		if err := rf.done(); err != nil {
			return Data{}, err
		}
		d.Reservation = r
	}
	if av, ok := m["attributes"]; ok && f.err == nil {
		f.seen++
		am, ok := av.(map[string]any)
		if !ok || len(am) == 0 || len(am) > MaxAttributes {
			return Data{}, fmt.Errorf("%w: data.attributes must be an object of 1..%d strings", ErrMalformed, MaxAttributes)
		}
		d.Attributes = make(map[string]string, len(am))
		for k, v := range am {
			s, ok := v.(string)
			if !ok || k == "" || len(k) > MaxNameLen || len(s) > MaxValueLen {
				return Data{}, fmt.Errorf("%w: data.attributes[%q] must be a bounded string", ErrMalformed, k)
			}
			d.Attributes[k] = s
		}
	}
	if err := f.done(); err != nil {
		return Data{}, err
	}
	return d, nil
}

// tree returns the event as a JSON tree, omitting empty optional fields and,
// when withSig is false, the signature.
func (e *Event) tree(withSig bool) map[string]any {
	m := map[string]any{
		"specversion": e.SpecVersion, "id": e.ID, "source": e.Source, "type": e.Type,
		"subject": e.Subject, "time": e.Time,
	}
	put(m, "datacontenttype", e.DataContentType)
	if withSig {
		put(m, "m2mhubsig", e.Sig)
	}
	d := map[string]any{"contract": e.Data.Contract}
	put(d, "session", e.Data.Session)
	put(d, "quantity", e.Data.Quantity)
	put(d, "unit", e.Data.Unit)
	put(d, "start", e.Data.Start)
	put(d, "end", e.Data.End)
	put(d, "vehicle_class", e.Data.VehicleClass)
	put(d, "seller_meter", e.Data.SellerMeter)
	put(d, "buyer_meter", e.Data.BuyerMeter)
	put(d, "tariff_type", e.Data.TariffType)
	if r := e.Data.Reservation; r != nil {
		rm := map[string]any{"start": r.Start, "end": r.End}
		put(rm, "expired", r.Expired)
		d["reservation"] = rm
	}
	if len(e.Data.Periods) > 0 {
		ps := make([]any, len(e.Data.Periods))
		for i, p := range e.Data.Periods {
			pm := map[string]any{"start": p.Start, "state": p.State}
			put(pm, "energy_kwh", p.EnergyKWh)
			put(pm, "power_kw", p.PowerKW)
			put(pm, "current_a", p.CurrentA)
			ps[i] = pm
		}
		d["periods"] = ps
	}
	if len(e.Data.Readings) > 0 {
		rs := make([]any, len(e.Data.Readings))
		for i, r := range e.Data.Readings {
			rm := map[string]any{"value": r.Value}
			put(rm, "time", r.Time)
			rs[i] = rm
		}
		d["readings"] = rs
	}
	if len(e.Data.SignedReadings) > 0 {
		ss := make([]any, len(e.Data.SignedReadings))
		for i, r := range e.Data.SignedReadings {
			ss[i] = r
		}
		d["signed_readings"] = ss
	}
	if len(e.Data.Attributes) > 0 {
		am := make(map[string]any, len(e.Data.Attributes))
		for k, v := range e.Data.Attributes {
			am[k] = v
		}
		d["attributes"] = am
	}
	m["data"] = d
	return m
}

func put(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// Canonical returns the JCS form of the event without its signature: the
// bytes the signature's digest is computed over.
func (e *Event) Canonical() []byte { return appendCanonical(nil, e.tree(false)) }

// MarshalJSON encodes the event in canonical form, signature included, so
// the hub and providers send the same bytes for the same event.
func (e Event) MarshalJSON() ([]byte, error) { return appendCanonical(nil, e.tree(true)), nil }

// EncodeBatch returns the NATS message body for evs: the single event, or
// an array of them.
func EncodeBatch(evs []Event) ([]byte, error) {
	if len(evs) == 0 || len(evs) > MaxBatchEvents {
		return nil, fmt.Errorf("%w: a batch holds 1..%d events, got %d", ErrMalformed, MaxBatchEvents, len(evs))
	}
	if len(evs) == 1 {
		return evs[0].MarshalJSON()
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i := range evs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(appendCanonical(nil, evs[i].tree(true)))
	}
	buf.WriteByte(']')
	if buf.Len() > MaxBatchBytes {
		return nil, fmt.Errorf("%w: batch of %d bytes, limit %d", ErrMalformed, buf.Len(), MaxBatchBytes)
	}
	return buf.Bytes(), nil
}
