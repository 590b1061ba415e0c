package charging

import "context"

// LockPay takes the lock of c's payment side, as a flush walking its maps
// holds it, and returns the function that gives it back.
func LockPay(c *Service) (unlock func()) {
	c.pay.Lock()
	return c.pay.Unlock
}

// ScanOwed runs one scan of the owed charges nobody holds, as c does
// every claimScan once started.
func ScanOwed(ctx context.Context, c *Service) { c.scanOwed(ctx, false) }
