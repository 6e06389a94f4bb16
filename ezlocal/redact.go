package ezlocal

import "fmt"

// GoString describes the engine by its URL, never by its configuration
// (accepted API keys, webhook signing secrets).
func (e *Engine) GoString() string {
	if e == nil {
		return "(*ezlocal.Engine)(nil)"
	}
	return fmt.Sprintf("ezlocal.Engine{url: %q}", e.url)
}

// String is GoString.
func (e *Engine) String() string { return e.GoString() }
