package record

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/m2mhub/m2mhub/hub"
)

// DecodeChannel decodes the JSON of a stored channel record (both stores
// keep the record's static part as json.Marshal writes it). It reads what
// json.Unmarshal into a hub.ChannelRecord reads, at a fraction of the cost,
// because a restarted hub decodes every channel: the two keys are taken as
// stored, 33 bytes of hex with a compressed point's prefix, without
// hub.ParsePubKey's point decompression (about half the cost of a plain
// json.Unmarshal; the keys were checked when the record was written, and
// the channel manager parses them again before it uses them), and the
// pending id and signature arrays are read by hand instead of by
// reflection, one element at a time.
func DecodeChannel(doc []byte, c *hub.ChannelRecord) error {
	d := channelDoc{ChannelRecord: c}
	if err := json.Unmarshal(doc, &d); err != nil {
		return err
	}
	c.PendingID, c.DeviceSig = d.PendingID, d.DeviceSig
	c.DeviceKey, c.HubKey = hub.PubKey(d.DeviceKey), hub.PubKey(d.HubKey)
	return nil
}

// channelDoc shadows the fields of a channel record that are costly to
// decode by reflection; the rest decode into the embedded record.
type channelDoc struct {
	*hub.ChannelRecord
	PendingID bytes32   `json:"pending_id"`
	DeviceKey storedKey `json:"device_key"`
	HubKey    storedKey `json:"hub_key"`
	DeviceSig bytes64   `json:"device_sig"`
}

// storedKey is a compressed public key as a store wrote it.
type storedKey hub.PubKey

func (k *storedKey) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(k) {
		return fmt.Errorf("%w: public key must be 33 bytes of hex", hub.ErrInvalid)
	}
	if _, err := hex.Decode(k[:], b); err != nil || (k[0] != 2 && k[0] != 3) {
		return fmt.Errorf("%w: public key %q is not a compressed point", hub.ErrInvalid, b)
	}
	return nil
}

// bytes32 and bytes64 are fixed-size byte arrays as encoding/json writes
// them: arrays of numbers 0-255.
type (
	bytes32 [32]byte
	bytes64 [64]byte
)

func (v *bytes32) UnmarshalJSON(b []byte) error { return readByteArray(b, v[:]) }
func (v *bytes64) UnmarshalJSON(b []byte) error { return readByteArray(b, v[:]) }

var errByteArray = errors.New("record: byte array")

// readByteArray reads the JSON array b into out as json.Unmarshal reads an
// array into a byte array: null leaves out as it is, missing elements are
// zero, elements past len(out) are ignored. encoding/json has checked that
// b is one valid JSON value, so a number has no sign, fraction or leading
// zero unless it is in error here too.
func readByteArray(b []byte, out []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) < 2 || b[0] != '[' {
		return fmt.Errorf("%w: not an array: %.40q", errByteArray, b)
	}
	clear(out)
	n, cur, digits := 0, 0, 0
	for _, ch := range b[1:] {
		switch {
		case ch >= '0' && ch <= '9':
			cur = cur*10 + int(ch-'0')
			digits++
			if cur > 255 {
				return fmt.Errorf("%w: element %d out of range", errByteArray, n)
			}
		case ch == ',' || ch == ']':
			if digits == 0 {
				if ch == ']' && n == 0 {
					return nil // []
				}
				return fmt.Errorf("%w: element %d is not a number", errByteArray, n)
			}
			out[n] = byte(cur)
			n, cur, digits = n+1, 0, 0
			if n == len(out) {
				return nil // encoding/json skips any further elements
			}
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r':
		default:
			return fmt.Errorf("%w: element %d: unexpected %q", errByteArray, n, ch)
		}
	}
	return nil
}
