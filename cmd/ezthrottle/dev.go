package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

const devSynopsis = `Usage: ezthrottle dev [flags]

Runs a local EZThrottle engine on localhost until Ctrl-C (SIGINT) or SIGTERM.
It speaks both dialects: the Cloud proxy (POST /api/v1/proxy, checked against
the development API key it prints) and the self-hosted API (POST /jobs,
GET /jobs/{id}, GET /jobs/{id}/stream, GET /health). Jobs really run: their
destinations are called with per-host pacing, retries, simulated regions,
fallbacks and children, and results are delivered to every webhook. With a
webhook secret, Cloud-dialect deliveries are signed (X-EZThrottle-Signature);
self-hosted deliveries are not, as on real self-hosted engines. Its root URL
serves a live dashboard of the jobs, their attempts and webhook deliveries,
and the pace of every destination.

Export the variables it prints and every example, the SDK and
'ezthrottle submit' use the local engine instead of EZThrottle Cloud.`

// devConfig is what the dev command was asked for.
type devConfig struct {
	addr           string
	apiKey         string
	regions        []string
	down           []string
	latencies      []string
	rps            float64
	maxConcurrent  int
	secret         string
	webhookRetries string
	retryDelay     time.Duration
	maxFinished    int
	verbose        bool
	allowedHosts   []string
}

// defaultDevMaxFinished is how many settled jobs 'ezthrottle dev' keeps by
// default (~3 KB each for small jobs, so ~30 MB), so that a long session or
// a load test does not grow without bound.
const defaultDevMaxFinished = 10000

func (a *app) dev(ctx context.Context, args []string) error {
	var c devConfig
	regions := &listFlag{split: true}
	down := &listFlag{split: true}
	lat := &listFlag{split: true}
	hosts := &listFlag{split: true}
	fs := a.newFlagSet("dev", devSynopsis)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8787", "`host:port` to listen on (port 0 picks a free port)")
	fs.StringVar(&c.apiKey, "api-key", ezlocal.DefaultAPIKey, "development API key the engine accepts (not a secret)")
	fs.Var(regions, "regions", "simulated regions, comma-separated; the first runs jobs that name none (default: all known regions)")
	fs.Var(down, "down", "regions to start marked down, comma-separated")
	fs.Var(lat, "latency", "simulated latency per region, `region=duration`, comma-separated or repeated (e.g. lax=80ms)")
	fs.Float64Var(&c.rps, "rps", ezlocal.DefaultRPS, "default pace per destination host, requests per second")
	fs.IntVar(&c.maxConcurrent, "max-concurrent", ezlocal.DefaultMaxConcurrent, "default requests in flight per destination host")
	fs.StringVar(&c.secret, "webhook-secret", "", "sign Cloud-dialect webhook deliveries with this secret (default $EZTHROTTLE_WEBHOOK_SECRET; at least 16 characters); self-hosted deliveries are never signed")
	fs.StringVar(&c.webhookRetries, "webhook-retries", "1s,2s,4s,8s", "waits between webhook delivery attempts, comma-separated (\"none\": one attempt)")
	fs.DurationVar(&c.retryDelay, "retry-delay", ezlocal.DefaultRetryDelay, "first wait before a same-region retry when the destination sends no Retry-After")
	fs.IntVar(&c.maxFinished, "max-finished-jobs", defaultDevMaxFinished, "settled jobs kept for status lookups; the earliest-settled beyond it are forgotten (404 like an unknown job); 0 keeps all")
	fs.BoolVar(&c.verbose, "verbose", false, "log every job event (queued, attempts, retries, deliveries) to stderr")
	fs.Var(hosts, "allowed-host", "`host` names (comma-separated or repeated; \"*\" for any) accepted in the Host header of requests reaching the engine on a loopback address, besides localhost and loopback IPs (others get 403: DNS rebinding protection)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c.regions, c.down, c.latencies, c.allowedHosts = regions.vals, down.vals, lat.vals, hosts.vals
	if c.secret == "" {
		c.secret = a.envOr("EZTHROTTLE_WEBHOOK_SECRET", "")
	}
	opts, err := c.options()
	if err != nil {
		return err
	}
	var logger *slog.Logger
	if c.verbose {
		logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		opts = append(opts, ezlocal.WithLogger(logger))
	}
	e, err := ezlocal.Start(opts...)
	if err != nil {
		return err
	}
	for _, r := range c.down {
		if err := e.SetRegionDown(r, true); err != nil {
			e.Close()
			return usagef("--down %s: %v", r, err)
		}
	}
	a.printDevBanner(e, c)
	<-ctx.Done()
	fmt.Fprintln(a.stdout, "\nShutting down: cancelling running jobs and deliveries...")
	n := e.JobsSubmitted()
	e.Close()
	fmt.Fprintf(a.stdout, "Engine stopped (%d job(s) submitted during this session).\n", n)
	return nil
}

// options turns the flags into engine options, reporting bad values as usage
// errors.
func (c *devConfig) options() ([]ezlocal.Option, error) {
	opts := []ezlocal.Option{ezlocal.WithAddr(c.addr)}
	if strings.TrimSpace(c.apiKey) == "" {
		return nil, usagef("--api-key must not be empty")
	}
	opts = append(opts, ezlocal.WithAPIKey(c.apiKey, ezlocal.DefaultCustomerID))
	if c.rps <= 0 || c.maxConcurrent < 1 {
		return nil, usagef("--rps must be > 0 and --max-concurrent >= 1")
	}
	opts = append(opts, ezlocal.WithDefaultPace(c.rps, c.maxConcurrent))
	if c.retryDelay < 0 {
		return nil, usagef("--retry-delay must not be negative")
	}
	opts = append(opts, ezlocal.WithRetryDelay(c.retryDelay))
	if c.maxFinished < 0 {
		return nil, usagef("--max-finished-jobs must not be negative")
	}
	opts = append(opts, ezlocal.WithMaxFinishedJobs(c.maxFinished))
	for _, h := range c.allowedHosts {
		if strings.ContainsAny(h, "/?#@ ") {
			return nil, usagef("--allowed-host %q: want a host name or IP, optionally with a port (no scheme or path)", h)
		}
	}
	if len(c.allowedHosts) > 0 {
		opts = append(opts, ezlocal.WithAllowedHosts(c.allowedHosts...))
	}

	latency := map[string]time.Duration{}
	for _, l := range c.latencies {
		name, d, ok := strings.Cut(l, "=")
		dur, err := time.ParseDuration(strings.TrimSpace(d))
		if !ok || strings.TrimSpace(name) == "" || err != nil || dur < 0 {
			return nil, usagef("--latency %q: want region=duration, e.g. lax=80ms", l)
		}
		latency[strings.TrimSpace(name)] = dur
	}
	var regions []ezlocal.RegionConfig
	if len(c.regions) > 0 {
		for _, r := range c.regions {
			regions = append(regions, ezlocal.RegionConfig{Name: r})
		}
	} else {
		regions = ezlocal.DefaultRegions()
	}
	known := map[string]bool{}
	for i := range regions {
		if known[regions[i].Name] {
			return nil, usagef("--regions: region %q repeated", regions[i].Name)
		}
		known[regions[i].Name] = true
		regions[i].Latency = latency[regions[i].Name]
	}
	for name := range latency {
		if !known[name] {
			return nil, usagef("--latency: unknown region %q", name)
		}
	}
	for _, r := range c.down {
		if !known[r] {
			return nil, usagef("--down: unknown region %q", r)
		}
	}
	opts = append(opts, ezlocal.WithRegions(regions...))

	retries, err := parseDurations(c.webhookRetries)
	if err != nil {
		return nil, usagef("--webhook-retries: %v", err)
	}
	opts = append(opts, ezlocal.WithWebhookRetries(retries...))
	if c.secret != "" {
		if len(c.secret) < 16 {
			return nil, usagef("--webhook-secret must be at least 16 characters")
		}
		opts = append(opts, ezlocal.WithWebhookSecrets(ezlocal.DefaultCustomerID, c.secret, ""))
	}
	return opts, nil
}

// parseDurations parses "1s,2s,4s" ("none" or "" for no durations).
func parseDurations(s string) ([]time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	var out []time.Duration
	for _, p := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%q is not a non-negative duration", p)
		}
		out = append(out, d)
	}
	return out, nil
}

func (a *app) printDevBanner(e *ezlocal.Engine, c devConfig) {
	w := a.stdout
	var names []string
	for _, r := range e.Regions() {
		n := r.Name
		if r.Down {
			n += " (down)"
		}
		if r.Latency > 0 {
			n += fmt.Sprintf(" (+%v)", r.Latency)
		}
		names = append(names, n)
	}
	signing := "off (deliveries are unsigned; pass --webhook-secret to sign Cloud-dialect deliveries)"
	if c.secret != "" {
		signing = "on for Cloud-dialect jobs (X-EZThrottle-Signature, HMAC-SHA256 with your --webhook-secret);\n" +
			"                  self-hosted jobs (POST /jobs) are delivered unsigned, as real self-hosted engines do"
	}
	fmt.Fprintf(w, "EZThrottle local engine listening on %s\n\n", e.URL())
	fmt.Fprintf(w, "  dashboard      %s/ (jobs, attempts, webhook deliveries, pace; live)\n", e.URL())
	fmt.Fprintf(w, "  regions        %s\n", strings.Join(names, ", "))
	fmt.Fprintf(w, "  pace           %g req/s, %d in flight per destination host (steered by X-EZTHROTTLE-RPS / X-EZTHROTTLE-MAX-CONCURRENT)\n", c.rps, c.maxConcurrent)
	fmt.Fprintf(w, "  webhook signing %s\n", signing)
	kept := "every job until stopped (--max-finished-jobs 0)"
	if c.maxFinished > 0 {
		kept = fmt.Sprintf("the last %d settled jobs, plus those running (--max-finished-jobs)", c.maxFinished)
	}
	fmt.Fprintf(w, "  job history    %s\n", kept)
	fmt.Fprintf(w, "  development API key: %s (accepted by this local engine only; not a secret)\n\n", e.APIKey())
	fmt.Fprintf(w, "Use it from the SDK, the examples and 'ezthrottle submit':\n\n")
	fmt.Fprintf(w, "  export EZTHROTTLE_API_KEY=%s\n", e.APIKey())
	fmt.Fprintf(w, "  export EZTHROTTLE_PROXY_URL=%s\n", e.URL())
	fmt.Fprintf(w, "  export EZTHROTTLE_URL=%s\n\n", e.URL())
	fmt.Fprintf(w, "Self-hosted dialect: POST %s/jobs (any user_id), health at %s/health\n", e.URL(), e.URL())
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
}
