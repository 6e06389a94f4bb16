package redact

import (
	"context"
	"fmt"
	"log/slog"
)

type ctxKey struct{}

// ContextWithSecrets returns ctx carrying s (merged with the secrets ctx
// already carries): every Handler scrubs them from the records logged with
// the returned context.
func ContextWithSecrets(ctx context.Context, s *Secrets) context.Context {
	if s.Len() == 0 {
		return ctx
	}
	if prev := SecretsFrom(ctx); prev != nil {
		m := &Secrets{mask: s.mask}
		m.Merge(prev)
		m.Merge(s)
		s = m
	}
	return context.WithValue(ctx, ctxKey{}, s)
}

// SecretsFrom returns the secrets ctx carries (nil for none).
func SecretsFrom(ctx context.Context) *Secrets {
	if ctx == nil {
		return nil
	}
	s, _ := ctx.Value(ctxKey{}).(*Secrets)
	return s
}

// Handler scrubs every record before passing it on: the message and every
// attribute value (strings, errors, Stringers, LogValuers and anything fmt
// prints, inside groups too), with Text, the handler's own secrets and the
// secrets of the record's context. An attribute whose key is a sensitive
// header or parameter name (authorization, api_key, ...) is masked whole.
type Handler struct {
	next    slog.Handler
	secrets *Secrets
}

// NewHandler wraps next. secrets may be nil.
func NewHandler(next slog.Handler, secrets *Secrets) *Handler {
	if h, ok := next.(*Handler); ok {
		// Already wrapped: keep one layer, with both sets.
		m := &Secrets{}
		m.Merge(h.secrets)
		m.Merge(secrets)
		return &Handler{next: h.next, secrets: m}
	}
	return &Handler{next: next, secrets: secrets}
}

// Logger returns l with its handler wrapped by NewHandler (a discarding
// logger for nil).
func Logger(l *slog.Logger, secrets *Secrets) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	if l.Handler() == slog.DiscardHandler {
		return l
	}
	return slog.New(NewHandler(l.Handler(), secrets))
}

// Enabled reports whether the wrapped handler handles level.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle scrubs r and passes it on.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	s := h.secrets
	if cs := SecretsFrom(ctx); cs != nil {
		m := &Secrets{}
		m.Merge(h.secrets)
		m.Merge(cs)
		s = m
	}
	nr := slog.NewRecord(r.Time, r.Level, s.Scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(scrubAttr(a, s))
		return true
	})
	return h.next.Handle(ctx, nr)
}

// WithAttrs scrubs attrs (with the handler's own secrets) and passes them on.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = scrubAttr(a, h.secrets)
	}
	return &Handler{next: h.next.WithAttrs(out), secrets: h.secrets}
}

// WithGroup passes the group on.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), secrets: h.secrets}
}

// Attr scrubs one attribute (see Handler).
func Attr(a slog.Attr, s *Secrets) slog.Attr { return scrubAttr(a, s) }

func scrubAttr(a slog.Attr, s *Secrets) slog.Attr {
	v := a.Value.Resolve()
	if v.Kind() != slog.KindGroup && (SensitiveHeader(a.Key) || SensitiveParam(a.Key)) && !isMask(v.String()) && v.String() != "" {
		return slog.String(a.Key, Mask)
	}
	switch v.Kind() {
	case slog.KindString:
		if t := s.Scrub(v.String()); t != v.String() {
			return slog.String(a.Key, t)
		}
		return slog.Attr{Key: a.Key, Value: v}
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, x := range g {
			out[i] = scrubAttr(x, s)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		var text string
		switch x := v.Any().(type) {
		case error:
			text = x.Error()
		case fmt.Stringer:
			text = x.String()
		default:
			text = fmt.Sprintf("%+v", x)
		}
		if t := s.Scrub(text); t != text {
			return slog.String(a.Key, t)
		}
		if _, ok := v.Any().(error); ok {
			// Rendered as its message anyway; keeping the value would let
			// a handler that walks the error's fields see them.
			return slog.String(a.Key, text)
		}
		return slog.Attr{Key: a.Key, Value: v}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
