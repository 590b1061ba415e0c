package wire

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestChanCodesMatchProtocolDoc: the ChannelError code table of
// docs/protocol.md lists exactly ChanCodes(), each once, and its "retry"
// column is ChanCode.Retryable, so the one table a client author reads is
// the one the hub and the Go client act on.
func TestChanCodesMatchProtocolDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([a-z0-9-]+)` \\| [^|]+ \\| (yes|no|—) \\|")
	doc := map[ChanCode]string{}
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := doc[ChanCode(m[1])]; dup {
			t.Errorf("code %s listed twice", m[1])
		}
		doc[ChanCode(m[1])] = m[2]
	}
	for _, c := range ChanCodes() {
		retry, ok := doc[c]
		switch {
		case !ok:
			t.Errorf("code %s is not in the table", c)
		case retry != "—" && (retry == "yes") != c.Retryable():
			t.Errorf("code %s: table says retry %s, Retryable() = %v", c, retry, c.Retryable())
		}
		delete(doc, c)
	}
	for c := range doc {
		t.Errorf("table lists %s, which is not a code", c)
	}
}
