// Package ezclient is a client for the EZThrottle job engine.
//
// It speaks both backend dialects behind one Client: EZThrottle Cloud, reached
// through its metering proxy (DialectCloud, the default), and single-node
// self-hosted engines with their POST /jobs API (DialectSelfHosted). A job
// that uses a feature the chosen dialect cannot carry fails before any
// network call with an error satisfying errors.Is(err, ErrUnsupported).
//
// The client is safe for concurrent use. It never logs or returns the API key.
package ezclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Version is this library's version, sent in the User-Agent.
const Version = "0.1.0"

// Default endpoints of EZThrottle Cloud.
const (
	DefaultProxyURL  = "https://tracktags.fly.dev"
	DefaultEngineURL = "https://ezthrottle.fly.dev"
	// DefaultSelfHostedURL is used for DialectSelfHosted when neither
	// WithEngineURL nor EZTHROTTLE_URL is set.
	DefaultSelfHostedURL = "http://localhost:8080"
)

// DefaultMaxRequestBytes is the default of WithMaxRequestBytes: 1 MiB, the
// Cloud proxy's limit on an envelope (and the usual limit of self-hosted
// engines on a POST /jobs body).
const DefaultMaxRequestBytes = 1 << 20

// Environment variables read by New when the matching option is not given.
const (
	EnvAPIKey   = "EZTHROTTLE_API_KEY"
	EnvProxyURL = "EZTHROTTLE_PROXY_URL"
	EnvURL      = "EZTHROTTLE_URL"
	EnvUserID   = "EZTHROTTLE_USER_ID"
)

// Dialect selects the backend protocol.
type Dialect int

const (
	// DialectCloud is EZThrottle Cloud through its metering proxy (protocol §1).
	DialectCloud Dialect = iota
	// DialectSelfHosted is a single-node engine's POST /jobs API (protocol §2).
	DialectSelfHosted
)

// String returns "cloud" or "self-hosted".
func (d Dialect) String() string {
	switch d {
	case DialectCloud:
		return "cloud"
	case DialectSelfHosted:
		return "self-hosted"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// Client talks to an EZThrottle engine. Create it with New; it is safe for
// concurrent use. Create one Client and share it, as with http.Client:
// without WithHTTPClient each Client has a connection pool of its own
// (see NewHTTPTransport and CloseIdleConnections).
type Client struct {
	dialect   Dialect
	apiKey    redact.Secret // never printed, even by dumpers that walk fields
	proxyURL  string
	engineURL string
	userID    string
	hc        *http.Client
	streamHC  *http.Client // hc without its overall Timeout, for SSE streams
	localHC   *http.Client
	logger    *slog.Logger
	userAgent string
	headers   http.Header // extra headers on every engine call
	maxReq    int         // largest request body sent (envelope or direct)

	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration
	sleep       func(ctx context.Context, d time.Duration) error
	jitter      func(d time.Duration) time.Duration
	now         func() time.Time
	// drainTimer starts the timer bounding a drain (readClose); stop
	// releases it. Tests replace it.
	drainTimer func(d time.Duration) (c <-chan time.Time, stop func() bool)
}

type options struct {
	c                    Client
	apiKey               string
	apiKeySet, proxySet  bool
	engineSet, userIDSet bool
	getenv               func(string) string
	errs                 []error
}

// Option configures a Client.
type Option func(*options)

// WithAPIKey sets the API key. Without it New reads EZTHROTTLE_API_KEY.
func WithAPIKey(key string) Option {
	return func(o *options) { o.apiKey, o.apiKeySet = key, true }
}

// WithProxyURL sets the Cloud proxy's base URL. Without it New reads
// EZTHROTTLE_PROXY_URL, else uses DefaultProxyURL.
func WithProxyURL(u string) Option {
	return func(o *options) { o.c.proxyURL, o.proxySet = u, true }
}

// WithEngineURL sets the engine's base URL: for Cloud the target behind the
// proxy, for self-hosted the engine itself. Without it New reads
// EZTHROTTLE_URL, else uses DefaultEngineURL (Cloud) or DefaultSelfHostedURL.
func WithEngineURL(u string) Option {
	return func(o *options) { o.c.engineURL, o.engineSet = u, true }
}

// WithDialect selects the backend dialect (default DialectCloud).
func WithDialect(d Dialect) Option {
	return func(o *options) { o.c.dialect = d }
}

// WithSelfHosted is shorthand for WithDialect(DialectSelfHosted),
// WithEngineURL(engineURL) and WithUserID(userID).
func WithSelfHosted(engineURL, userID string) Option {
	return func(o *options) {
		o.c.dialect = DialectSelfHosted
		o.c.engineURL, o.engineSet = engineURL, true
		o.c.userID, o.userIDSet = userID, true
	}
}

// WithUserID sets the user_id that self-hosted engines require on every job.
// Without it New reads EZTHROTTLE_USER_ID.
func WithUserID(id string) Option {
	return func(o *options) { o.c.userID, o.userIDSet = id, true }
}

// WithHTTPClient sets the *http.Client used to call the proxy or engine
// (default: a client with a 30 s timeout over a transport of its own from
// NewHTTPTransport, pooled for concurrent submissions). Do not
// pass a client wrapped by this library's Transport: engine calls would be
// throttled and could be forwarded to the engine itself.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) {
		if hc == nil {
			o.errs = append(o.errs, errors.New("ezthrottle: WithHTTPClient(nil)"))
			return
		}
		o.c.hc = hc
	}
}

// WithLocalHTTPClient sets the *http.Client used to execute requests locally
// (FRUGAL steps). It defaults to a client with no timeout of its own over a
// transport from NewHTTPTransport (the engine calls' one when WithHTTPClient
// was not given either); steps apply their local timeout through the
// context.
// It may be a client wrapped by this library's Transport.
func WithLocalHTTPClient(hc *http.Client) Option {
	return func(o *options) {
		if hc == nil {
			o.errs = append(o.errs, errors.New("ezthrottle: WithLocalHTTPClient(nil)"))
			return
		}
		o.c.localHC = hc
	}
}

// WithLogger sets the logger (default: discard). Log lines never contain the
// API key or secrets: the client logs through a handler that wraps l's and
// scrubs every record, at every level (see the README's Security section).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.c.logger = l
		}
	}
}

// WithUserAgent prefixes the User-Agent with an application token, e.g.
// "myapp/1.2"; the library's own token is always kept.
func WithUserAgent(product string) Option {
	return func(o *options) {
		if !validHeaderValue(product) {
			o.errs = append(o.errs, &ValidationError{Field: "User-Agent", Reason: "WithUserAgent: control characters are not allowed"})
			return
		}
		if product != "" {
			o.c.userAgent = product + " " + o.c.userAgent
		}
	}
}

// WithHeader adds a header to every call to the proxy or engine, for
// example X-Aqueduct-Account-Queue: enabled on self-hosted engines.
func WithHeader(key, value string) Option {
	return func(o *options) {
		if strings.EqualFold(key, "Authorization") {
			o.errs = append(o.errs, errors.New("ezthrottle: use WithAPIKey, not WithHeader, for Authorization"))
			return
		}
		if !validHeaderName(key) || !validHeaderValue(value) {
			o.errs = append(o.errs, &ValidationError{Field: "header", Reason: fmt.Sprintf("WithHeader(%q, ...): invalid header name or value", key)})
			return
		}
		o.c.headers.Add(key, value)
	}
}

// WithRetry sets how Submit retries transient failures (network errors,
// proxy 5xx, engine 5xx): at most attempts tries in all (1 disables retries;
// default 4), with jittered exponential backoff starting at base and capped at
// max (defaults 200 ms and 5 s).
func WithRetry(attempts int, base, max time.Duration) Option {
	return func(o *options) {
		if attempts < 1 || base < 0 || max < base {
			o.errs = append(o.errs, fmt.Errorf("ezthrottle: WithRetry(%d, %v, %v): need attempts >= 1 and 0 <= base <= max", attempts, base, max))
			return
		}
		o.c.maxAttempts, o.c.backoffBase, o.c.backoffMax = attempts, base, max
	}
}

// WithMaxRequestBytes sets the largest request the client sends, measured
// on the exact bytes sent: the Cloud proxy envelope (with the job
// JSON-escaped inside it) or a self-hosted engine's request body. A larger
// one fails with a *TooLargeError (errors.Is(err, ErrTooLarge)) before
// anything is sent, instead of a 413 after. Default
// DefaultMaxRequestBytes; n must be positive.
func WithMaxRequestBytes(n int) Option {
	return func(o *options) {
		if n <= 0 {
			o.errs = append(o.errs, fmt.Errorf("ezthrottle: WithMaxRequestBytes(%d): need a positive size", n))
			return
		}
		o.c.maxReq = n
	}
}

// withGetenv replaces os.Getenv (tests).
func withGetenv(f func(string) string) Option {
	return func(o *options) { o.getenv = f }
}

// withSleep replaces the backoff sleep (tests).
func withSleep(f func(ctx context.Context, d time.Duration) error) Option {
	return func(o *options) { o.c.sleep = f }
}

// withNow replaces the clock used for Retry-After dates and deadlines (tests).
func withNow(f func() time.Time) Option {
	return func(o *options) { o.c.now = f }
}

// withDrainTimer replaces the timer bounding a drain (tests).
func withDrainTimer(f func(d time.Duration) (<-chan time.Time, func() bool)) Option {
	return func(o *options) { o.c.drainTimer = f }
}

// withJitter replaces the backoff jitter (tests).
func withJitter(f func(time.Duration) time.Duration) Option {
	return func(o *options) { o.c.jitter = f }
}

// New returns a Client. With no options it talks to EZThrottle Cloud with the
// API key from EZTHROTTLE_API_KEY; a missing key is an error here
// (ErrMissingAPIKey), not a 401 later.
func New(opts ...Option) (*Client, error) {
	o := &options{
		c: Client{
			logger:      slog.New(slog.DiscardHandler),
			userAgent:   "ezthrottle-go/" + Version,
			headers:     http.Header{},
			maxAttempts: 4,
			backoffBase: 200 * time.Millisecond,
			backoffMax:  5 * time.Second,
			sleep:       sleepCtx,
			jitter:      fullJitter,
			now:         time.Now,
			drainTimer:  newDrainTimer,
			maxReq:      DefaultMaxRequestBytes,
		},
		getenv: os.Getenv,
	}
	for _, opt := range opts {
		opt(o)
	}
	if len(o.errs) > 0 {
		return nil, errors.Join(o.errs...)
	}
	c := o.c
	apiKey := o.apiKey
	if !o.apiKeySet {
		apiKey = o.getenv(EnvAPIKey)
	}
	apiKey = strings.TrimSpace(apiKey)
	c.apiKey = redact.NewSecret(apiKey)
	if !validHeaderValue(apiKey) {
		// The reason never quotes the key.
		return nil, &ValidationError{Field: "api_key", Reason: "contains control characters, which an HTTP header cannot carry"}
	}
	if !o.proxySet {
		c.proxyURL = o.getenv(EnvProxyURL)
	}
	if !o.engineSet {
		c.engineURL = o.getenv(EnvURL)
	}
	if !o.userIDSet {
		c.userID = o.getenv(EnvUserID)
	}
	switch c.dialect {
	case DialectCloud:
		if apiKey == "" {
			return nil, ErrMissingAPIKey
		}
		if c.proxyURL == "" {
			c.proxyURL = DefaultProxyURL
		}
		if c.engineURL == "" {
			c.engineURL = DefaultEngineURL
		}
		if err := checkBaseURL("proxy URL", c.proxyURL); err != nil {
			return nil, err
		}
	case DialectSelfHosted:
		if c.engineURL == "" {
			c.engineURL = DefaultSelfHostedURL
		}
		if c.userID == "" {
			return nil, &ValidationError{Field: "user_id", Reason: "self-hosted engines require a user ID (WithUserID or " + EnvUserID + ")"}
		}
	default:
		return nil, fmt.Errorf("ezthrottle: unknown dialect %v", c.dialect)
	}
	if err := checkBaseURL("engine URL", c.engineURL); err != nil {
		return nil, err
	}
	c.proxyURL = strings.TrimRight(c.proxyURL, "/")
	c.engineURL = strings.TrimRight(c.engineURL, "/")
	var own *http.Transport
	if c.hc == nil {
		own = NewHTTPTransport()
		c.hc = &http.Client{Timeout: 30 * time.Second, Transport: own}
	}
	c.streamHC = c.hc
	if c.hc.Timeout != 0 {
		// http.Client.Timeout bounds the whole body read, which would cut a
		// long-lived event stream; streams are bounded by their context.
		c.streamHC = &http.Client{Transport: c.hc.Transport, CheckRedirect: c.hc.CheckRedirect, Jar: c.hc.Jar}
	}
	if c.localHC == nil {
		if own == nil {
			own = NewHTTPTransport()
		}
		c.localHC = &http.Client{Transport: own}
	}
	keySet := redact.NewSecrets("****")
	if len(apiKey) >= 4 {
		keySet.AddExact(apiKey)
		keySet.Add(apiKey)
	}
	c.logger = redact.Logger(c.logger, keySet)
	return &c, nil
}

// Sizes of the connection pools of the transports NewHTTPTransport returns.
const (
	// DefaultMaxIdleConnsPerHost is how many idle connections to one host
	// are kept for reuse. http.DefaultTransport keeps 2, so that beyond two
	// concurrent calls to the engine every call opened (and closed) a
	// connection of its own: a storm of 2,000 concurrent submissions opened
	// about 1,200 connections.
	DefaultMaxIdleConnsPerHost = 64
	// DefaultMaxIdleConns bounds the idle connections kept across all hosts.
	DefaultMaxIdleConns = 1024
)

// NewHTTPTransport returns the transport this library's default clients
// use (ezclient's, and the local engine's): a clone of http.DefaultTransport
// (so proxy, TLS and timeout settings carry over) whose idle pool is sized
// for concurrent use, DefaultMaxIdleConnsPerHost per host and
// DefaultMaxIdleConns in all. http.DefaultTransport itself is not modified.
// When http.DefaultTransport is not an *http.Transport, it starts from
// Go's default settings instead.
func NewHTTPTransport() *http.Transport {
	var t *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	} else {
		t = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ForceAttemptHTTP2:     true,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	t.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	t.MaxIdleConns = DefaultMaxIdleConns
	return t
}

// CloseIdleConnections closes the idle connections of the client's engine
// and local-execution HTTP clients (see http.Client.CloseIdleConnections).
// Call it when done with a Client whose default transport it built, so
// that its pooled connections do not linger until they time out.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
	if c.localHC != c.hc {
		c.localHC.CloseIdleConnections()
	}
}

func checkBaseURL(what, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &ValidationError{Field: what, Reason: fmt.Sprintf("%q is not an absolute http(s) URL", redact.URL(raw))}
	}
	return nil
}

// Dialect returns the client's backend dialect.
func (c *Client) Dialect() Dialect { return c.dialect }

// EngineURL returns the engine's base URL (without a trailing slash).
func (c *Client) EngineURL() string { return c.engineURL }

// ProxyURL returns the Cloud proxy's base URL ("" for self-hosted).
func (c *Client) ProxyURL() string {
	if c.dialect != DialectCloud {
		return ""
	}
	return c.proxyURL
}

// HTTPClient returns the *http.Client used for engine calls.
func (c *Client) HTTPClient() *http.Client { return c.hc }

// LocalHTTPClient returns the *http.Client used for local execution.
func (c *Client) LocalHTTPClient() *http.Client { return c.localHC }

// Logger returns the client's logger (never nil).
func (c *Client) Logger() *slog.Logger { return c.logger }

// String describes the client without revealing the API key.
func (c *Client) String() string {
	return fmt.Sprintf("ezclient.Client{dialect: %s, engine: %s, api key: %s}", c.dialect, redact.URL(c.engineURL), redactKey(c.apiKey.Reveal()))
}

// GoString is String: %#v never shows the API key.
func (c *Client) GoString() string { return c.String() }

// Format makes every verb (%v, %+v, %#v, %s) print String, so that no
// formatting of a Client, or of a struct holding one by value, reveals the
// API key.
func (c Client) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, c.String()) }

// redactKey never reveals more than the last four characters of a key.
func redactKey(k string) string {
	switch {
	case k == "":
		return "(none)"
	case len(k) <= 8:
		return "****"
	}
	return "****" + k[len(k)-4:]
}

// scrub removes the API key from s (defence in depth: the key is never put
// into messages on purpose, but a server may echo it back).
func (c *Client) scrub(s string) string {
	k := c.apiKey.Reveal()
	if len(k) < 4 {
		return s
	}
	return strings.ReplaceAll(s, k, "****")
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// fullJitter returns a random duration in [d/2, d].
func fullJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// backoff returns the wait before attempt n (n >= 1 is the first retry).
func (c *Client) backoff(n int) time.Duration {
	d := c.backoffBase
	for i := 1; i < n && d < c.backoffMax; i++ {
		d *= 2
	}
	if d > c.backoffMax {
		d = c.backoffMax
	}
	return c.jitter(d)
}

// maxErrorBody bounds how much of an error reply is kept and read.
const maxErrorBody = 64 << 10

// maxReplyBody bounds how much of any reply is read.
const maxReplyBody = 4 << 20

// maxDrain bounds what is read of a discarded body so that its connection
// can be reused.
const maxDrain = 64 << 10

// drainTimeout bounds how long the client reads a reply body it discards
// (so that its connection can be reused) or the message of a stream's error
// reply: an engine that trickles such a body cannot hold the caller longer.
// After it the body is closed (and its connection with it).
const drainTimeout = time.Second

func newDrainTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// readResult is the outcome of the background read of readClose.
type readResult struct {
	b        []byte
	err      error
	panicked bool
	panicVal any
}

// readClose reads rc until EOF, an error or limit bytes, for at most
// drainTimeout and never after ctx is done, then closes it. With keep it
// returns the bytes read (nil when the time ran out first); complete
// reports whether the read ended (EOF, an error or the limit) in time.
//
// It is the one time-bounded read of the client (the idea of the root
// package's Transport.readWithin): the Read runs in a goroutine of its own
// because a Read of an HTTP body has no deadline; when the time runs out,
// closing the body makes that pending Read return, and the goroutine ends.
// A panic in Read goes on in the caller's goroutine when the caller still
// waits for it.
func (c *Client) readClose(ctx context.Context, rc io.ReadCloser, limit int64, keep bool) (b []byte, complete bool) {
	if rc == nil || rc == http.NoBody {
		return nil, true
	}
	done := make(chan readResult, 1) // buffered: a late Read does not block the goroutine
	go func() {
		var r readResult
		defer func() {
			if v := recover(); v != nil {
				r = readResult{panicked: true, panicVal: v}
			}
			done <- r
		}()
		if keep {
			r.b, r.err = io.ReadAll(io.LimitReader(rc, limit))
		} else {
			_, r.err = io.Copy(io.Discard, io.LimitReader(rc, limit))
		}
	}()
	timer, stop := c.drainTimer(drainTimeout)
	defer stop()
	select {
	case r := <-done:
		_ = rc.Close()
		if r.panicked {
			panic(r.panicVal)
		}
		return r.b, true
	case <-timer:
	case <-ctx.Done():
	}
	_ = rc.Close() // makes the pending Read return: the goroutine ends
	return nil, false
}

// drainClose discards up to maxDrain bytes of a response body, so that its
// connection can be reused, for at most drainTimeout (and not after ctx is
// done), and closes it.
func (c *Client) drainClose(ctx context.Context, rc io.ReadCloser) {
	_, _ = c.readClose(ctx, rc, maxDrain, false)
}
