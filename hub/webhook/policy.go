package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/m2mhub/m2mhub/hub"
)

// ErrAddressRefused marks a webhook URL, or a delivery's connection, to an
// address the hub does not call.
var ErrAddressRefused = errors.New("webhook: address refused")

// AddressPolicy says which addresses webhooks may reach. Link-local
// addresses (169.254.0.0/16 with the cloud metadata service
// 169.254.169.254, fe80::/10), unspecified, multicast and broadcast ones
// are always refused; loopback and private ones (RFC 1918, 100.64.0.0/10,
// fc00::/7) only when AllowPrivate is set. It is checked when a URL is
// registered and again on the address each delivery actually dials, after
// DNS resolution, so a name that resolves (or later re-resolves) to a
// refused address reaches nothing.
type AddressPolicy struct {
	// AllowPrivate admits loopback and private addresses (hubd
	// --webhook.allow-private), for back ends on the hub's own network.
	AllowPrivate bool
	// Resolver resolves host names at registration; net.DefaultResolver
	// when nil.
	Resolver *net.Resolver
}

// cgnat is the shared address space of RFC 6598, private in practice.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Check refuses an address the policy does not allow, with an error
// wrapping ErrAddressRefused.
func (p AddressPolicy) Check(ip netip.Addr) error {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return fmt.Errorf("%w: not an IP address", ErrAddressRefused)
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return fmt.Errorf("%w: %s is link-local (cloud metadata lives there)", ErrAddressRefused, ip)
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%w: %s is not a unicast address", ErrAddressRefused, ip)
	case !p.AllowPrivate && (ip.IsLoopback() || ip.IsPrivate() || cgnat.Contains(ip)):
		return fmt.Errorf("%w: %s is loopback or private (hubd --webhook.allow-private admits it)", ErrAddressRefused, ip)
	}
	return nil
}

// resolveTimeout bounds the look-up of a host name at registration.
const resolveTimeout = 5 * time.Second

// CheckURL checks a webhook URL when it is registered: absolute http(s),
// and its host an allowed address or a name every address of which is
// allowed. A name that does not resolve now is accepted: its addresses
// are checked at each delivery. Errors wrap hub.ErrInvalid.
func (p AddressPolicy) CheckURL(ctx context.Context, rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: webhook url %q is not an absolute http(s) URL without credentials", hub.ErrInvalid, rawURL)
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := p.Check(ip); err != nil {
			return nil, fmt.Errorf("%w: webhook url: %v", hub.ErrInvalid, err)
		}
		return u, nil
	}
	r := p.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return u, nil // checked when delivering
	}
	for _, ip := range ips {
		if err := p.Check(ip); err != nil {
			return nil, fmt.Errorf("%w: webhook url: %s resolves to a refused address: %v", hub.ErrInvalid, host, err)
		}
	}
	return u, nil
}

// Client returns an HTTP client for deliveries that dials only addresses
// the policy allows, checked on the resolved address of every connection
// (redirects included), and uses no proxy.
func (p AddressPolicy) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{
		Timeout: timeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrAddressRefused, address)
			}
			return p.Check(ap.Addr())
		},
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		TLSHandshakeTimeout: timeout,
		MaxIdleConns:        16,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}
