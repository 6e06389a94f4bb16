package ezthrottle

import (
	"context"
	"maps"
	"net/http"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// JobOption customises the job a forwarded request becomes. Use them as
// Transport defaults (WithForwarding, WithClient, WithJobDefaults), per
// request (WithJobOptions) or with AutoForward. Options run after the job
// has been filled from the request, defaults first, so they may also edit
// its headers.
type JobOption func(*jobSpec)

type jobSpec struct {
	job      *ezclient.Job
	key      string
	keySet   bool
	strategy KeyStrategy
	edits    []func(*ezclient.Job) // JobEdit functions, run after the other options
}

// apply runs the option lists in order, then the JobEdit functions.
func (s *jobSpec) apply(lists ...[]JobOption) {
	for _, l := range lists {
		for _, o := range l {
			o(s)
		}
	}
	for _, fn := range s.edits {
		fn(s.job)
	}
}

// JobWebhooks adds webhooks that receive the job's result.
func JobWebhooks(ws ...ezclient.Webhook) JobOption {
	ws = append([]ezclient.Webhook(nil), ws...)
	return func(s *jobSpec) { s.job.Webhooks = append(s.job.Webhooks, ws...) }
}

// JobWebhook adds a webhook URL that receives the job's result.
func JobWebhook(url string) JobOption { return JobWebhooks(ezclient.Webhook{URL: url}) }

// JobWebhookQuorum sets how many voting webhooks must be delivered.
func JobWebhookQuorum(n int) JobOption { return func(s *jobSpec) { s.job.WebhookQuorum = n } }

// JobMetadata merges entries into the job's metadata (echoed in webhooks).
func JobMetadata(md map[string]any) JobOption {
	md = maps.Clone(md)
	return func(s *jobSpec) {
		if s.job.Metadata == nil {
			s.job.Metadata = make(map[string]any, len(md))
		}
		maps.Copy(s.job.Metadata, md)
	}
}

// JobMeta sets one metadata entry.
func JobMeta(key string, value any) JobOption { return JobMetadata(map[string]any{key: value}) }

// JobRegions sets the regions the job runs in.
func JobRegions(rs ...ezclient.Region) JobOption {
	rs = append([]ezclient.Region(nil), rs...)
	return func(s *jobSpec) { s.job.Regions = append([]ezclient.Region(nil), rs...) }
}

// JobRegionPolicy sets what happens when a region is down.
func JobRegionPolicy(p ezclient.RegionPolicy) JobOption {
	return func(s *jobSpec) { s.job.RegionPolicy = p }
}

// JobExecutionMode sets how a multi-region job runs (race or fanout).
func JobExecutionMode(m ezclient.ExecutionMode) JobOption {
	return func(s *jobSpec) { s.job.ExecutionMode = m }
}

// JobRetryPolicy sets the engine's retry policy.
func JobRetryPolicy(p ezclient.RetryPolicy) JobOption {
	return func(s *jobSpec) {
		cp := p
		cp.RetryCodes = append([]int(nil), p.RetryCodes...)
		cp.RerouteCodes = append([]int(nil), p.RerouteCodes...)
		s.job.RetryPolicy = &cp
	}
}

// JobFallback sets the job's fallback chain (deep-copied).
func JobFallback(trigger *ezclient.Trigger, fallback *ezclient.Job) JobOption {
	return func(s *jobSpec) {
		f := &ezclient.Fallback{Job: fallback.Clone()}
		if trigger != nil {
			t := *trigger
			t.Codes = append([]int(nil), trigger.Codes...)
			f.Trigger = &t
		}
		s.job.Fallback = f
	}
}

// JobOnSuccess sets the job spawned after success (deep-copied).
func JobOnSuccess(j *ezclient.Job) JobOption {
	return func(s *jobSpec) { s.job.OnSuccess = j.Clone() }
}

// JobOnFailure sets the job spawned after failure (deep-copied).
func JobOnFailure(j *ezclient.Job) JobOption {
	return func(s *jobSpec) { s.job.OnFailure = j.Clone() }
}

// JobRetryAt sets the earliest time the engine may execute the job.
func JobRetryAt(t time.Time) JobOption { return func(s *jobSpec) { s.job.RetryAt = t } }

// JobHeader sets a header on the job's request ("" value removes it).
func JobHeader(key, value string) JobOption {
	key = http.CanonicalHeaderKey(key)
	return func(s *jobSpec) {
		for k := range s.job.Headers {
			if http.CanonicalHeaderKey(k) == key {
				delete(s.job.Headers, k)
			}
		}
		if value == "" {
			return
		}
		if s.job.Headers == nil {
			s.job.Headers = map[string]string{}
		}
		s.job.Headers[key] = value
	}
}

// JobIdempotentKey sets the job's idempotent key (a custom key). A request's
// own Idempotency-Key header still wins.
func JobIdempotentKey(key string) JobOption {
	return func(s *jobSpec) { s.key, s.keySet = key, true }
}

// JobKeyStrategy sets the key strategy for the request (see KeyStrategy).
func JobKeyStrategy(ks KeyStrategy) JobOption {
	return func(s *jobSpec) { s.strategy = ks }
}

// JobEdit runs fn on the job after every other option (Transport defaults
// and per-request options alike; several JobEdit functions run in order),
// for fields without a dedicated option. A key fn sets in
// Job.IdempotentKey is kept (see KeyStrategy for the precedence).
func JobEdit(fn func(*ezclient.Job)) JobOption {
	return func(s *jobSpec) {
		if fn != nil {
			s.edits = append(s.edits, fn)
		}
	}
}

type jobOptsKey struct{}

// WithJobOptions returns a context whose requests, if forwarded, get these
// job options after the Transport's defaults. Calls accumulate.
func WithJobOptions(ctx context.Context, opts ...JobOption) context.Context {
	prev := JobOptionsFrom(ctx)
	all := make([]JobOption, 0, len(prev)+len(opts))
	all = append(append(all, prev...), opts...)
	return context.WithValue(ctx, jobOptsKey{}, all)
}

// JobOptionsFrom returns the job options carried by ctx.
func JobOptionsFrom(ctx context.Context) []JobOption {
	o, _ := ctx.Value(jobOptsKey{}).([]JobOption)
	return o
}
