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
