package charging

// LockPay takes the lock of c's payment side, as a flush walking its maps
// holds it, and returns the function that gives it back.
func LockPay(c *Service) (unlock func()) {
	c.pay.Lock()
	return c.pay.Unlock
}
