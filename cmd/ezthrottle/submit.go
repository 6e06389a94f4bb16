package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

const submitSynopsis = `Usage: ezthrottle submit [flags]

Submits one job to EZThrottle and prints the engine's acknowledgement (the
submission) as JSON on stdout.

The job comes from flags (--url and friends) or from a JSON file in the
engine's job format (--json FILE, or --json - for stdin), the same snake_case
object the SDK sends: {"url":..., "method":..., "webhooks":[{"url":...}], ...}.

By default the job goes to EZThrottle Cloud with the API key in
$EZTHROTTLE_API_KEY (run 'ezthrottle dev' and export what it prints to use a
local engine instead). --self-hosted URL talks to a self-hosted engine
(POST /jobs) with --user-id; that dialect carries one webhook and no regions,
fallbacks, children, retry policy or metadata.

Examples:
  ezthrottle submit --url https://api.example.com/charges --method POST \
      --header 'Content-Type: application/json' --body '{"amount":1000}' \
      --webhook http://127.0.0.1:9090/ --idempotency-key order-42
  echo '{"url":"https://httpbin.org/get","regions":["iad","lax"]}' | ezthrottle submit --json -
  ezthrottle submit --url http://127.0.0.1:9000/slow --wait   # follow it on 'ezthrottle dev'`

// maxInputBytes bounds what --json and --body-file read.
const maxInputBytes = 8 << 20

type submitConfig struct {
	url, method         string
	headers             listFlag
	body, bodyFile      string
	webhooks            listFlag
	regions             listFlag
	regionPolicy        string
	executionMode       string
	quorum              int
	idempotencyKey      string
	unique              bool
	metadata            listFlag
	jsonFile            string
	selfHosted, userID  string
	proxyURL, engineURL string
	timeout             time.Duration
	attempts            int
	dryRun              bool
	wait                bool
	waitTimeout         time.Duration
}

func (a *app) submit(ctx context.Context, args []string) error {
	c := submitConfig{regions: listFlag{split: true}}
	fs := a.newFlagSet("submit", submitSynopsis)
	fs.StringVar(&c.url, "url", "", "destination `URL` the engine calls (required unless --json)")
	fs.StringVar(&c.method, "method", "GET", "HTTP method")
	fs.Var(&c.headers, "header", "request header `'Name: value'` (repeatable)")
	fs.StringVar(&c.body, "body", "", "request body")
	fs.StringVar(&c.bodyFile, "body-file", "", "read the request body from this `file` (- for stdin)")
	fs.Var(&c.webhooks, "webhook", "webhook `URL` that receives the result (repeatable)")
	fs.Var(&c.regions, "region", "region to run in, e.g. iad (repeatable or comma-separated)")
	fs.StringVar(&c.regionPolicy, "region-policy", "", "fallback (route around a down region) or strict")
	fs.StringVar(&c.executionMode, "execution-mode", "", "race (first region wins) or fanout (every region runs)")
	fs.IntVar(&c.quorum, "webhook-quorum", 0, "voting webhooks that must be delivered (default 1)")
	fs.StringVar(&c.idempotencyKey, "idempotency-key", "", "custom idempotent key (default: HASH of url, method and body)")
	fs.BoolVar(&c.unique, "unique", false, "use a fresh random idempotent key (UNIQUE strategy) instead of HASH")
	fs.Var(&c.metadata, "metadata", "metadata entry `key=value` echoed in the webhook (repeatable)")
	fs.StringVar(&c.jsonFile, "json", "", "read the whole job from this JSON `file` (- for stdin) instead of the job flags")
	fs.StringVar(&c.selfHosted, "self-hosted", "", "submit to the self-hosted engine at this base `URL` (POST /jobs)")
	fs.StringVar(&c.userID, "user-id", "", "user_id for --self-hosted (default $EZTHROTTLE_USER_ID)")
	fs.StringVar(&c.proxyURL, "proxy-url", "", "Cloud proxy base URL (default $EZTHROTTLE_PROXY_URL, else "+ezclient.DefaultProxyURL+")")
	fs.StringVar(&c.engineURL, "engine-url", "", "Cloud engine base URL (default $EZTHROTTLE_URL, else "+ezclient.DefaultEngineURL+")")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up on the submission after this long")
	fs.IntVar(&c.attempts, "attempts", 4, "tries in all for transient failures (network errors, 5xx)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "print the job as JSON and send nothing")
	fs.BoolVar(&c.wait, "wait", false, "then show the job's events on stderr as they happen until it has settled (local or self-hosted engine); exit 1 if it failed")
	fs.DurationVar(&c.waitTimeout, "wait-timeout", 10*time.Minute, "stop following the job after this long (--wait)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.timeout <= 0 || c.attempts < 1 || c.waitTimeout <= 0 {
		return usagef("--timeout and --wait-timeout must be > 0 and --attempts >= 1")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	job, err := a.buildJob(ctx, &c, set)
	if err != nil {
		return err
	}
	dialect := ezclient.DialectCloud
	if c.selfHosted != "" {
		dialect = ezclient.DialectSelfHosted
		if c.userID == "" {
			c.userID = a.envOr(ezclient.EnvUserID, "")
		}
		if c.userID == "" {
			return usagef("--self-hosted needs --user-id (or $%s)", ezclient.EnvUserID)
		}
	} else if set["user-id"] {
		return usagef("--user-id only applies with --self-hosted")
	}
	if err := job.ValidateFor(dialect); err != nil {
		return usagef("invalid job: %v", err)
	}
	if c.dryRun {
		return writeJSON(a.stdout, job)
	}

	tr := ezclient.NewHTTPTransport()
	defer tr.CloseIdleConnections()
	opts := []ezclient.Option{
		ezclient.WithHTTPClient(&http.Client{Transport: tr, Timeout: c.timeout}),
		ezclient.WithRetry(c.attempts, 200*time.Millisecond, 5*time.Second),
		ezclient.WithUserAgent("ezthrottle-cli"),
	}
	if dialect == ezclient.DialectSelfHosted {
		opts = append(opts, ezclient.WithSelfHosted(c.selfHosted, c.userID))
	} else {
		key := strings.TrimSpace(a.getenv(ezclient.EnvAPIKey))
		if key == "" {
			return errors.New(ezclient.EnvAPIKey + " is not set: export your EZThrottle API key, or run 'ezthrottle dev' and export the variables it prints (or use --self-hosted URL)")
		}
		opts = append(opts,
			ezclient.WithAPIKey(key),
			ezclient.WithProxyURL(orDefault(c.proxyURL, a.envOr(ezclient.EnvProxyURL, ezclient.DefaultProxyURL))),
			ezclient.WithEngineURL(orDefault(c.engineURL, a.envOr(ezclient.EnvURL, ezclient.DefaultEngineURL))),
		)
	}
	client, err := ezclient.New(opts...)
	if err != nil {
		return usagef("%v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.wait && dialect == ezclient.DialectCloud {
		// Check that the engine can be followed before submitting anything.
		if err := probeLocal(sctx, &http.Client{Transport: tr, Timeout: c.timeout}, client.EngineURL()); err != nil {
			return err
		}
	}
	sub, err := client.Submit(sctx, job)
	if err != nil {
		return describeSubmitError(err)
	}
	if err := writeJSON(a.stdout, sub); err != nil || !c.wait {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, c.waitTimeout)
	defer wcancel()
	return a.followJob(wctx, client, &http.Client{Transport: tr, Timeout: c.timeout}, sub)
}

// buildJob makes the job from --json or from the job flags (not both).
func (a *app) buildJob(ctx context.Context, c *submitConfig, set map[string]bool) (*ezclient.Job, error) {
	jobFlags := []string{"url", "method", "header", "body", "body-file", "webhook", "region", "region-policy",
		"execution-mode", "webhook-quorum", "idempotency-key", "unique", "metadata"}
	if c.jsonFile != "" {
		for _, f := range jobFlags {
			if set[f] {
				return nil, usagef("--json cannot be combined with --%s: put the field in the JSON", f)
			}
		}
		data, err := a.readInput(ctx, c.jsonFile)
		if err != nil {
			return nil, err
		}
		var job ezclient.Job
		if err := json.Unmarshal(data, &job); err != nil {
			return nil, usagef("--json %s: not a valid job object: %v", c.jsonFile, err)
		}
		return &job, nil
	}
	if c.url == "" {
		return nil, usagef("--url is required (or give the whole job with --json)")
	}
	job := &ezclient.Job{URL: c.url, Method: strings.ToUpper(c.method)}
	for _, h := range c.headers.vals {
		k, v, ok := strings.Cut(h, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, usagef("--header %q: want 'Name: value'", h)
		}
		if job.Headers == nil {
			job.Headers = map[string]string{}
		}
		job.Headers[k] = strings.TrimSpace(v)
	}
	switch {
	case set["body"] && set["body-file"]:
		return nil, usagef("--body and --body-file are mutually exclusive")
	case set["body-file"]:
		data, err := a.readInput(ctx, c.bodyFile)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(data) {
			return nil, usagef("--body-file %s: the body is not valid UTF-8 (jobs carry their body as a JSON string)", c.bodyFile)
		}
		job.Body = string(data)
	default:
		job.Body = c.body
	}
	for _, w := range c.webhooks.vals {
		job.Webhooks = append(job.Webhooks, ezclient.Webhook{URL: w})
	}
	for _, r := range c.regions.vals {
		job.Regions = append(job.Regions, ezclient.Region(r))
	}
	job.RegionPolicy = ezclient.RegionPolicy(c.regionPolicy)
	job.ExecutionMode = ezclient.ExecutionMode(c.executionMode)
	job.WebhookQuorum = c.quorum
	if c.idempotencyKey != "" && c.unique {
		return nil, usagef("--idempotency-key and --unique are mutually exclusive")
	}
	job.IdempotentKey = c.idempotencyKey
	if c.unique {
		job.IdempotentKey = ezclient.UniqueKey()
	}
	for _, m := range c.metadata.vals {
		k, v, ok := strings.Cut(m, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, usagef("--metadata %q: want key=value", m)
		}
		if job.Metadata == nil {
			job.Metadata = map[string]any{}
		}
		job.Metadata[strings.TrimSpace(k)] = v
	}
	return job, nil
}

// readInput reads a file, or stdin for "-", bounded by maxInputBytes. It
// returns when ctx is cancelled (Ctrl-C: main catches SIGINT), leaving the
// blocked read behind, as the process is about to exit.
func (a *app) readInput(ctx context.Context, name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = a.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	type read struct {
		data []byte
		err  error
	}
	done := make(chan read, 1)
	go func() {
		data, err := io.ReadAll(io.LimitReader(r, maxInputBytes+1))
		done <- read{data, err}
	}()
	var data []byte
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("reading %s: interrupted", name)
	case rd := <-done:
		if rd.err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, rd.err)
		}
		data = rd.data
	}
	if len(data) > maxInputBytes {
		return nil, usagef("%s is larger than %d bytes", name, maxInputBytes)
	}
	return data, nil
}

// describeSubmitError adds a hint to the errors a CLI user can act on. The
// ezclient errors never contain the API key.
func describeSubmitError(err error) error {
	var rl *ezclient.RateLimitError
	switch {
	case errors.Is(err, ezclient.ErrUnauthorized):
		return fmt.Errorf("%w (check $%s)", err, ezclient.EnvAPIKey)
	case errors.As(err, &rl) && rl.RetryAfter > 0:
		return fmt.Errorf("%w (retry in %v)", err, rl.RetryAfter)
	case ezclient.IsUnreachable(err):
		return fmt.Errorf("%w (is the engine running? check $%s / $%s or --self-hosted)", err, ezclient.EnvProxyURL, ezclient.EnvURL)
	}
	return err
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
