package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Handler receives EZThrottle webhooks. Mount it on any router at the URL
// given in the jobs' webhooks:
//
//	h, err := webhook.NewHandler(webhook.WithSecret(os.Getenv("EZTHROTTLE_WEBHOOK_SECRET")))
//	...
//	mux.Handle("POST /webhooks/ezthrottle", h)
//	defer h.Close()
//
// For each delivery it answers:
//
//   - 405 for any method but POST;
//   - 413 when the body exceeds the limit (WithMaxBodyBytes);
//   - 401 when a secret is configured and the signature is missing,
//     malformed, expired or wrong;
//   - 400 when the body is not a valid payload of either form;
//   - 503 with Retry-After when the result cannot be taken now: after
//     Close (code "closed"), when the callback queue stays full
//     (WithCallbackWait; code "callback_busy"), or when the Store already
//     remembers as many job IDs as it may (WithMaxSeenIDs; code
//     "dedup_full"). Nothing of such a delivery is stored or remembered:
//     the engine's redelivery is taken as new;
//   - 200 otherwise, also for a repeated delivery of a job already
//     received (`"duplicate":true`), which is not passed on again.
//
// Error answers are JSON: {"error":"<message>","code":"<code>"}.
//
// A 200 is an acknowledgement: it is written only once the result is
// stored and, with a callback (WithCallback), in the callback's queue, so
// every result acknowledged reaches the callback exactly once. When the
// queue is full, deliveries wait for room (back-pressure) before they are
// answered.
//
// A delivery is identified by its job ID, which the signature covers. An
// engine's redeliveries of a result (freshly signed, same job ID) and a
// captured delivery replayed byte for byte (same job ID) are both caught
// by one mechanism: the Store remembers each accepted job ID for the
// de-duplication window (WithDedupWindow, default 15 min) and, with a
// secret, at least until the accepted signature expires (its timestamp +
// the tolerance), whatever the Store's TTL and result bound. The IDs are
// bounded in number (WithMaxSeenIDs); at the bound, deliveries are refused
// with 503, never accepted by forgetting an ID. Concurrent deliveries of
// one job ID are decided one at a time: the first is stored, the others
// are duplicates (or, if the first was refused, the next is taken as new).
//
// Results go to a Store (its own, or the one given by WithStore) where code
// can Wait for them or Subscribe to them. Safe for concurrent use.
//
// Each delivery is recorded as an OpenTelemetry span (SpanName; see
// WithTracerProvider and WithPropagators): a child of the request
// context's span when there is one (an otelhttp handler around the
// Handler), else of the trace context in the delivery's headers, with the
// job ID, idempotent key, status and answer as attributes, and a link to the
// trace that submitted the job when the result's metadata carries one
// (OriginSpanContext). The callback's context carries the span's context.
type Handler struct {
	store    *Store
	ownStore bool
	verifier *Verifier
	maxBody  int64
	logger   *slog.Logger
	tracing  tracing

	onResult func(context.Context, Result)
	ctx      context.Context // passed to callbacks; cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.RWMutex // guards closed and sends on queue
	closed  bool
	closing chan struct{} // closed first thing in Close
	queue   chan queued
	// slots holds one token per result in the queue or about to be put
	// there: a delivery takes a token (waiting up to callbackWait) before
	// it is accepted, so that the send on queue never blocks and never
	// fails; a worker gives the token back when it takes the result.
	slots        chan struct{}
	callbackWait time.Duration
	tolerance    time.Duration
}

// queued is a result waiting for the callback, with the span context of
// the delivery that brought it.
type queued struct {
	res Result
	sc  trace.SpanContext
}

// NewHandler returns a Handler configured by opts. Without WithSecret it
// accepts unsigned deliveries (and logs a warning once, here); with it,
// every delivery must be signed. If a callback is set (WithCallback),
// NewHandler starts its worker goroutines; Close stops them.
func NewHandler(opts ...Option) (*Handler, error) {
	c := newConfig(opts)
	if c.primarySet && c.primary == "" {
		return nil, errEmptySecret
	}
	if !c.primarySet && c.secondary != "" {
		return nil, errors.New("webhook: WithSecondarySecret needs WithSecret (the primary secret)")
	}
	h := &Handler{
		store:    c.store,
		maxBody:  c.maxBody,
		logger:   c.logger,
		onResult: c.onResult,
		tracing:  newTracing(c),
		closing:  make(chan struct{}),

		callbackWait: c.callbackWait,
		tolerance:    c.tolerance,
	}
	if h.tolerance <= 0 {
		h.tolerance = DefaultTolerance
	}
	if h.store == nil {
		h.store, h.ownStore = newStore(c), true
	}
	if c.primarySet {
		h.verifier = &Verifier{Primary: c.primary, Secondary: c.secondary, Tolerance: c.tolerance, Now: c.now}
	} else {
		h.logger.Warn("ezthrottle webhook: no secret configured; deliveries are not verified (use WithSecret)")
	}
	h.warnCapacity()
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if h.onResult != nil {
		h.queue = make(chan queued, c.queue)
		h.slots = make(chan struct{}, c.queue)
		for range c.workers {
			h.wg.Add(1)
			go h.worker()
		}
	}
	return h, nil
}

// minSustainedRate is the rate of new results below which NewHandler warns
// that its de-duplication capacity is small.
const minSustainedRate = 100

// warnCapacity logs a warning when the Store's bound on remembered job IDs
// (WithMaxSeenIDs) allows fewer than minSustainedRate new results per
// second, sustained, over the time each ID must be remembered (the window,
// or twice the tolerance for signatures from a clock running ahead).
// Above that rate deliveries are refused with 503 rather than an ID
// forgotten, so the guarantee holds, but deliveries are delayed.
func (h *Handler) warnCapacity() {
	horizon := h.store.window
	if h.verifier != nil {
		horizon = max(horizon, 2*h.tolerance)
	}
	rate := float64(h.store.seen.max) / horizon.Seconds()
	if rate < minSustainedRate {
		h.logger.Warn("ezthrottle webhook: the de-duplication capacity is small: above this rate of new results, deliveries are refused with 503 until the oldest job IDs expire (raise WithMaxSeenIDs)",
			slog.Int("max_seen_ids", h.store.seen.max), slog.Duration("remembered_for", horizon),
			slog.Float64("sustained_results_per_second", rate))
	}
}

// Store returns the Store the Handler puts results into.
func (h *Handler) Store() *Store { return h.store }

// Wait is h.Store().Wait: the result matching k, waiting for it if needed.
func (h *Handler) Wait(ctx context.Context, k Key) (Result, error) { return h.store.Wait(ctx, k) }

// WaitJob is h.Store().WaitJob.
func (h *Handler) WaitJob(ctx context.Context, jobID string) (Result, error) {
	return h.store.WaitJob(ctx, jobID)
}

// WaitKey is h.Store().WaitKey.
func (h *Handler) WaitKey(ctx context.Context, idempotentKey string) (Result, error) {
	return h.store.WaitKey(ctx, idempotentKey)
}

// Subscribe is h.Store().Subscribe: every new result as it arrives.
func (h *Handler) Subscribe(ctx context.Context) (<-chan Result, func()) {
	return h.store.Subscribe(ctx)
}

// Close stops the Handler: later deliveries get 503, the context given to
// callbacks is cancelled, results already queued for the callback are still
// passed to it, and Close waits for the callback workers to return. It then
// closes the Handler's own Store (not one given by WithStore), which ends
// pending waits and subscriptions. Close is idempotent and returns nil.
func (h *Handler) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.closing)
	if h.queue != nil {
		close(h.queue)
	}
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	if h.ownStore {
		return h.store.Close()
	}
	return nil
}

// ServeHTTP handles one delivery (see Handler).
func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	ctx, span := h.tracing.start(r)
	w := &statusWriter{ResponseWriter: rw}
	defer h.tracing.end(span, w)
	if h.isClosed() {
		writeError(w, http.StatusServiceUnavailable, "closed", "webhook receiver is shutting down")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method "+r.Method+" not allowed; use POST")
		return
	}
	if r.ContentLength > h.maxBody {
		h.tooLarge(ctx, w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.tooLarge(ctx, w, r)
			return
		}
		h.logger.LogAttrs(ctx, slog.LevelDebug, "ezthrottle webhook: reading body failed", slog.String("error", err.Error()))
		writeError(w, http.StatusBadRequest, "bad_body", "could not read request body")
		return
	}
	var until time.Time // with a secret: when the accepted signature stops verifying
	if h.verifier != nil {
		signedAt, err := h.verifier.verify(r.Header.Get(SignatureHeader), body)
		if err != nil {
			var se *SignatureError
			reason := err.Error()
			if errors.As(err, &se) {
				reason = se.Reason.Error()
			}
			h.logger.LogAttrs(ctx, slog.LevelWarn, "ezthrottle webhook: signature rejected",
				slog.String("reason", reason), slog.String("remote_addr", r.RemoteAddr))
			writeError(w, http.StatusUnauthorized, "invalid_signature", reason)
			return
		}
		// The first instant at which this signature no longer verifies.
		until = signedAt.Add(h.tolerance + time.Nanosecond)
	}
	res, err := Decode(body)
	if err != nil {
		h.logger.LogAttrs(ctx, slog.LevelWarn, "ezthrottle webhook: malformed payload",
			slog.String("error", err.Error()), slog.String("remote_addr", r.RemoteAddr))
		writeError(w, http.StatusBadRequest, "malformed_payload", err.Error())
		return
	}
	added, err := h.accept(ctx, res, until, span.SpanContext())
	if err != nil {
		h.refuse(ctx, w, res, err)
		return
	}
	h.tracing.result(span, res, added)
	if added {
		h.logger.LogAttrs(ctx, slog.LevelDebug, "ezthrottle webhook: result received",
			slog.String("job_id", res.JobID), slog.String("status", res.Status), slog.Int("status_code", res.StatusCode))
	} else {
		h.logger.LogAttrs(ctx, slog.LevelDebug, "ezthrottle webhook: duplicate delivery ignored", slog.String("job_id", res.JobID))
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "job_id": res.JobID, "duplicate": !added})
}

// errCallbackBusy: the callback queue stayed full for callbackWait.
var errCallbackBusy = errors.New("webhook: callback queue full")

// accept records res unless its job ID is remembered (added false): it
// claims the ID, takes room in the callback queue (waiting for it), then
// stores the result, remembers the ID until at least until, and queues
// the result for the callback, in that order, so that a delivery refused
// at any step leaves nothing behind. Errors: ErrClosed, a *CapacityError,
// errCallbackBusy, or ctx's error.
func (h *Handler) accept(ctx context.Context, res Result, until time.Time, sc trace.SpanContext) (added bool, err error) {
	c, dup, err := h.store.reserve(ctx, res.JobID)
	if err != nil || dup {
		return false, err
	}
	if h.onResult != nil {
		if err := h.takeSlot(ctx); err != nil {
			h.store.release(c)
			return false, err
		}
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		err = ErrClosed
	} else {
		err = h.store.commit(c, res, until)
	}
	if err != nil {
		h.store.release(c)
		if h.onResult != nil {
			<-h.slots
		}
		return false, err
	}
	if h.onResult != nil {
		h.queue <- queued{res: res.clone(), sc: sc} // never blocks: a slot is held
	}
	return true, nil
}

// takeSlot takes room in the callback queue, waiting up to callbackWait.
func (h *Handler) takeSlot(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(h.callbackWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-t.C:
		return errCallbackBusy
	case <-ctx.Done():
		return ctx.Err()
	case <-h.closing:
		return ErrClosed
	}
}

// refuse answers a delivery that accept did not take: 503 with
// Retry-After, so that the engine delivers it again.
func (h *Handler) refuse(ctx context.Context, w http.ResponseWriter, res Result, err error) {
	var ce *CapacityError
	switch {
	case errors.As(err, &ce):
		h.logger.LogAttrs(ctx, slog.LevelWarn, "ezthrottle webhook: de-duplication capacity reached (WithMaxSeenIDs); delivery refused with 503",
			slog.String("job_id", res.JobID), slog.Int("max_seen_ids", ce.Limit), slog.Duration("retry_after", ce.RetryAfter))
		w.Header().Set("Retry-After", strconv.Itoa(int((ce.RetryAfter+time.Second-1)/time.Second)))
		writeError(w, http.StatusServiceUnavailable, "dedup_full", "too many recent results to remember; retry later")
	case errors.Is(err, errCallbackBusy):
		h.logger.LogAttrs(ctx, slog.LevelWarn, "ezthrottle webhook: callback queue full; delivery refused with 503 (the engine redelivers it)",
			slog.String("job_id", res.JobID), slog.Duration("waited", h.callbackWait))
		writeError(w, http.StatusServiceUnavailable, "callback_busy", "receiver is busy; retry later")
	case errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "closed", "webhook receiver is shutting down")
	default: // the request's context ended: the client is gone or timed out
		h.logger.LogAttrs(ctx, slog.LevelDebug, "ezthrottle webhook: delivery abandoned before it was accepted",
			slog.String("job_id", res.JobID), slog.String("error", err.Error()))
		writeError(w, http.StatusServiceUnavailable, "canceled", "request ended before the result was accepted")
	}
}

func (h *Handler) tooLarge(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	h.logger.LogAttrs(ctx, slog.LevelWarn, "ezthrottle webhook: body too large",
		slog.Int64("limit_bytes", h.maxBody), slog.String("remote_addr", r.RemoteAddr))
	if sw, ok := w.(*statusWriter); ok {
		sw.code = "body_too_large"
	}
	// The rest of an oversized body is not read: close the connection.
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{
		"error": fmt.Sprintf("request body larger than %d bytes", h.maxBody), "code": "body_too_large", "limit_bytes": h.maxBody,
	})
}

func (h *Handler) isClosed() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.closed
}

func (h *Handler) worker() {
	defer h.wg.Done()
	for q := range h.queue {
		<-h.slots
		h.call(q.res, q.sc)
	}
}

// call runs the callback, recovering a panic. The callback's context
// carries the span context of the delivery, so its spans join that trace.
func (h *Handler) call(res Result, sc trace.SpanContext) {
	defer func() {
		if p := recover(); p != nil {
			h.logger.LogAttrs(h.ctx, slog.LevelError, "ezthrottle webhook: callback panicked",
				slog.String("job_id", res.JobID), slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
		}
	}()
	ctx := h.ctx
	if sc.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, sc)
	}
	h.onResult(ctx, res)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	if sw, ok := w.(*statusWriter); ok {
		sw.code = code
	}
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1") // every 503 asks for a redelivery
	}
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for the maps written here
		b = []byte(`{"error":"internal error","code":"internal"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
