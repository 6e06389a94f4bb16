package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// waitPoll is how often submit --wait reads a local engine's job.
const waitPoll = 200 * time.Millisecond

// followJob shows a submitted job's progress on stderr until it has
// settled (submit --wait): a self-hosted engine's event stream, or the
// event history of a local engine ('ezthrottle dev', read from its
// dashboard API). It returns an error when the job failed. EZThrottle Cloud
// has neither: it reports results to webhooks only.
func (a *app) followJob(ctx context.Context, client *ezclient.Client, hc *http.Client, sub *ezclient.Submission) error {
	if client.Dialect() == ezclient.DialectSelfHosted {
		return a.followStream(ctx, client, sub.JobID)
	}
	return a.followLocal(ctx, hc, client.EngineURL(), sub.JobID)
}

// followStream prints a self-hosted job's stream events.
func (a *app) followStream(ctx context.Context, client *ezclient.Client, id string) error {
	fmt.Fprintf(a.stderr, "Following job %s (self-hosted event stream)...\n", id)
	start := time.Now()
	for ev, err := range client.StreamJob(ctx, id) {
		if err != nil {
			return fmt.Errorf("following job %s: %w", id, err)
		}
		var detail []string
		switch ev.Type {
		case ezclient.EventPosition:
			detail = append(detail, fmt.Sprintf("position %d", ev.Position))
		case ezclient.EventCompleted, ezclient.EventFailed:
			if ev.ResponseStatus != 0 {
				detail = append(detail, fmt.Sprintf("status %d", ev.ResponseStatus))
			}
			if ev.Reason != "" {
				detail = append(detail, ev.Reason)
			}
			if ev.FromStatus {
				detail = append(detail, "(from the job's status)")
			}
		}
		a.progress(time.Since(start), string(ev.Type), "", detail)
		if ev.Terminal() {
			if ev.Type == ezclient.EventFailed {
				return fmt.Errorf("job %s failed: %s", id, printable(orDefault(ev.Reason, "no reason given")))
			}
			return nil
		}
	}
	return fmt.Errorf("following job %s: the stream ended without a result", id)
}

// localJob is the part of a local engine's job (GET /ui/api/jobs/{id})
// that --wait shows.
type localJob struct {
	Status  string `json:"status"`
	Settled bool   `json:"settled"`
	Reason  string `json:"reason"`
	Events  []struct {
		Type       string    `json:"type"`
		Time       time.Time `json:"time"`
		Region     string    `json:"region"`
		FromRegion string    `json:"from_region"`
		Attempt    int       `json:"attempt"`
		Status     int       `json:"status"`
		URL        string    `json:"url"`
		JobID      string    `json:"job_id"`
		DelayMS    int64     `json:"delay_ms"`
		Detail     string    `json:"detail"`
		Signed     bool      `json:"signed"`
	} `json:"events"`
	Result *struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	} `json:"result"`
}

// followLocal polls a local engine's job and prints each new event.
func (a *app) followLocal(ctx context.Context, hc *http.Client, engine, id string) error {
	base := strings.TrimRight(engine, "/")
	api := base + "/ui/api/jobs/" + url.PathEscape(id)
	fmt.Fprintf(a.stderr, "Following job %s (dashboard: %s/ui/jobs/%s)...\n", id, base, url.PathEscape(id))
	seen := 0
	var t0 time.Time
	for {
		j, err := getLocalJob(ctx, hc, api)
		if err != nil {
			return err
		}
		for _, ev := range j.Events[seen:] {
			if t0.IsZero() {
				t0 = ev.Time
			}
			var d []string
			if ev.FromRegion != "" {
				d = append(d, "from "+ev.FromRegion)
			}
			if ev.Attempt != 0 {
				d = append(d, fmt.Sprintf("attempt %d", ev.Attempt))
			}
			if ev.Status != 0 {
				d = append(d, fmt.Sprintf("status %d", ev.Status))
			}
			if ev.URL != "" {
				d = append(d, ev.URL)
			}
			if ev.JobID != "" {
				d = append(d, "job "+ev.JobID)
			}
			if ev.DelayMS != 0 {
				d = append(d, "after "+(time.Duration(ev.DelayMS)*time.Millisecond).String())
			}
			if ev.Signed {
				d = append(d, "signed")
			}
			if ev.Detail != "" {
				d = append(d, ev.Detail)
			}
			a.progress(ev.Time.Sub(t0), ev.Type, ev.Region, d)
		}
		seen = len(j.Events)
		if j.Settled {
			switch j.Status {
			case string(ezclient.StatusCompleted):
				fmt.Fprintf(a.stderr, "Job %s completed.\n", id)
				return nil
			case string(ezclient.StatusFailed):
				return fmt.Errorf("job %s failed: %s", id, printable(orDefault(j.Reason, "no reason given")))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("following job %s: %w (the job goes on; see the dashboard)", id, ctx.Err())
		case <-time.After(waitPoll):
		}
	}
}

// probeLocal checks that the Cloud-dialect engine is a local engine whose
// jobs can be followed (its dashboard API answers).
func probeLocal(ctx context.Context, hc *http.Client, engine string) error {
	api := strings.TrimRight(engine, "/") + "/ui/api/overview"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w (GET %s: %v); nothing was submitted", errNoProgress, api, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return fmt.Errorf("%w (GET %s answered %s); nothing was submitted", errNoProgress, api, resp.Status)
	}
	return nil
}

// errNoProgress: the engine has no job progress to read.
var errNoProgress = errors.New("--wait follows jobs on a local engine ('ezthrottle dev') or a self-hosted engine (--self-hosted); " +
	"EZThrottle Cloud reports results to your webhooks only (use 'ezthrottle listen')")

func getLocalJob(ctx context.Context, hc *http.Client, api string) (*localJob, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("following the job: %w (the job goes on)", ctx.Err())
		}
		return nil, fmt.Errorf("following the job: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("following the job: %w", err)
	}
	var j localJob
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		json.Unmarshal(body, &j) != nil {
		return nil, fmt.Errorf("%w (GET %s answered %s)", errNoProgress, api, resp.Status)
	}
	return &j, nil
}

// progress prints one event line: elapsed time, type, region, details.
func (a *app) progress(at time.Duration, typ, region string, detail []string) {
	line := fmt.Sprintf("  %+8.2fs  %-18s %-4s %s", at.Seconds(), printable(typ), printable(region), printable(strings.Join(detail, " · ")))
	fmt.Fprintln(a.stderr, strings.TrimRight(line, " "))
}

// printable replaces control characters (a hostile URL or reply must not
// drive the terminal) and bounds the length.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "") + "…"
	}
	return s
}
