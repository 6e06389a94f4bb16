package ezthrottle

import (
	"context"
	"errors"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// DialectReporter is an optional interface of a Submitter: the dialect of
// the engine it submits to, which decides what a job may carry (a
// self-hosted engine takes no metadata, so the trace context then goes into
// the job's headers only). *ezclient.Client implements it, and so do the
// Submitters made by DecorateSubmitter and SubmitterFunc.WithDialect.
type DialectReporter interface {
	Dialect() ezclient.Dialect
}

// SubmitterUnwrapper is an optional interface of a Submitter that decorates
// another one: Unwrap returns the Submitter it wraps, where SubmitterDialect
// looks for the dialect when the decorator does not report one itself.
type SubmitterUnwrapper interface {
	Unwrap() Submitter
}

// maxUnwrap bounds the chain of decorators SubmitterDialect follows (and
// ends a cycle).
const maxUnwrap = 64

// SubmitterDialect returns the dialect of the engine s submits to: the
// first of s and the Submitters it wraps (SubmitterUnwrapper) that reports
// one (DialectReporter); ezclient.DialectCloud when none does. The
// Transport and AutoForward use it to decide where a job's trace context
// goes, so a decorator should report its dialect or unwrap to the client it
// decorates: DecorateSubmitter does both.
func SubmitterDialect(s Submitter) ezclient.Dialect {
	for i := 0; s != nil && i < maxUnwrap; i++ {
		if d, ok := s.(DialectReporter); ok {
			return d.Dialect()
		}
		u, ok := s.(SubmitterUnwrapper)
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	return ezclient.DialectCloud
}

// DecorateSubmitter returns a Submitter that submits through fn, which
// receives next to call (or not). It reports next's dialect and unwraps to
// next, so the Transport and AutoForward shape the jobs for the engine
// behind the decoration. Use it, rather than a bare SubmitterFunc, to
// decorate an *ezclient.Client (logging, metrics, rewriting jobs):
//
//	s := ezthrottle.DecorateSubmitter(client, func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
//		sub, err := next.Submit(ctx, job)
//		log.Printf("forwarded %s %s: %v", job.Method, job.URL, err)
//		return sub, err
//	})
func DecorateSubmitter(next Submitter, fn func(ctx context.Context, job *ezclient.Job, next Submitter) (*ezclient.Submission, error)) Submitter {
	return &decorated{next: next, fn: fn}
}

type decorated struct {
	next Submitter
	fn   func(context.Context, *ezclient.Job, Submitter) (*ezclient.Submission, error)
}

func (d *decorated) Submit(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
	return d.fn(ctx, job, d.next)
}

func (d *decorated) Unwrap() Submitter { return d.next }

func (d *decorated) Dialect() ezclient.Dialect { return SubmitterDialect(d.next) }

// WithDialect returns f as a Submitter that reports dialect d (see
// SubmitterDialect): for a function that submits to a self-hosted engine,
// WithDialect(ezclient.DialectSelfHosted) keeps the trace context out of
// the job's metadata.
func (f SubmitterFunc) WithDialect(d ezclient.Dialect) Submitter {
	return dialectFunc{f: f, d: d}
}

type dialectFunc struct {
	f SubmitterFunc
	d ezclient.Dialect
}

func (s dialectFunc) Submit(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
	return s.f(ctx, job)
}

func (s dialectFunc) Dialect() ezclient.Dialect { return s.d }

// submitJob submits job to s. injected names the metadata entries the
// Transport added (the trace context) for a Submitter whose dialect it
// could not tell: when s refuses metadata as unsupported (a self-hosted
// client behind a decorator that neither reports its dialect nor unwraps;
// a *ValidationError means nothing was sent) and those entries are all the
// metadata the job has, it is submitted once more without them. The trace
// context stays in the job's headers.
func submitJob(ctx context.Context, s Submitter, job *ezclient.Job, injected []string) (*ezclient.Submission, error) {
	sub, err := s.Submit(ctx, job)
	if err == nil || len(injected) == 0 || len(job.Metadata) != len(injected) {
		return sub, err
	}
	var ve *ezclient.ValidationError
	if !errors.As(err, &ve) || !ve.Unsupported || ve.Field != "metadata" {
		return sub, err
	}
	for _, k := range injected {
		if _, ok := job.Metadata[k]; !ok {
			return sub, err // not only ours: the job's own metadata is refused
		}
	}
	job.Metadata = nil
	return s.Submit(ctx, job)
}
