package control

import "testing"

// TestCodeShuttingDown pins 1012: its value, its words, and that a client
// refused with it retries (so it is back once the server restarts).
func TestCodeShuttingDown(t *testing.T) {
	if int(CodeShuttingDown) != 1012 {
		t.Errorf("CodeShuttingDown = %d, want 1012", int(CodeShuttingDown))
	}
	if got := CodeShuttingDown.String(); got != "server is shutting down" {
		t.Errorf("CodeShuttingDown.String() = %q, want %q", got, "server is shutting down")
	}
	if CodeShuttingDown.Fatal() {
		t.Error("CodeShuttingDown.Fatal() = true: a client refused at shutdown would stop instead of retrying")
	}
	err := &RejectError{Code: CodeShuttingDown, Reason: CodeShuttingDown.String()}
	if got, want := err.Error(), "refused: 1012 server is shutting down"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if CodeOf(err) != CodeShuttingDown {
		t.Errorf("CodeOf(%v) = %d, want 1012", err, CodeOf(err))
	}
}

// TestCodeRegistryDown pins 1014: its value, its words, that a client
// refused with it at login retries, and that a mapping refused with it is
// registered again (the registry comes back).
func TestCodeRegistryDown(t *testing.T) {
	if int(CodeRegistryDown) != 1014 {
		t.Errorf("CodeRegistryDown = %d, want 1014", int(CodeRegistryDown))
	}
	if got, want := CodeRegistryDown.String(), "the fleet's registry (etcd) is unreachable"; got != want {
		t.Errorf("CodeRegistryDown.String() = %q, want %q", got, want)
	}
	if CodeRegistryDown.Fatal() || !CodeRegistryDown.Retried() {
		t.Errorf("CodeRegistryDown: Fatal %v, Retried %v; want a refusal that is retried", CodeRegistryDown.Fatal(), CodeRegistryDown.Retried())
	}
	for _, c := range []Code{CodePortNotAllowed, CodeTooManyMappings, CodeDuplicateName, CodeMalformed} {
		if c.Retried() {
			t.Errorf("%d.Retried() = true; it cannot clear by itself", int(c))
		}
	}
}
