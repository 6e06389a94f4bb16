package ezthrottle

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TokenBudget is an LLM API's per-minute budgets for one model (or every
// model of a host). A zero field means no budget of that kind.
type TokenBudget struct {
	// RequestsPerMinute is OpenAI's RPM, Anthropic's requests limit.
	RequestsPerMinute int64
	// TokensPerMinute counts input plus output tokens (OpenAI's TPM).
	TokensPerMinute int64
	// InputTokensPerMinute and OutputTokensPerMinute are Anthropic's
	// separate input and output budgets.
	InputTokensPerMinute  int64
	OutputTokensPerMinute int64
}

func (b TokenBudget) of(k BudgetKind) int64 {
	switch k {
	case BudgetRequests:
		return b.RequestsPerMinute
	case BudgetTokens:
		return b.TokensPerMinute
	case BudgetInputTokens:
		return b.InputTokensPerMinute
	case BudgetOutputTokens:
		return b.OutputTokensPerMinute
	}
	return 0
}

func (b *TokenBudget) set(k BudgetKind, v int64) {
	switch k {
	case BudgetRequests:
		b.RequestsPerMinute = v
	case BudgetTokens:
		b.TokensPerMinute = v
	case BudgetInputTokens:
		b.InputTokensPerMinute = v
	case BudgetOutputTokens:
		b.OutputTokensPerMinute = v
	}
}

// IsZero reports whether no budget is set.
func (b TokenBudget) IsZero() bool { return b == TokenBudget{} }

func (b TokenBudget) validate() error {
	for k := BudgetRequests; k < numBudgetKinds; k++ {
		if b.of(k) < 0 {
			return fmt.Errorf("ezthrottle: negative %s budget", k)
		}
	}
	return nil
}

// budgetRule is one WithTokenBudget entry.
type budgetRule struct {
	hostRule
	model  string // "" = every model without a rule of its own
	budget TokenBudget
}

// WithTokenBudget sets the budgets of a host's model, for LLM APIs that send
// no budget headers (many gateways, Gemini) or to stay under a share of a
// budget. pattern is as for WithHostLimit; model "" applies to every model
// of the host that has no rule of its own (and to requests without a
// model). Configured budgets take precedence over learned ones.
func WithTokenBudget(pattern, model string, b TokenBudget) Option {
	return func(c *config) {
		r, err := parseHostPattern(pattern)
		if err != nil {
			c.errs = append(c.errs, err)
			return
		}
		if err := b.validate(); err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.budgetRules = append(c.budgetRules, budgetRule{hostRule: r, model: model, budget: b})
	}
}

// WithLearnedBudgetCap caps the budgets a host may announce in its headers
// (a zero field: no cap of that kind), as WithLearnedLimitCap caps a
// learned pace.
func WithLearnedBudgetCap(b TokenBudget) Option {
	return func(c *config) {
		if err := b.validate(); err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.budgetCap = b
	}
}

// WithCost sets how the cost of a request to an LLM host is computed when
// EstimateCost does not fit the API. It is called only for hosts with
// budgets (learned or configured).
func WithCost(f CostFunc) Option {
	return func(c *config) { c.costFunc = f }
}

// BudgetError reports a request whose cost exceeds the whole of one of its
// host's budgets: it could never be admitted, so it fails at once instead
// of waiting. errors.Is(err, ErrOverBudget) is true.
type BudgetError struct {
	Host  string
	Model string
	Kind  BudgetKind
	Cost  int64
	Limit int64
}

// ErrOverBudget is the sentinel of *BudgetError.
var ErrOverBudget = fmt.Errorf("ezthrottle: request exceeds the whole budget")

// Error implements error.
func (e *BudgetError) Error() string {
	m := ""
	if e.Model != "" {
		m = " model " + e.Model
	}
	return fmt.Sprintf("ezthrottle: request to %s%s costs %d %s, more than the whole budget of %d per minute",
		e.Host, m, e.Cost, e.Kind, e.Limit)
}

// Is reports whether target is ErrOverBudget.
func (e *BudgetError) Is(target error) bool { return target == ErrOverBudget }

// maxModelsPerHost bounds the budgets kept per host: further models share
// the host's budget.
const maxModelsPerHost = 256

// llmBudgets is the Transport's budget state. on is false until a host has
// announced budgets (or one is configured): until then no request pays
// anything for this feature.
type llmBudgets struct {
	on      atomic.Bool
	hosts   sync.Map      // host key → *llmHost, for the hosts that have budgets
	version atomic.Uint32 // changes whenever hosts gains a host
}

// llmHost is one host's budgets.
type llmHost struct {
	key        string
	configured []budgetRule // the rules for this host, most specific first
	defaulted  bool         // the host's request limit is the Transport's default

	mu        sync.Mutex
	learned   map[string]*modelBudget // model → learned budgets; "" = template
	announced bool                    // a response announced budgets
}

// modelBudget is one model's learned sizes and in-flight charges.
type modelBudget struct {
	size TokenBudget
	// flight holds the charges of the requests in flight, in the order
	// they were sent (seq increasing); done entries are dropped from the
	// front.
	flight  []flightEntry
	nextSeq uint64
	// For the template (model ""): the remaining counts announced for a
	// request whose model was not known, and when. A model first seen
	// after that starts with its bucket lowered to them (refilled since),
	// as it is most likely the model of that request.
	rem    [numBudgetKinds]int64
	hasRem [numBudgetKinds]bool
	remAt  time.Time
	// seedPending is true while a model first seen after such an answer
	// has not had its buckets lowered to the template's counts yet;
	// seeding is set (and closed when done) while a request lowers them.
	seedPending bool
	seeding     chan struct{}
}

// keptFlight is how many answered requests a model's flight keeps, at
// least, besides those in flight.
const keptFlight = 256

// flightEntry is one request in flight, or answered recently.
type flightEntry struct {
	seq  uint64
	cost TokenCost
	done bool
	// rem is what the API said remained of each budget when it admitted
	// the request (hasRem: it said so).
	rem    [numBudgetKinds]int64
	hasRem [numBudgetKinds]bool
}

// find returns the index of seq in flight, -1 when gone.
func (mb *modelBudget) find(seq uint64) int {
	i := sort.Search(len(mb.flight), func(i int) bool { return mb.flight[i].seq >= seq })
	if i < len(mb.flight) && mb.flight[i].seq == seq {
		return i
	}
	return -1
}

// unseen sums, for kind k, the charges of the requests of the flight other
// than seq that the API may not have counted when it answered seq with rem
// remaining: every one still in flight, and every answered one it admitted
// after seq (its remaining count is lower). Concurrent requests reach the
// API in any order, so the order they were sent in says nothing.
func (mb *modelBudget) unseen(seq uint64, k BudgetKind, rem int64) int64 {
	var n int64
	for i := range mb.flight {
		e := &mb.flight[i]
		if e.seq == seq || (e.done && e.hasRem[k] && e.rem[k] > rem) {
			continue
		}
		n += e.cost.of(k)
	}
	return n
}

// budgetUse is one request's charges, released when its response arrives.
type budgetUse struct {
	host  *llmHost
	model string
	cost  TokenCost
	seq   uint64 // its place in the model's flight
	done  bool
}

// budgetHost returns the host's budget state, nil when it has none. Only
// hosts with budgets are kept (configured, or announced by the host); that
// another has none is remembered in its cache entry, until a host gains
// budgets (so that hosts without budgets cost one comparison, and no
// memory that outlives their cache entry).
func (t *Transport) budgetHost(hi *hostInfo) *llmHost {
	ver := t.llm.version.Load() // before the lookup: a host added since changes it
	if hi.noBudget.Load() == ver+1 {
		return nil
	}
	if v, ok := t.llm.hosts.Load(hi.key); ok {
		return v.(*llmHost)
	}
	if len(t.cfg.budgetRules) > 0 {
		if lh := t.newBudgetHost(hi); len(lh.configured) > 0 {
			v, loaded := t.llm.hosts.LoadOrStore(hi.key, lh)
			if !loaded {
				t.llm.version.Add(1)
			}
			return v.(*llmHost)
		}
	}
	hi.noBudget.Store(ver + 1)
	return nil
}

func (t *Transport) newBudgetHost(hi *hostInfo) *llmHost {
	host, port := hostPortOfKey(hi.key)
	lh := &llmHost{key: hi.key, learned: map[string]*modelBudget{}}
	for _, r := range t.cfg.budgetRules {
		if r.matches(host, port) {
			lh.configured = append(lh.configured, r)
		}
	}
	lh.defaulted = t.cfg.limitFor(host, port) == t.cfg.defaultLimit && !t.cfg.hasHostRule(host, port)
	return lh
}

// hostPortOfKey splits a host key ("scheme://host:port").
func hostPortOfKey(key string) (host, port string) {
	if i := strings.Index(key, "://"); i >= 0 {
		key = key[i+3:]
	}
	return splitHostPort(key)
}

// matches reports whether r applies to host:port.
func (r *hostRule) matches(host, port string) bool {
	if r.port != "" && r.port != port {
		return false
	}
	if r.wildcard {
		return strings.HasSuffix(host, r.host) && len(host) > len(r.host)
	}
	return r.host == host
}

// hasHostRule reports whether a WithHostLimit rule matches host:port.
func (c *config) hasHostRule(host, port string) bool {
	for i := range c.hostRules {
		if c.hostRules[i].matches(host, port) {
			return true
		}
	}
	return false
}

// budgetsFor returns the budgets in force for a model: a configured rule
// for the model, else a configured rule for every model, else what the
// host announced for the model, else what it announced for another (the
// template), each kind capped by WithLearnedBudgetCap.
func (t *Transport) budgetsFor(lh *llmHost, model string) TokenBudget {
	for _, r := range lh.configured {
		if r.model == model {
			return r.budget
		}
	}
	for _, r := range lh.configured {
		if r.model == "" {
			return r.budget
		}
	}
	lh.mu.Lock()
	mb := lh.learned[model]
	if mb == nil {
		mb = lh.learned[""]
	}
	var b TokenBudget
	if mb != nil {
		b = mb.size
	}
	lh.mu.Unlock()
	for k := BudgetRequests; k < numBudgetKinds; k++ {
		if c := t.cfg.budgetCap.of(k); c > 0 && b.of(k) > c {
			b.set(k, c)
		}
	}
	return b
}

// budgetKey is the limiter key of one budget.
func budgetKey(host, model string, k BudgetKind) string {
	return host + " llm:" + k.String() + ":" + model
}

// budgetLimit is the Limit of a per-minute budget: refilled continuously at
// n a minute, holding at most n.
func budgetLimit(n int64) Limit {
	return Limit{Rate: float64(n) / 60, Burst: int(n)}
}

// costOf estimates the cost of req, peeking at its body.
func (t *Transport) costOf(req *http.Request) (*http.Request, TokenCost, bool) {
	out, body, complete := peekBody(req)
	if t.cfg.costFunc != nil {
		if c, ok := t.cfg.costFunc(out, body, complete); ok {
			return out, c, true
		}
	}
	if body == nil {
		return out, TokenCost{}, true
	}
	c, ok := EstimateCost(body)
	if !ok && !complete {
		// A body over MaxCostBody: the model is unknown, count its bytes.
		c, ok = TokenCost{Input: (req.ContentLength + 3) / 4}, true
	}
	return out, c, ok
}

// chargeBudgets charges req to its host's budgets when the host has any
// (acquireBudgets), and lifts the Transport's default limit from a host
// that paces itself with budgets it announced. Without budgets it returns
// req unchanged and a nil use.
func (t *Transport) chargeBudgets(ctx context.Context, req *http.Request, hi *hostInfo, adm *Admission) (*http.Request, *budgetUse, error) {
	lh := t.budgetHost(hi)
	if lh == nil {
		return req, nil, nil
	}
	out, bu, err := t.acquireBudgets(ctx, req, lh, adm)
	if err == nil && lh.defaulted && lh.hasLearned() {
		adm.Limit = Unlimited()
	}
	return out, bu, err
}

// acquireBudgets waits for every budget of the request's model. It returns
// the request to send (its body may have been peeked at) and the charges
// to settle when the response arrives.
func (t *Transport) acquireBudgets(ctx context.Context, req *http.Request, lh *llmHost, adm *Admission) (*http.Request, *budgetUse, error) {
	out, cost, ok := t.costOf(req)
	if !ok {
		cost = TokenCost{}
	}
	if cost.Input < 0 {
		cost.Input = 0
	}
	if cost.Output < 0 {
		cost.Output = 0
	}
	// A model first seen after the host announced budgets for a request
	// whose model was not known (the first answer) starts from the counts
	// of that answer, refilled since: most likely they were that model's.
	// Its buckets are lowered to them by its first request (a correction,
	// not a charge: several processes sharing the buckets apply it once,
	// not once each); its own answers correct them from then on. Until the
	// correction is in force no other request of this Transport charges
	// the model's (full, new) buckets: see seedTurn.
	lh.mu.Lock()
	_, known := lh.learned[cost.Model]
	if !known && len(lh.learned) >= maxModelsPerHost {
		cost.Model = "" // too many models: share the host's budget
		_, known = lh.learned[""]
	}
	if tpl := lh.learned[""]; !known && tpl != nil && cost.Model != "" {
		lh.model(cost.Model).seedPending = true // created from the template
	}
	lh.mu.Unlock()
	seed, seeder, err := t.seedTurn(ctx, lh, cost.Model, adm.Deadline)
	if err != nil {
		return out, nil, err
	}
	seeded := false
	if seeder != nil {
		defer func() { lh.endSeed(seeder, seeded) }()
	}
	b := t.budgetsFor(lh, cost.Model)
	for k := BudgetRequests; k < numBudgetKinds; k++ {
		n, c := b.of(k), cost.of(k)
		if n > 0 && c > n {
			return out, nil, &BudgetError{Host: lh.key, Model: cost.Model, Kind: k, Cost: c, Limit: n}
		}
	}
	for k := BudgetRequests; k < numBudgetKinds; k++ {
		n, c := b.of(k), cost.of(k)
		if n <= 0 || c <= 0 {
			continue
		}
		a := Admission{Key: budgetKey(lh.key, cost.Model, k), Limit: budgetLimit(n), Deadline: adm.Deadline}
		setCost(&a, c)
		p, err := t.limiter.Acquire(ctx, a)
		if err != nil {
			return out, nil, err
		}
		p.Release() // a budget has no in-flight cap
		if !seed.has[k] {
			continue
		}
		// The bucket is new: no other request of this Transport has
		// charged it (seedTurn), so the API's count less this request
		// is what is left.
		t.limiter.Learn(ctx, a.Key, availableSignals(seed.avail[k]-float64(c), false))
		if short := float64(c) - seed.avail[k]; short > 0 {
			// The API has less than this request left: it waits for the
			// refill of what is missing (the bucket is empty now).
			a.Cost = short
			p, err := t.limiter.Acquire(ctx, a)
			if err != nil {
				return out, nil, err
			}
			p.Release()
		}
	}
	seeded = true
	lh.mu.Lock()
	mb := lh.model(cost.Model)
	mb.nextSeq++
	u := &budgetUse{host: lh, model: cost.Model, cost: cost, seq: mb.nextSeq}
	mb.flight = append(mb.flight, flightEntry{seq: u.seq, cost: cost})
	lh.mu.Unlock()
	return out, u, nil
}

// model returns the learned entry of a model, creating it; lh.mu is held.
func (lh *llmHost) model(m string) *modelBudget {
	mb := lh.learned[m]
	if mb == nil {
		mb = &modelBudget{}
		if tpl := lh.learned[""]; tpl != nil && m != "" {
			mb.size = tpl.size // until the model's own headers say otherwise
		}
		lh.learned[m] = mb
	}
	return mb
}

// budgetSeed is what a model's new buckets are lowered to (see seedTurn).
type budgetSeed struct {
	avail [numBudgetKinds]float64
	has   [numBudgetKinds]bool
}

// seedTurn returns when the model's buckets may be charged. While the
// buckets of a model first seen after a template answer still have to be
// lowered to that answer's counts (seedPending), one request at a time
// does it (the seeder: seedTurn returns its model entry, the caller ends
// its turn with endSeed) and the others wait for it: a request charging
// the full new buckets meanwhile would be sent uncorrected, and the
// correction, which only lowers, could not account for it afterwards.
// The wait honours ctx and deadline (a *ThrottleError when it passes).
func (t *Transport) seedTurn(ctx context.Context, lh *llmHost, model string, deadline time.Time) (budgetSeed, *modelBudget, error) {
	var (
		timer Timer
		tc    <-chan time.Time
		start time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	lh.mu.Lock()
	defer lh.mu.Unlock()
	for {
		mb := lh.learned[model]
		if mb == nil || !mb.seedPending {
			return budgetSeed{}, nil, nil
		}
		if mb.seeding == nil {
			var seed budgetSeed
			tpl := lh.learned[""]
			elapsed := t.clock.Now().Sub(tpl.remAt).Minutes()
			for k := BudgetRequests; k < numBudgetKinds; k++ {
				if n := tpl.size.of(k); n > 0 && tpl.hasRem[k] && elapsed < 1 {
					seed.avail[k], seed.has[k] = float64(tpl.rem[k])+float64(n)*elapsed, true
				}
			}
			if seed.has == [numBudgetKinds]bool{} {
				mb.seedPending = false // too old to say anything
				return budgetSeed{}, nil, nil
			}
			mb.seeding = make(chan struct{})
			return seed, mb, nil
		}
		ch := mb.seeding
		if timer == nil && !deadline.IsZero() {
			start = t.clock.Now()
			timer = NewTimerAt(t.clock, deadline)
			tc = timer.C()
		}
		lh.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-tc:
			err = &ThrottleError{Host: lh.key, Wait: t.clock.Now().Sub(start)}
		}
		lh.mu.Lock()
		if err != nil {
			return budgetSeed{}, nil, err
		}
	}
}

// endSeed ends a seeder's turn (see seedTurn); applied says whether the
// seed is in force (else the next request tries again).
func (lh *llmHost) endSeed(mb *modelBudget, applied bool) {
	lh.mu.Lock()
	if applied {
		mb.seedPending = false
	}
	close(mb.seeding)
	mb.seeding = nil
	lh.mu.Unlock()
}

// settle ends a request's charges; called once its response (or error)
// arrived.
func (u *budgetUse) settle() {
	if u == nil || u.done {
		return
	}
	u.done = true
	u.host.mu.Lock()
	mb := u.host.model(u.model)
	if i := mb.find(u.seq); i >= 0 {
		mb.flight[i].done = true
	}
	// Answered requests stay a while: the API may have admitted one of
	// them after a request still in flight, sent after or before it, and
	// the correction at that request's answer needs to know (see unseen).
	n := 0
	for n < len(mb.flight)-keptFlight && mb.flight[n].done {
		n++
	}
	if n > 0 {
		mb.flight = append(mb.flight[:0], mb.flight[n:]...)
	}
	u.host.mu.Unlock()
}

// learnBudgets applies the budgets a response announced: it sizes the
// model's budgets (the host's template when the request's model is not
// known) and corrects the local buckets from what the API says remains,
// less what this process's other requests may still take from it (so
// nothing is counted twice: the API's count already holds this request).
func (t *Transport) learnBudgets(ctx context.Context, hi *hostInfo, u *budgetUse, h http.Header, now time.Time) {
	sigs := ParseBudgets(h, now)
	if len(sigs) == 0 {
		return
	}
	lh := u.hostOr(t, hi)
	model := ""
	if u != nil {
		model = u.model
	}
	type correction struct {
		key   string
		avail float64
		exact bool
	}
	var fix []correction
	lh.mu.Lock()
	mb := lh.model(model)
	var tpl *modelBudget
	if model != "" {
		tpl = lh.model("")
	}
	for _, s := range sigs {
		limit := s.Limit
		if limit == 0 && s.HasRemaining && s.Remaining > mb.size.of(s.Kind) {
			limit = s.Remaining // Azure: only the remaining count; the most seen
		}
		if limit > 0 {
			mb.size.set(s.Kind, limit)
			if tpl != nil && tpl.size.of(s.Kind) == 0 {
				tpl.size.set(s.Kind, limit)
			}
		}
		if s.HasRemaining && u == nil {
			mb.rem[s.Kind], mb.hasRem[s.Kind], mb.remAt = s.Remaining, true, now
		}
		if s.HasRemaining && u != nil {
			// What the API will have left once it has counted every request
			// this process sent: its count at this answer, less the
			// requests it may not have counted yet (see unseen). That is a
			// lower bound of the truth whatever order the requests reached
			// it in, so the in-memory bucket is set to it, up or down: a
			// short estimate is corrected, and a guess (a bucket seeded
			// from another model's count, or a reordering) is undone by the
			// next answer. A limiter shared with other processes is only
			// ever lowered: their requests in flight are not known here.
			if i := mb.find(u.seq); i >= 0 {
				mb.flight[i].rem[s.Kind], mb.flight[i].hasRem[s.Kind] = s.Remaining, true
			}
			avail := s.Remaining - mb.unseen(u.seq, s.Kind, s.Remaining)
			fix = append(fix, correction{budgetKey(lh.key, model, s.Kind), float64(avail), t.mem != nil})
		}
	}
	lh.announced = true
	lh.mu.Unlock()
	t.llm.on.Store(true)
	for _, f := range fix {
		t.limiter.Learn(ctx, f.key, availableSignals(f.avail, f.exact))
	}
}

// hostOr returns the request's budget host, or the host's (created) when
// the request was sent without budgets.
func (u *budgetUse) hostOr(t *Transport, hi *hostInfo) *llmHost {
	if u != nil {
		return u.host
	}
	v, loaded := t.llm.hosts.LoadOrStore(hi.key, t.newBudgetHost(hi))
	if !loaded {
		t.llm.version.Add(1)
	}
	return v.(*llmHost)
}

// hasLearned reports whether the host announced budgets of its own.
func (lh *llmHost) hasLearned() bool {
	lh.mu.Lock()
	defer lh.mu.Unlock()
	return len(lh.learned) > 0 && lh.announced
}

// setCost sets an admission's cost.
func setCost(a *Admission, c int64) { a.Cost = float64(c) }

// availableSignals is what Learn is told about a budget the API says has
// avail left.
func availableSignals(avail float64, exact bool) Signals {
	if avail < 0 {
		avail = 0
	}
	return Signals{Available: avail, HasAvailable: true, AvailableExact: exact}
}
