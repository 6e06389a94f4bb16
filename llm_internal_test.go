package ezthrottle

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestBudgetUnseen: at the answer to a request, the requests the API may
// not have counted are those still in flight and those answered with a
// lower remaining count (admitted after it), whatever order they were sent
// in; those answered with a higher count were counted.
func TestBudgetUnseen(t *testing.T) {
	e := func(seq uint64, tokens int64, done bool, rem int64) flightEntry {
		f := flightEntry{seq: seq, cost: TokenCost{Input: tokens}, done: done}
		if done {
			f.rem[BudgetTokens], f.hasRem[BudgetTokens] = rem, true
		}
		return f
	}
	mb := &modelBudget{flight: []flightEntry{
		e(1, 100, true, 900),  // sent before, admitted before (more left): counted
		e(2, 200, true, 300),  // sent before, admitted after (less left): not counted
		e(3, 400, false, 0),   // the request answered, rem 500
		e(4, 800, false, 0),   // in flight: maybe not counted
		e(5, 1600, true, 600), // sent after, admitted before: counted
		e(6, 3200, true, 100), // sent after, admitted after: not counted
	}}
	assert.Equal(t, int64(200+800+3200), mb.unseen(3, BudgetTokens, 500))
	assert.Equal(t, int64(5), mb.unseen(3, BudgetRequests, 500), "no answer said how many requests remained: all five may be unseen")
}
