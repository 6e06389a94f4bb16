package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

const listenSynopsis = `Usage: ezthrottle listen [flags]

Runs a local webhook receiver: point a job's webhook at the URL it prints.
Every delivery is de-duplicated by job ID and pretty-printed; rejected
deliveries are reported too. Both payload forms (Cloud and self-hosted) are
accepted. A delivery is acknowledged only once its result is queued for
printing: when results come faster than they are printed, deliveries wait,
then are refused with 503 and Retry-After (the engine delivers them again),
so none is acknowledged and skipped.

Signatures: with a secret, Cloud-form deliveries must carry a valid
X-EZThrottle-Signature. Self-hosted engines never sign their deliveries, so
a self-hosted receiver cannot verify them: self-hosted-form deliveries are
accepted and shown as NOT verified, unless --signed-only rejects them.

Runs until Ctrl-C (SIGINT), SIGTERM, or --count deliveries.`

type listenConfig struct {
	addr, path         string
	secret, secondary  string
	jsonOut            bool
	count              int
	maxBody            int
	tolerance          time.Duration
	maxDeliveryPayload int64
	signedOnly         bool
}

// verified reports whether an accepted delivery's signature was checked:
// with a secret, every Cloud-form delivery is; a self-hosted-form one only
// with --signed-only (self-hosted engines do not sign).
func (c listenConfig) verified(r webhook.Result) bool {
	return c.secret != "" && (c.signedOnly || r.Form != webhook.FormSelfHosted)
}

func (a *app) listen(ctx context.Context, args []string) error {
	var c listenConfig
	fs := a.newFlagSet("listen", listenSynopsis)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:9090", "`host:port` to listen on (port 0 picks a free port)")
	fs.StringVar(&c.path, "path", "/", "URL path that receives deliveries (\"/\" accepts any path)")
	fs.StringVar(&c.secret, "secret", "", "webhook secret to verify signatures with (default $EZTHROTTLE_WEBHOOK_SECRET; prefer the variable: flags show in ps)")
	fs.StringVar(&c.secondary, "secondary-secret", "", "previous secret, still accepted during a rotation (default $EZTHROTTLE_WEBHOOK_SECONDARY_SECRET)")
	fs.BoolVar(&c.jsonOut, "json", false, "print each delivery as one JSON line instead of a readable block")
	fs.IntVar(&c.count, "count", 0, "exit after this many accepted deliveries (0: run until interrupted)")
	fs.IntVar(&c.maxBody, "max-body", 2000, "print at most this many characters of a response body (0: all)")
	fs.DurationVar(&c.tolerance, "tolerance", webhook.DefaultTolerance, "accepted clock skew of a signature's timestamp")
	fs.Int64Var(&c.maxDeliveryPayload, "max-payload", webhook.DefaultMaxBodyBytes, "largest delivery body accepted, in bytes (413 above)")
	fs.BoolVar(&c.signedOnly, "signed-only", false, "with a secret, also require a valid signature on self-hosted deliveries (self-hosted engines never sign, so they are all rejected)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.count < 0 || c.maxBody < 0 || c.tolerance <= 0 || c.maxDeliveryPayload <= 0 {
		return usagef("--count and --max-body must be >= 0, --tolerance and --max-payload > 0")
	}
	if !strings.HasPrefix(c.path, "/") {
		return usagef("--path must start with '/'")
	}
	if c.secret == "" {
		c.secret = a.envOr("EZTHROTTLE_WEBHOOK_SECRET", "")
	}
	if c.secondary == "" {
		c.secondary = a.envOr("EZTHROTTLE_WEBHOOK_SECONDARY_SECRET", "")
	}
	if c.secret == "" && c.secondary != "" {
		return usagef("--secondary-secret needs --secret (or $EZTHROTTLE_WEBHOOK_SECRET)")
	}
	if c.signedOnly && c.secret == "" {
		return usagef("--signed-only needs --secret (or $EZTHROTTLE_WEBHOOK_SECRET)")
	}
	// One store behind two handlers: the verifying one, and (with a
	// secret) one for unsigned self-hosted-form deliveries, which no
	// self-hosted engine signs.
	store := webhook.NewStore()
	defer store.Close()
	// Every result is handed to this loop through the Handlers' callback,
	// one at a time: a delivery is acknowledged only once its result is
	// queued for printing, and while printing lags the deliveries wait,
	// then get 503 with Retry-After and are redelivered. (A subscription
	// would skip results under load.)
	results := make(chan webhook.Result)
	printResult := func(ctx context.Context, r webhook.Result) {
		select {
		case results <- r:
		case <-ctx.Done():
		}
	}
	opts := []webhook.Option{webhook.WithTolerance(c.tolerance), webhook.WithMaxBodyBytes(c.maxDeliveryPayload), webhook.WithStore(store),
		webhook.WithCallback(printResult), webhook.WithCallbackConcurrency(1, listenQueue)}
	var unsigned *webhook.Handler
	if c.secret != "" && !c.signedOnly {
		u, err := webhook.NewHandler(opts...)
		if err != nil {
			return err
		}
		defer u.Close()
		unsigned = u
	}
	if c.secret != "" {
		opts = append(opts, webhook.WithSecret(c.secret), webhook.WithSecondarySecret(c.secondary))
	}
	h, err := webhook.NewHandler(opts...)
	if err != nil {
		return err
	}
	defer h.Close()

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.addr, err)
	}
	mux := http.NewServeMux()
	var recv http.Handler = h
	if unsigned != nil {
		recv = routeSelfHosted(h, unsigned, c.maxDeliveryPayload)
	}
	mux.Handle(c.path, a.reportRejections(recv))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	verify := "signatures are NOT verified (no secret: set $EZTHROTTLE_WEBHOOK_SECRET or --secret)"
	if c.secret != "" {
		verify = "Cloud deliveries: signatures verified (X-EZThrottle-Signature)"
		if c.secondary != "" {
			verify += ", secondary secret accepted"
		}
		if c.signedOnly {
			verify += "\n  self-hosted deliveries: rejected unless signed (--signed-only; self-hosted engines never sign)"
		} else {
			verify += "\n  self-hosted deliveries: accepted NOT verified (self-hosted engines never sign; --signed-only rejects them)"
		}
	}
	fmt.Fprintf(a.stdout, "Listening for EZThrottle webhooks on http://%s%s\n  %s\nUse this URL as a job's webhook. Press Ctrl-C to stop.\n", ln.Addr(), c.path, verify)

	n := 0
	var serveErr error
loop:
	for c.count == 0 || n < c.count {
		select {
		case <-ctx.Done():
			break loop
		case err := <-served:
			serveErr = err
			break loop
		case r := <-results:
			n++
			a.printResult(n, r, c)
		}
	}
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shutCtx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", serveErr)
	}
	if c.count == 0 || n < c.count {
		fmt.Fprintf(a.stdout, "Stopped after %d delivery(ies).\n", n)
	}
	return nil
}

// listenQueue is how many accepted results may wait to be printed.
const listenQueue = 256

// routeSelfHosted sends deliveries in the self-hosted payload form to
// unsigned (self-hosted engines never sign them) and every other request
// to verified. The body is read once, up to max+1 bytes, and handed on; a
// larger one goes to verified, which answers 413.
func routeSelfHosted(verified, unsigned http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ContentLength > max {
			verified.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			http.Error(w, `{"error":"could not read request body","code":"bad_body"}`, http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		if int64(len(body)) <= max {
			if res, err := webhook.Decode(body); err == nil && res.Form == webhook.FormSelfHosted {
				unsigned.ServeHTTP(w, r)
				return
			}
		}
		verified.ServeHTTP(w, r)
	})
}

// reportRejections prints the deliveries the handler refused (bad signature,
// malformed payload, ...): the accepted ones are printed from the
// subscription.
func (a *app) reportRejections(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusOK {
			return
		}
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		msg := strings.TrimSpace(rec.body.String())
		if json.Unmarshal(rec.body.Bytes(), &e) == nil && e.Error != "" {
			msg = e.Error
		}
		fmt.Fprintf(a.stdout, "%s  ✗ rejected %s %s from %s: %d %s: %s\n",
			time.Now().Format("15:04:05"), r.Method, r.URL.Path, r.RemoteAddr, rec.status, http.StatusText(rec.status), redact.Text(msg))
	})
}

// statusRecorder remembers the status and the start of the body written.
type statusRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if room := 1024 - s.body.Len(); room > 0 {
		s.body.Write(p[:min(room, len(p))])
	}
	return s.ResponseWriter.Write(p)
}

// delivery is the JSON line printed with --json.
type delivery struct {
	JobID         string         `json:"job_id"`
	IdempotentKey string         `json:"idempotent_key,omitempty"`
	Succeeded     bool           `json:"succeeded"`
	Status        string         `json:"status"`
	StatusCode    int            `json:"status_code,omitempty"`
	Headers       map[string]any `json:"headers,omitempty"`
	Body          string         `json:"body,omitempty"`
	Reason        string         `json:"reason,omitempty"`
	Metadata      map[string]any `json:"metadata,omitempty"`
	Form          string         `json:"form"`
	Verified      bool           `json:"signature_verified"`
	ReceivedAt    time.Time      `json:"received_at"`
}

func (a *app) printResult(n int, r webhook.Result, c listenConfig) {
	if c.jsonOut {
		d := delivery{
			JobID: r.JobID, IdempotentKey: r.IdempotentKey, Succeeded: r.Succeeded, Status: r.Status,
			StatusCode: r.StatusCode, Body: redact.Text(r.Body), Reason: redact.Text(r.Reason), Metadata: r.Metadata,
			Form: r.Form.String(), Verified: c.verified(r), ReceivedAt: r.ReceivedAt,
		}
		if len(r.Header) > 0 {
			d.Headers = map[string]any{}
			for k, v := range r.Header {
				s := redact.Text(strings.Join(v, ", "))
				if redact.SensitiveHeader(k) {
					s = redact.Mask // Set-Cookie, tokens: never printed
				}
				d.Headers[k] = s
			}
		}
		b, err := json.Marshal(d)
		if err != nil {
			fmt.Fprintf(a.stderr, "cannot encode delivery %s: %v\n", r.JobID, err)
			return
		}
		fmt.Fprintf(a.stdout, "%s\n", b)
		return
	}
	var b strings.Builder
	mark := "✓ succeeded"
	if !r.Succeeded {
		mark = "✗ failed"
	}
	fmt.Fprintf(&b, "── delivery #%d at %s ── %s\n", n, r.ReceivedAt.Format("15:04:05.000"), mark)
	fmt.Fprintf(&b, "  job         %s\n", r.JobID)
	if r.IdempotentKey != "" {
		fmt.Fprintf(&b, "  key         %s\n", r.IdempotentKey)
	}
	status := r.Status
	if r.StatusCode != 0 {
		status += fmt.Sprintf(" (HTTP %d %s)", r.StatusCode, http.StatusText(r.StatusCode))
	}
	fmt.Fprintf(&b, "  status      %s\n", status)
	if r.Reason != "" {
		fmt.Fprintf(&b, "  reason      %s\n", redact.Text(r.Reason))
	}
	sig := "not checked (no secret)"
	switch {
	case c.verified(r):
		sig = "verified"
	case c.secret != "":
		sig = "NOT verified (self-hosted engines do not sign deliveries)"
	}
	fmt.Fprintf(&b, "  signature   %s\n", sig)
	fmt.Fprintf(&b, "  form        %s\n", r.Form)
	if len(r.Metadata) > 0 {
		md, _ := json.Marshal(r.Metadata)
		fmt.Fprintf(&b, "  metadata    %s\n", md)
	}
	if len(r.Header) > 0 {
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			label := ""
			if i == 0 {
				label = "headers"
			}
			v := strings.Join(r.Header[k], ", ")
			if redact.SensitiveHeader(k) {
				v = redact.Mask // Set-Cookie, tokens: never printed
			}
			fmt.Fprintf(&b, "  %-11s %s: %s\n", label, k, redact.Text(v))
		}
	}
	body := r.Body
	if c.maxBody > 0 && len([]rune(body)) > c.maxBody {
		body = string([]rune(body)[:c.maxBody]) + fmt.Sprintf("… (%d bytes in all)", len(r.Body))
	}
	if body != "" {
		fmt.Fprintf(&b, "  body        %s\n", indentBody(redact.Text(body)))
	}
	_, _ = io.WriteString(a.stdout, b.String())
}

// indentBody pretty-prints a JSON body, else returns it as is; continuation
// lines are indented under the label.
func indentBody(s string) string {
	var buf bytes.Buffer
	if json.Valid([]byte(s)) && json.Indent(&buf, []byte(s), "              ", "  ") == nil {
		return buf.String()
	}
	return strings.ReplaceAll(s, "\n", "\n              ")
}
