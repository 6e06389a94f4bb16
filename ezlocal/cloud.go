package ezlocal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// routes builds the engine's handler.
func (e *Engine) routes() http.Handler {
	mux := http.NewServeMux()
	// Cloud dialect: the metering proxy, and the engine targets behind it
	// (also reachable directly with the same Bearer key, for convenience).
	mux.HandleFunc("POST /api/v1/proxy", e.handleProxy)
	mux.HandleFunc("/api/v1/jobs", e.handleDirect("/api/v1/jobs"))
	mux.HandleFunc("/api/v1/webhook-secrets", e.handleDirect("/api/v1/webhook-secrets"))
	// Self-hosted dialect.
	mux.HandleFunc("POST /jobs", e.handleSelfSubmit)
	mux.HandleFunc("GET /jobs/{id}", e.handleSelfStatus)
	mux.HandleFunc("GET /jobs/{id}/stream", e.handleStream)
	mux.HandleFunc("GET /health", e.handleHealth)
	e.dashboardRoutes(mux)  // GET / and /ui/ (dashboard.go)
	return e.guardHost(mux) // DNS rebinding (hostguard.go)
}

// proxyEnvelope is the body of POST /api/v1/proxy (protocol §1.1).
type proxyEnvelope struct {
	Scope      string            `json:"scope"`
	MetricName string            `json:"metric_name"`
	TargetURL  string            `json:"target_url"`
	Method     string            `json:"method"`
	Headers    map[string]string `json:"headers"`
	Body       *string           `json:"body"`
}

// engineReply is an engine answer before it is written or wrapped.
type engineReply struct {
	status int
	body   any
}

func errReply(status int, msg string) engineReply {
	return engineReply{status, map[string]any{"error": msg}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshalJSON(v)
	if err != nil {
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

var unauthorized = map[string]any{"error": "Unauthorized", "message": "Invalid API key"}

// readLimited reads r's body up to limit bytes; tooBig reports a larger body.
func readLimited(w http.ResponseWriter, r *http.Request, limit int64) (b []byte, tooBig bool, err error) {
	b, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, true, err
	}
	return b, false, err
}

// handleProxy is the Cloud metering proxy: POST /api/v1/proxy.
func (e *Engine) handleProxy(w http.ResponseWriter, r *http.Request) {
	if status := e.nextFault(); status != 0 {
		msg := http.StatusText(status)
		if status == http.StatusBadGateway {
			msg = "Proxy Error"
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, msg)
		return
	}
	customer, ok := e.customerForKey(bearer(r))
	if !ok {
		writeJSON(w, http.StatusUnauthorized, unauthorized)
		return
	}
	raw, tooBig, err := readLimited(w, r, e.cfg.maxEnvelope)
	if tooBig {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{
			"error": "Payload Too Large", "message": fmt.Sprintf("envelope larger than %d bytes", e.cfg.maxEnvelope)})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "Bad Request", "message": "reading the body: " + err.Error()})
		return
	}
	env, err := decodeEnvelope(raw)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "Bad Request", "message": err.Error()})
		return
	}
	if denied, retry := e.planCheck(customer); denied {
		body := map[string]any{"status": "denied", "error": "Plan limit exceeded", "breach_status": map[string]any{}}
		if retry >= 0 {
			body["retry_after"] = retry
		}
		writeJSON(w, http.StatusTooManyRequests, body)
		return
	}
	u, _ := url.Parse(env.TargetURL) // checked by decodeEnvelope
	body := ""
	if env.Body != nil {
		body = *env.Body
	}
	rep := e.engineCall(customer, strings.ToUpper(env.Method), u.Path, []byte(body))
	inner, err := marshalJSON(rep.body)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "Internal Server Error"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status":        "allowed",
		"breach_status": map[string]any{},
		"forwarded_response": map[string]any{
			"status_code": rep.status,
			"headers":     map[string]string{"content-type": "application/json"},
			"body":        string(inner),
		},
	})
}

// nextFault pops the status of the next injected proxy failure (0: none).
func (e *Engine) nextFault() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.faults) == 0 {
		return 0
	}
	s := e.faults[0]
	e.faults = e.faults[1:]
	return s
}

// decodeEnvelope parses and checks a proxy envelope.
func decodeEnvelope(raw []byte) (*proxyEnvelope, error) {
	var env proxyEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("invalid JSON envelope: %v", err)
	}
	if env.TargetURL == "" {
		return nil, errors.New("missing target_url")
	}
	u, err := url.Parse(env.TargetURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("target_url %q is not an absolute http(s) URL", redact.URL(env.TargetURL))
	}
	if env.Method == "" {
		return nil, errors.New("missing method")
	}
	if ezclient.ValidateMethod("method", env.Method) != nil {
		return nil, fmt.Errorf("unknown method %q", env.Method)
	}
	return &env, nil
}

// planCheck counts a proxy call against the customer's plan; it returns
// whether the call is denied and the retry_after seconds (-1 for none).
func (e *Engine) planCheck(customer string) (bool, int64) {
	if e.cfg.planLimit == 0 {
		return false, 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.planLimit > 0 && e.planUsed[customer] < e.cfg.planLimit {
		e.planUsed[customer]++
		return false, 0
	}
	if e.cfg.planRetryAfter <= 0 {
		return true, -1
	}
	return true, int64(math.Ceil(e.cfg.planRetryAfter.Seconds()))
}

// handleDirect serves a Cloud engine path without the proxy, with the same
// Bearer-key check, answering the engine's reply unwrapped.
func (e *Engine) handleDirect(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		customer, ok := e.customerForKey(bearer(r))
		if !ok {
			writeJSON(w, http.StatusUnauthorized, unauthorized)
			return
		}
		raw, tooBig, err := readLimited(w, r, e.cfg.maxEnvelope)
		if tooBig {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "request body too large", "limit_bytes": e.cfg.maxEnvelope})
			return
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "reading the body: " + err.Error()})
			return
		}
		rep := e.engineCall(customer, r.Method, path, raw)
		writeJSON(w, rep.status, rep.body)
	}
}

// engineCall serves one Cloud engine call for customer.
func (e *Engine) engineCall(customer, method, path string, body []byte) engineReply {
	switch strings.TrimRight(path, "/") {
	case "/api/v1/jobs":
		if method != http.MethodPost {
			return errReply(http.StatusMethodNotAllowed, "method not allowed: use POST")
		}
		return e.cloudSubmit(customer, body)
	case "/api/v1/webhook-secrets":
		return e.secretsCall(customer, method, body)
	}
	return errReply(http.StatusNotFound, fmt.Sprintf("not found: %s", path))
}

// HashKey is the idempotent key the engine derives for a Cloud job sent
// without one (the HASH strategy): ezclient.HashKey scoped by the customer
// ID, i.e. the lower-case hex SHA-256 of
// customer "\n" METHOD "\n" url "\n" body. Two customers never share a key.
func HashKey(customerID, method, url, body string) string {
	return ezclient.HashKey(customerID, method, url, []byte(body))
}

// cloudSubmit handles POST /api/v1/jobs.
func (e *Engine) cloudSubmit(customer string, body []byte) engineReply {
	var spec ezclient.Job
	// UnmarshalJSON directly, not json.Unmarshal: json.Unmarshal would scan
	// the whole body before the decoder can stop at the depth limit.
	if err := spec.UnmarshalJSON(body); err != nil {
		return errReply(http.StatusBadRequest, "invalid job JSON: "+err.Error())
	}
	if err := spec.Validate(); err != nil {
		return validationReply(err)
	}
	if err := e.checkRegions(&spec, ""); err != nil {
		return validationReply(err)
	}
	key := spec.IdempotentKey
	if key == "" {
		key = HashKey(customer, spec.Method, spec.URL, spec.Body)
		spec.IdempotentKey = key
	}
	sr, err := e.submit(ezclient.DialectCloud, customer, key, &spec, "", "")
	if err != nil {
		return errReply(http.StatusServiceUnavailable, err.Error())
	}
	status := http.StatusCreated
	if sr.duplicate {
		status = http.StatusOK
	}
	return engineReply{status, map[string]any{
		"job_id":         sr.job.id,
		"status":         sr.job.initial,
		"idempotent_key": sr.job.key,
		"queued_at":      sr.job.createdAt.UnixMilli(),
	}}
}

func validationReply(err error) engineReply {
	body := map[string]any{"error": err.Error()}
	var ve *ezclient.ValidationError
	if errors.As(err, &ve) {
		body["field"] = ve.Field
	}
	return engineReply{http.StatusBadRequest, body}
}

// checkRegions rejects region codes the engine does not simulate, at every
// depth, naming the field.
func (e *Engine) checkRegions(j *ezclient.Job, prefix string) error {
	if j == nil {
		return nil
	}
	field := func(name string) string {
		if prefix == "" {
			return name
		}
		return prefix + "." + name
	}
	bad := func(f string, r ezclient.Region) error {
		return &ezclient.ValidationError{Field: f, Reason: fmt.Sprintf("unknown region %q (this engine has %s)", r, strings.Join(e.knownRegions(), ", "))}
	}
	for _, r := range j.Regions {
		if _, ok := e.regions[string(r)]; !ok {
			return bad(field("regions"), r)
		}
	}
	for i, w := range j.Webhooks {
		for _, r := range w.Regions {
			if _, ok := e.regions[string(r)]; !ok {
				return bad(fmt.Sprintf("%s[%d].regions", field("webhooks"), i), r)
			}
		}
	}
	if j.Fallback != nil {
		if err := e.checkRegions(j.Fallback.Job, field("fallback_job")); err != nil {
			return err
		}
	}
	if err := e.checkRegions(j.OnSuccess, field("on_success")); err != nil {
		return err
	}
	return e.checkRegions(j.OnFailure, field("on_failure"))
}

// secretsCall handles /api/v1/webhook-secrets (protocol §1.4).
func (e *Engine) secretsCall(customer, method string, body []byte) engineReply {
	switch method {
	case http.MethodPost, http.MethodPut:
		var req struct {
			Primary   string  `json:"primary_secret"`
			Secondary *string `json:"secondary_secret"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return errReply(http.StatusBadRequest, "invalid JSON: "+err.Error())
		}
		sec := ""
		if req.Secondary != nil {
			sec = *req.Secondary
		}
		if req.Primary == "" {
			return errReply(http.StatusBadRequest, "primary_secret is required")
		}
		if err := checkSecrets(req.Primary, sec); err != nil {
			return errReply(http.StatusBadRequest, "webhook secrets must be at least 16 characters")
		}
		e.mu.Lock()
		e.secrets[customer] = secretPair{req.Primary, sec}
		e.mu.Unlock()
		return engineReply{http.StatusOK, map[string]any{"status": "ok", "message": "Webhook secrets saved"}}
	case http.MethodGet:
		s, ok := e.secretFor(customer)
		if !ok {
			return errReply(http.StatusNotFound, "No webhook secrets configured")
		}
		var secondary any
		if s.secondary != "" {
			secondary = mask(s.secondary)
		}
		return engineReply{http.StatusOK, map[string]any{
			"customer_id":      customer,
			"primary_secret":   mask(s.primary),
			"secondary_secret": secondary,
			"has_secondary":    s.secondary != "",
		}}
	case http.MethodDelete:
		e.mu.Lock()
		delete(e.secrets, customer)
		e.mu.Unlock()
		return engineReply{http.StatusOK, map[string]any{"status": "ok", "message": "Webhook secrets deleted"}}
	}
	return errReply(http.StatusMethodNotAllowed, "method not allowed: use POST, GET or DELETE")
}

// mask shows the first and last four characters of a secret.
func mask(s string) string {
	if len(s) <= 8 {
		return "****"
	}
	return s[:4] + "****" + s[len(s)-4:]
}
