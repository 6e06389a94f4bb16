package ezthrottle_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/llmsim"
)

// simBase serves requests with an llmsim.Server in-process (no network).
func simBase(s *llmsim.Server) http.RoundTripper {
	return rtFunc(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		if r.Body != nil {
			_ = r.Body.Close()
		}
		resp := rec.Result()
		resp.Request = r
		return resp, nil
	})
}

// chat returns a chat request body costing input+output tokens at llmsim's
// rule (the role "user" counts 4 characters).
func chat(model string, input, output int) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"` + strings.Repeat("a", input*4-4) +
		`"}],"max_tokens":` + strconv.Itoa(output) + `}`
}

func post(t *testing.T, c *http.Client, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	return resp, err
}

// TestBudgetLearnedFromHeaders: a host that announces token budgets is kept
// under them from the second response on, with no configuration; the
// Transport's default limit (2 rps) no longer paces it.
func TestBudgetLearnedFromHeaders(t *testing.T) {
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		t.Run(path, func(t *testing.T) {
			clk := newFakeClock()
			sim := llmsim.New(llmsim.WithModel("m", llmsim.Limits{RPM: 600, TPM: 1000, InputTPM: 1000, OutputTPM: 1000}), llmsim.WithClock(clk.Now))
			tr := mustNew(t, ezthrottle.WithBase(simBase(sim)), ezthrottle.WithClock(clk))
			c := &http.Client{Transport: tr}
			ctx := context.Background()
			url := "http://llm.test" + path
			// 4 requests of 250 tokens use the whole minute's budget.
			for i := 0; i < 4; i++ {
				resp, err := post(t, c, ctx, url, chat("m", 100, 150))
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, resp.StatusCode, i)
			}
			// The fifth must wait 15 s (250 tokens at 1000/min), not be sent.
			done := make(chan *http.Response, 1)
			go func() {
				resp, err := post(t, c, ctx, url, chat("m", 100, 150))
				assert.NoError(t, err)
				done <- resp
			}()
			waitFor(t, "the fifth request to wait", func() bool { return clk.Timers() > 0 })
			clk.Advance(14 * time.Second)
			select {
			case <-done:
				t.Fatal("sent before its budget allowed")
			case <-time.After(20 * time.Millisecond):
			}
			clk.Advance(time.Second)
			resp := <-done
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Zero(t, sim.Stats().Limited, "no 429")
		})
	}
}

// TestBudgetCorrectedByRemaining: the API's remaining count lowers the local
// bucket when the estimate was too low (here: the API counts a system
// prompt the client's cost function ignores).
func TestBudgetCorrectedByRemaining(t *testing.T) {
	clk := newFakeClock()
	sim := llmsim.New(llmsim.WithModel("m", llmsim.Limits{TPM: 1000}), llmsim.WithClock(clk.Now))
	tr := mustNew(t, ezthrottle.WithBase(simBase(sim)), ezthrottle.WithClock(clk),
		ezthrottle.WithCost(func(*http.Request, []byte, bool) (ezthrottle.TokenCost, bool) {
			return ezthrottle.TokenCost{Model: "m", Input: 100}, true // the API charges 250
		}))
	c := &http.Client{Transport: tr}
	for i := 0; i < 4; i++ {
		resp, err := post(t, c, context.Background(), "http://llm.test/v1/chat/completions", chat("m", 100, 150))
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, i)
	}
	// Locally 400 of 1000 are spent (more on the first, unbudgeted
	// request); the API says 0 remain: the fifth request waits.
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := post(t, c, context.Background(), "http://llm.test/v1/chat/completions", chat("m", 100, 150))
		assert.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}()
	waitFor(t, "the fifth request to wait", func() bool { return clk.Timers() > 0 })
	clk.Advance(15 * time.Second)
	<-done
	assert.Zero(t, sim.Stats().Limited)
}

// TestBudgetOverWhole: a request that costs more than the whole budget fails
// at once with a *BudgetError, its body closed, nothing sent.
func TestBudgetOverWhole(t *testing.T) {
	clk := newFakeClock()
	var sent atomic.Int32
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return respond(r, 200, "{}", "x-ratelimit-limit-tokens", "1000", "x-ratelimit-remaining-tokens", "1000"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk))
	c := &http.Client{Transport: tr}
	_, err := post(t, c, context.Background(), "http://llm.test/v1/chat/completions", chat("m", 10, 10))
	require.NoError(t, err)
	body := newTrackedBody(chat("m", 600, 500))
	req, _ := http.NewRequest(http.MethodPost, "http://llm.test/v1/chat/completions", body)
	_, err = tr.RoundTrip(req)
	var be *ezthrottle.BudgetError
	require.ErrorAs(t, err, &be)
	assert.ErrorIs(t, err, ezthrottle.ErrOverBudget)
	assert.Equal(t, int64(1100), be.Cost)
	assert.Equal(t, int64(1000), be.Limit)
	assert.Equal(t, "m", be.Model)
	assert.True(t, body.Closed())
	assert.EqualValues(t, 1, sent.Load())
}

// TestBudgetDeadline: a wait for a budget that cannot end before the
// request's deadline is refused at once.
func TestBudgetDeadline(t *testing.T) {
	clk := newFakeClock()
	sim := llmsim.New(llmsim.WithModel("m", llmsim.Limits{TPM: 1000}), llmsim.WithClock(clk.Now))
	tr := mustNew(t, ezthrottle.WithBase(simBase(sim)), ezthrottle.WithClock(clk),
		ezthrottle.WithTokenBudget("llm.test", "", ezthrottle.TokenBudget{TokensPerMinute: 1000}))
	c := &http.Client{Transport: tr}
	for i := 0; i < 4; i++ {
		_, err := post(t, c, context.Background(), "http://llm.test/v1/chat/completions", chat("m", 100, 150))
		require.NoError(t, err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(10*time.Second))
	defer cancel()
	_, err := post(t, c, ctx, "http://llm.test/v1/chat/completions", chat("m", 100, 150))
	require.ErrorIs(t, err, ezthrottle.ErrThrottled)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Zero(t, sim.Stats().Limited)
	assert.Equal(t, 4, sim.Stats().Admitted)
}

// TestBudgetConfiguredPerModel: configured budgets (for an API without
// headers) are kept per model; a model's own rule wins over the host's.
func TestBudgetConfiguredPerModel(t *testing.T) {
	clk := newFakeClock()
	var sent atomic.Int32
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return respond(r, 200, "{}"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithTokenBudget("*.gw.test", "", ezthrottle.TokenBudget{TokensPerMinute: 600}),
		ezthrottle.WithTokenBudget("*.gw.test", "big", ezthrottle.TokenBudget{TokensPerMinute: 6000}))
	c := &http.Client{Transport: tr}
	for i := 0; i < 3; i++ {
		_, err := post(t, c, context.Background(), "http://a.gw.test/v1/chat/completions", chat("small", 100, 100))
		require.NoError(t, err)
		_, err = post(t, c, context.Background(), "http://a.gw.test/v1/chat/completions", chat("big", 1000, 1000))
		require.NoError(t, err)
	}
	assert.EqualValues(t, 6, sent.Load())
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Second))
	defer cancel()
	_, err := post(t, c, ctx, "http://a.gw.test/v1/chat/completions", chat("small", 100, 100))
	assert.ErrorIs(t, err, ezthrottle.ErrThrottled, "small's 600 are spent")
	_, err = post(t, c, ctx, "http://other.test/v1/chat/completions", chat("small", 100, 100))
	assert.NoError(t, err, "another host has no budget")
}

// TestBudgetNoCostWithoutHeaders: a request to a host that never announced
// budgets is passed on untouched: its body is not read ahead.
func TestBudgetNoCostWithoutHeaders(t *testing.T) {
	llm := "http://llm.test/v1/chat/completions"
	var sawOriginal atomic.Bool
	body := newTrackedBody(chat("m", 10, 10))
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "llm.test" {
			return respond(r, 200, "{}", "x-ratelimit-limit-tokens", "1000", "x-ratelimit-remaining-tokens", "900"), nil
		}
		sawOriginal.Store(r.Body == body && body.read.Load() == 0)
		return respond(r, 200, "{}"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	c := &http.Client{Transport: tr}
	_, err := post(t, c, context.Background(), llm, chat("m", 10, 10)) // budgets on for llm.test
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodPost, "http://plain.test/upload", body)
	req.ContentLength = -1
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.True(t, sawOriginal.Load(), "the body reached the base unread")
}

// TestBudgetBodyIntact: peeking at the body of an LLM request leaves it
// whole for the upstream (with and without GetBody).
func TestBudgetBodyIntact(t *testing.T) {
	payload := chat("m", 50, 10)
	var got []string
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, string(b))
		return respond(r, 200, "{}", "x-ratelimit-limit-tokens", "100000", "x-ratelimit-remaining-tokens", "99000"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	for _, getBody := range []bool{true, true, false} {
		var rdr io.Reader = strings.NewReader(payload)
		if !getBody {
			rdr = io.MultiReader(rdr) // hides the type: no GetBody
		}
		req, _ := http.NewRequest(http.MethodPost, "http://llm.test/v1/chat/completions", rdr)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	require.Len(t, got, 3)
	for _, g := range got {
		assert.Equal(t, payload, g)
	}
}

// sharedLikeLimiter is a Limiter that is not the MemoryLimiter (as
// redislimit's: a correction only lowers a bucket).
type sharedLikeLimiter struct{ inner *ezthrottle.MemoryLimiter }

func (c sharedLikeLimiter) Acquire(ctx context.Context, a ezthrottle.Admission) (ezthrottle.Permit, error) {
	return c.inner.Acquire(ctx, a)
}

func (c sharedLikeLimiter) Learn(ctx context.Context, key string, s ezthrottle.Signals) {
	c.inner.Learn(ctx, key, s)
}

// TestBudgetChargedWhenSentAfterLearning: requests that were already waiting
// for their turn at the host (the Transport's default pace) when the host
// announced its budgets are charged to the budgets before they are sent,
// not sent uncharged once their turn comes: the API counts them, so the
// budgets must too (otherwise they and the budgeted requests that spent the
// bucket meanwhile together exceed the API's limit, and every process
// sharing the budgets through a Limiter inherits the debt, which a
// correction that only lowers cannot see behind the turns already given).
// Either API style, one or several waiting requests.
func TestBudgetChargedWhenSentAfterLearning(t *testing.T) {
	for _, tc := range []struct {
		path    string
		waiting int
	}{
		{"/v1/chat/completions", 1},
		{"/v1/chat/completions", 3},
		{"/v1/messages", 2},
	} {
		t.Run(tc.path+"/"+strconv.Itoa(tc.waiting), func(t *testing.T) {
			clk := newFakeClock()
			sim := llmsim.New(llmsim.WithModel("m", llmsim.Limits{RPM: 600, TPM: 1000, InputTPM: 1000, OutputTPM: 1000}), llmsim.WithClock(clk.Now))
			mem := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
			gate, entered := make(chan struct{}), make(chan struct{}, 16)
			var first atomic.Bool
			base := simBase(sim)
			tr := mustNew(t, ezthrottle.WithClock(clk),
				ezthrottle.WithLimiter(sharedLikeLimiter{mem}),
				ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
					if first.CompareAndSwap(false, true) {
						entered <- struct{}{}
						<-gate // the first answer waits until the others queue
					}
					return base.RoundTrip(r)
				})))
			c := &http.Client{Transport: tr}
			ctx := context.Background()
			url := "http://llm.test" + tc.path
			codes := make(chan int, 16)
			send := func() {
				resp, err := post(t, c, ctx, url, chat("m", 100, 150))
				if assert.NoError(t, err) {
					codes <- resp.StatusCode
				}
			}
			// Before anything is learned: the first request is sent, the
			// others wait for their turn at the host's default pace.
			go send()
			<-entered
			for i := 0; i < tc.waiting; i++ {
				go send()
			}
			waitFor(t, "the other requests to queue", func() bool {
				st, _ := mem.Stats("http://llm.test:80")
				return st.Waiting == tc.waiting
			})
			close(gate)
			require.Equal(t, http.StatusOK, <-codes)
			// The budgets are known now (750 of 1000 tokens left): three more
			// requests of 250 tokens take what is left.
			for i := 0; i < 3; i++ {
				go send()
			}
			// Every request must get through without a 429, however long
			// it waits for the budget's refill.
			for got, steps := 0, 0; got < tc.waiting+3; steps++ {
				require.Less(t, steps, 2000, "requests still waiting")
				select {
				case code := <-codes:
					assert.Equal(t, http.StatusOK, code)
					got++
				case <-time.After(time.Millisecond):
					clk.Advance(250 * time.Millisecond)
				}
			}
			st := sim.Stats()
			assert.Zero(t, st.Limited, "no 429")
			assert.Equal(t, tc.waiting+4, st.Admitted)
		})
	}
}

// holdingLimiter is a Limiter that is not the MemoryLimiter and holds the
// first call of one kind on a budget key ("acquire": before the bucket is
// charged; "learn": a correction, before it is applied) until release is
// closed; held is closed once it holds it.
type holdingLimiter struct {
	inner         *ezthrottle.MemoryLimiter
	at            string
	taken         atomic.Bool
	held, release chan struct{}
}

func (h *holdingLimiter) hold(at, key string) {
	if at == h.at && strings.Contains(key, " llm:") && h.taken.CompareAndSwap(false, true) {
		close(h.held)
		<-h.release
	}
}

func (h *holdingLimiter) Acquire(ctx context.Context, a ezthrottle.Admission) (ezthrottle.Permit, error) {
	h.hold("acquire", a.Key)
	return h.inner.Acquire(ctx, a)
}

func (h *holdingLimiter) Learn(ctx context.Context, key string, s ezthrottle.Signals) {
	h.hold("learn", key)
	h.inner.Learn(ctx, key, s)
}

// TestBudgetNewModelSeededFirst: a model first seen after the host's first
// answer (to a request sent before any budget was known) starts from that
// answer's counts: its new buckets are lowered to them by its first
// request, and no other request charges them before that correction is in
// force, neither before the first request's charge nor between the charge
// and the correction. Such requests would be sent on tokens the API has
// already spent, and the correction, which only lowers, cannot account for
// them afterwards: a 429. The interleaving is forced: the model's first
// request is held in the limiter while four others come.
func TestBudgetNewModelSeededFirst(t *testing.T) {
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		for _, at := range []string{"acquire", "learn"} {
			t.Run(path+"/"+at, func(t *testing.T) {
				clk := newFakeClock()
				sim := llmsim.New(llmsim.WithModel("m", llmsim.Limits{RPM: 600, TPM: 1000, InputTPM: 1000, OutputTPM: 1000}), llmsim.WithClock(clk.Now))
				hl := &holdingLimiter{inner: ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk}), at: at,
					held: make(chan struct{}), release: make(chan struct{})}
				// Until then, requests sent also wait (their answers would
				// correct the bucket before the next ones are charged).
				var inBase atomic.Int32
				base := simBase(sim)
				tr := mustNew(t, ezthrottle.WithClock(clk), ezthrottle.WithLimiter(hl),
					ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
						if hl.taken.Load() {
							inBase.Add(1)
							<-hl.release
						}
						return base.RoundTrip(r)
					})),
					ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
				c := &http.Client{Transport: tr}
				// A deadline an hour ahead on the fake clock: it never
				// passes, but every wait honours it with a timer of the
				// clock, so that a waiting request can be told apart.
				var wg sync.WaitGroup
				defer wg.Wait()
				ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Hour))
				defer cancel()
				url := "http://llm.test" + path
				var answered atomic.Int32
				codes := make(chan int, 8)
				send := func() {
					resp, err := post(t, c, ctx, url, chat("m", 100, 150))
					if assert.NoError(t, err) {
						codes <- resp.StatusCode
					}
					answered.Add(1)
				}
				// The first answer: 750 of 1000 tokens left.
				send()
				require.Equal(t, http.StatusOK, <-codes)
				// The model's first budgeted request is held in the
				// limiter; four others come meanwhile, each sent (held in
				// the base) or waiting before it goes on.
				wg.Add(5)
				go func() { defer wg.Done(); send() }()
				<-hl.held
				for i := 0; i < 4; i++ {
					go func() { defer wg.Done(); send() }()
				}
				waitFor(t, "the other requests to be sent or to wait", func() bool { return int(inBase.Load())+clk.Timers() == 4 })
				close(hl.release)
				// Two or three of the five fit in what was left (an answer
				// may lower the bucket further, counting requests still in
				// flight); the others wait for the refill, sent by none.
				// Once each request is answered or queued for a budget, a
				// minute of the fake clock lets the first queued one go.
				queued := func() int {
					n := 0
					for _, k := range []string{"requests", "tokens", "input-tokens", "output-tokens"} {
						st, _ := hl.inner.Stats("http://llm.test:80 llm:" + k + ":m")
						n += st.Waiting
					}
					return n
				}
				for {
					waitFor(t, "the requests to be answered or queued", func() bool { return int(answered.Load())+queued() == 1+5 })
					n := queued()
					if n == 0 {
						break
					}
					clk.Advance(time.Minute)
					waitFor(t, "a queued request to go", func() bool { return queued() < n })
				}
				for i := 0; i < 5; i++ {
					assert.Equal(t, http.StatusOK, <-codes)
				}
				st := sim.Stats()
				assert.Zero(t, st.Limited, "no 429")
				assert.Equal(t, 1+5, st.Admitted)
			})
		}
	}
}

// TestBudgetNewModelWaitsForSeed: a model first seen after the host's first
// answer said that less than the request's cost was left (here 0 or 200
// of 1000 tokens) is not sent on its new, full bucket: its first request
// waits for the refill of what is missing.
func TestBudgetNewModelWaitsForSeed(t *testing.T) {
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		for left, first := range map[int]string{0: chat("m", 400, 600), 200: chat("m", 300, 500)} {
			t.Run(path+"/"+strconv.Itoa(left), func(t *testing.T) {
				clk := newFakeClock()
				sim := llmsim.New(llmsim.WithModel("m", llmsim.Limits{RPM: 600, TPM: 1000, InputTPM: 1000, OutputTPM: 1000}), llmsim.WithClock(clk.Now))
				tr := mustNew(t, ezthrottle.WithClock(clk), ezthrottle.WithBase(simBase(sim)), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
				c := &http.Client{Transport: tr}
				url := "http://llm.test" + path
				resp, err := post(t, c, context.Background(), url, first)
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, resp.StatusCode)
				var answered atomic.Bool
				done := make(chan int, 1)
				go func() {
					resp, err := post(t, c, context.Background(), url, chat("m", 100, 150))
					if assert.NoError(t, err) {
						done <- resp.StatusCode
					}
					answered.Store(true)
				}()
				for steps := 0; !answered.Load(); steps++ {
					require.Less(t, steps, 100, "request still waiting")
					waitFor(t, "the request to wait or be sent", func() bool { return answered.Load() || clk.Timers() > 0 })
					if !answered.Load() {
						clk.Advance(time.Second)
					}
				}
				assert.Equal(t, http.StatusOK, <-done)
				assert.Zero(t, sim.Stats().Limited, "no 429")
			})
		}
	}
}
