package deptest_test

import (
	"fmt"
	"testing"
)

// fakeT records the errors a check reports instead of failing.
type fakeT struct {
	testing.TB
	errs []string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fakeT) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
