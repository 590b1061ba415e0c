package channels

// FillPaySlots takes every slot of the devices' own payments, as that
// many payments in progress would, and returns the function that frees
// them.
func FillPaySlots(c *Manager) (free func()) {
	for range cap(c.slots.ch) {
		c.slots.ch <- struct{}{}
	}
	return func() {
		for range cap(c.slots.ch) {
			<-c.slots.ch
		}
	}
}
