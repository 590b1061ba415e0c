package record

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/m2mhub/m2mhub/hub"
)

// EncodeDevice is the stored form of d, the one both stores write. It
// refuses, with an error wrapping hub.ErrInvalid, a device that does not
// validate or whose encoding does not decode back to the same record, so
// no store ever holds a record it cannot read.
func EncodeDevice(d hub.Device) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	doc, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("%w: encode device %s: %v", hub.ErrInvalid, d.ID, err)
	}
	back, err := DecodeDevice(d.ID, doc)
	if err != nil {
		return nil, fmt.Errorf("%w: device %s does not read back: %v", hub.ErrInvalid, d.ID, err)
	}
	if again, err := json.Marshal(back); err != nil || !bytes.Equal(again, doc) {
		return nil, fmt.Errorf("%w: device %s does not read back the same", hub.ErrInvalid, d.ID)
	}
	return doc, nil
}

// DecodeDevice decodes a stored device record kept under id. A record that
// does not decode, does not validate or names another id is refused with
// an error wrapping hub.ErrUnreadable.
func DecodeDevice(id string, doc []byte) (hub.Device, error) {
	var d hub.Device
	if err := json.Unmarshal(doc, &d); err != nil {
		return hub.Device{}, fmt.Errorf("%w: device %s: %v", hub.ErrUnreadable, id, err)
	}
	if err := d.Validate(); err != nil {
		return hub.Device{}, fmt.Errorf("%w: device %s: %v", hub.ErrUnreadable, id, err)
	}
	if d.ID != id {
		return hub.Device{}, fmt.Errorf("%w: device %s: record names %q", hub.ErrUnreadable, id, d.ID)
	}
	return d, nil
}
