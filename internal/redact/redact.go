// Package redact is the one redaction mechanism of the library: every sink
// (log records, error strings, span attributes and events, the local
// engine's logs, the CLI's output) goes through it.
//
// It works at two levels:
//   - Text scrubs by pattern, knowing no value: URL user info (also
//     percent-encoded and JSON-escaped URLs), the values of sensitive query
//     parameters (names matched case-insensitively, raw or percent-encoded;
//     values in any encoding), the values of sensitive header-like pairs
//     ("Authorization: ...", "\"Cookie\":\"...\"", "X-Api-Key=..."), and the
//     credentials after an auth scheme ("Bearer ...", "Basic ...").
//   - Secrets scrubs known values (an API key, a job's header values, a
//     webhook secret) in every form they travel in: as is, percent-encoded
//     (query and path escaping, upper and lower case hex), JSON-escaped.
//
// Handler wraps a slog.Handler so that every record (message, attributes at
// any depth, groups, WithAttrs) is scrubbed at every level, with the secrets
// a context carries (ContextWithSecrets) and those given to the handler.
package redact

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
)

// Mask replaces what Text finds.
const Mask = "REDACTED"

// MinSecretLen is the shortest known value scrubbed: shorter ones would
// match ordinary text.
const MinSecretLen = 6

// headerWords mark a header (or JSON key) whose value is a credential.
var headerWords = []string{"authorization", "cookie", "api-key", "api_key", "apikey", "x-api", "token", "secret",
	"password", "passwd", "credential", "signature", "session", "x-auth", "auth-", "auth_", "private"}

// paramWords mark a query (or form) parameter whose value is a credential.
var paramWords = []string{"key", "token", "secret", "passw", "pwd", "signature", "credential", "auth", "session", "private"}

// paramExact are short parameter names that are credentials only as a whole.
var paramExact = []string{"sig", "pass", "jwt", "otp"}

// SensitiveHeader reports whether a header (or JSON key) named name carries a
// credential: Authorization, Proxy-Authorization, Cookie, Set-Cookie,
// X-Api-Key, X-Auth-Token, X-Client-Secret, X-Ezthrottle-Signature, ...
func SensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	if strings.Contains(n, "idempot") {
		return false // idempotency keys identify, they do not authenticate
	}
	if n == "auth" {
		return true
	}
	for _, w := range headerWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// SensitiveParam reports whether a query parameter named name (already
// decoded) carries a credential: api_key, token, access_token, sig,
// X-Amz-Signature, password, client_secret, ...
func SensitiveParam(name string) bool {
	n := strings.ToLower(name)
	if strings.Contains(n, "idempot") {
		return false
	}
	if slices.Contains(paramExact, n) {
		return true
	}
	for _, w := range paramWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Text scrubs s by pattern (see the package documentation). It returns s
// itself when there is nothing to scrub.
func Text(s string) string {
	if !maybeSensitive(s) {
		return s
	}
	s = userInfo(s)
	s = pairs(s)
	s = schemes(s)
	return s
}

// maybeSensitive is a cheap filter: every pattern needs '@', '=', ':' or an
// auth scheme.
func maybeSensitive(s string) bool {
	return strings.ContainsAny(s, "@=:%") || containsFold(s, "bearer") || containsFold(s, "basic")
}

func containsFold(s, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if strings.EqualFold(s[i:i+n], sub) {
			return true
		}
	}
	return false
}

// schemeSeps introduce a URL's authority: plain, JSON-escaped and
// percent-encoded (the latter two case-insensitively for the hex).
var schemeSeps = []string{"://", `:\/\/`, "%3a%2f%2f"}

// userInfo replaces the user info of every URL in s.
func userInfo(s string) string {
	lower := asciiLower(s)
	if !strings.Contains(s, "@") && !strings.Contains(lower, "%40") {
		return s
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		sep := ""
		for _, x := range schemeSeps {
			if strings.HasPrefix(lower[i:], x) {
				sep = x
				break
			}
		}
		if sep == "" {
			continue
		}
		start := i + len(sep)
		encoded := sep == "%3a%2f%2f"
		// The authority ends at the path, query, fragment or anything that
		// cannot be in a URL.
		end := start
		at := -1
		for end < len(s) {
			c := s[end]
			if c == '/' || c == '?' || c == '#' || c <= ' ' || c == '"' || c == '\'' || c == '<' || c == '>' || c == '\\' || c == 0x7f {
				break
			}
			if encoded && (c == '&' || strings.HasPrefix(lower[end:], "%2f") || strings.HasPrefix(lower[end:], "%3f") || strings.HasPrefix(lower[end:], "%23")) {
				break
			}
			if c == '@' || strings.HasPrefix(lower[end:], "%40") {
				at = end
			}
			end++
		}
		if at < 0 || s[start:at] == Mask || s[start:at] == Mask+":"+Mask {
			i = end - 1
			continue
		}
		b.WriteString(s[last:start])
		b.WriteString(Mask)
		last = at
		i = end - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '%' || c == '[' || c == ']'
}

// valueEnd returns where an unquoted value starting at i ends.
func valueEnd(s string, i int, header bool) int {
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '\n', '\r', '"', '\'', '<', '>', '\\', '}', ']', ')':
			return i
		case '&', '#':
			if !header {
				return i
			}
		case ' ', '\t', ',', ';':
			if !header {
				return i
			}
		}
	}
	return i
}

// quotedEnd returns the index of the quote closing a value that starts at
// i (just after the opening quote q), honouring backslash escapes.
func quotedEnd(s string, i int, q byte) int {
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case q:
			return i
		case '\n', '\r':
			return i
		}
	}
	return len(s)
}

// pairs scrubs name=value and name: value pairs whose name is sensitive.
func pairs(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '=' && c != ':' {
			continue
		}
		// The name before the separator, possibly quoted ("name": or
		// \"name\":) and followed by spaces.
		j := i
		for j > 0 && (s[j-1] == ' ' || s[j-1] == '\t') {
			j--
		}
		quoted := false
		if j > 0 && (s[j-1] == '"' || s[j-1] == '\'') {
			quoted = true
			j--
			if j > 0 && s[j-1] == '\\' {
				j--
			}
		}
		k := j
		for k > 0 && isNameByte(s[k-1]) {
			k--
		}
		if k == j {
			continue
		}
		name := s[k:j]
		if c == ':' && !quoted && j != i {
			continue // "name :" is prose, not a header
		}
		var sensitive bool
		header := c == ':' || quoted
		if quoted {
			sensitive = SensitiveHeader(name) || SensitiveParam(name)
		} else if header {
			// "Unauthorized: ..." is prose; "Authorization: ..." a header.
			sensitive = SensitiveHeader(name)
		} else {
			dn := name
			if strings.Contains(dn, "%") {
				if d, err := url.QueryUnescape(dn); err == nil {
					dn = d
				}
			}
			// A JSON-escaped separator before the name ("\u0026api_key").
			if len(dn) > 5 && (strings.HasPrefix(dn, "u0026") || strings.HasPrefix(dn, "u003f") || strings.HasPrefix(dn, "u003F")) {
				dn = dn[5:]
			}
			sensitive = SensitiveParam(dn) || SensitiveHeader(dn)
		}
		if !sensitive {
			continue
		}
		// The value.
		v := i + 1
		if c == ':' && strings.HasPrefix(s[v:], "//") {
			continue // a URL's scheme, not a header
		}
		for v < len(s) && (s[v] == ' ' || s[v] == '\t') {
			v++
		}
		var end int
		switch {
		case v+1 < len(s) && s[v] == '\\' && s[v+1] == '"':
			v += 2
			end = strings.Index(s[v:], `\"`)
			if end < 0 {
				end = len(s)
			} else {
				end += v
			}
		case v < len(s) && (s[v] == '"' || s[v] == '\''):
			v++
			end = quotedEnd(s, v, s[v-1])
		case v < len(s) && (s[v] == '{' || s[v] == '['):
			continue // a structure: its own pairs are checked
		default:
			end = valueEnd(s, v, header)
		}
		val := s[v:end]
		if val == "" || isMask(val) {
			if end > i {
				i = end - 1
			}
			continue
		}
		b.WriteString(s[last:v])
		b.WriteString(Mask)
		last = end
		if end > i {
			i = end - 1
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// isMask reports whether v is already redacted ("REDACTED", "****",
// "Bearer ****").
func isMask(v string) bool {
	if _, rest, ok := strings.Cut(v, " "); ok && authScheme(v[:strings.IndexByte(v, ' ')]) {
		v = rest
	}
	// Placeholders of usage messages ("want key=value") are no secrets.
	return v == Mask || strings.Trim(v, "*") == "" || v == Mask+":"+Mask || strings.EqualFold(v, "value") || v == "..."
}

var authSchemes = []string{"bearer", "basic", "token", "digest", "apikey", "api-key", "hoba", "negotiate", "ntlm", "aws4-hmac-sha256"}

func authScheme(w string) bool {
	return slices.Contains(authSchemes, strings.ToLower(w))
}

// schemes scrubs the credentials after "Bearer " or "Basic " anywhere.
func schemes(s string) string {
	lower := asciiLower(s)
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		var n int
		switch {
		case strings.HasPrefix(lower[i:], "bearer"):
			n = 6
		case strings.HasPrefix(lower[i:], "basic"):
			n = 5
		default:
			continue
		}
		if i > 0 && isWordByte(s[i-1]) {
			continue
		}
		v := i + n
		if v >= len(s) || (s[v] != ' ' && s[v] != '\t' && s[v] != '+' && s[v] != '=' && !strings.HasPrefix(s[v:], "%20")) {
			continue
		}
		if strings.HasPrefix(s[v:], "%20") {
			v += 3
		} else {
			v++
		}
		for v < len(s) && s[v] == ' ' {
			v++
		}
		end := v
		for end < len(s) && isTokenByte(s[end]) {
			end++
		}
		if end == v || isMask(s[v:end]) || (n == 5 && !looksEncoded(s[v:end])) {
			continue
		}
		b.WriteString(s[last:v])
		b.WriteString(Mask)
		last = end
		i = end - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// looksEncoded tells a Basic credential (base64) from a word of prose.
func looksEncoded(t string) bool {
	return len(t) >= 8 && strings.ContainsAny(t, "0123456789+/=ABCDEFGHIJKLMNOPQRSTUVWXYZ")
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// isTokenByte: token68 (RFC 9110) plus '%' for encoded forms.
func isTokenByte(c byte) bool {
	return isWordByte(c) || strings.IndexByte("-._~+/=%", c) >= 0
}

// URL renders a URL for messages: user info replaced by the Mask, the values
// of sensitive query parameters by the Mask, no fragment. Text that does
// not parse is scrubbed by pattern.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return Text(raw)
	}
	return Text(URLOf(u))
}

// URLOf is URL for a parsed URL.
func URLOf(u *url.URL) string {
	if u == nil {
		return ""
	}
	cp := *u
	cp.Fragment, cp.RawFragment = "", ""
	if cp.User != nil {
		cp.User = url.User(Mask)
	}
	if cp.RawQuery != "" {
		parts := strings.Split(cp.RawQuery, "&")
		for i, p := range parts {
			name, _, has := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if has && SensitiveParam(name) {
				parts[i] = p[:strings.IndexByte(p, '=')+1] + Mask
			}
		}
		cp.RawQuery = strings.Join(parts, "&")
	}
	return cp.String()
}

// Secrets is a set of known secret values, kept in every form they travel
// in. The zero value is empty and ready to use; a nil *Secrets scrubs
// nothing but what Text finds.
//
// The values are held behind a closure, so that no dumper that walks
// fields by reflection (spew, %#v of an enclosing struct, a debugger's
// pretty-printer) can print them.
type Secrets struct {
	box  func() *[]string // the forms, longest first
	mask string
}

// list returns the forms held (nil for none).
func (s *Secrets) list() []string {
	if s == nil || s.box == nil {
		return nil
	}
	return *s.box()
}

// set replaces the forms held.
func (s *Secrets) set(vals []string) {
	if s.box == nil {
		p := new([]string)
		s.box = func() *[]string { return p }
	}
	slices.SortStableFunc(vals, func(a, b string) int { return len(b) - len(a) })
	*s.box() = vals
}

// GoString hides the values.
func (s *Secrets) GoString() string { return fmt.Sprintf("redact.Secrets{%d values}", s.Len()) }

// String hides the values.
func (s *Secrets) String() string { return s.GoString() }

// NewSecrets returns a set that replaces the values by mask (Mask when "").
func NewSecrets(mask string, vals ...string) *Secrets {
	s := &Secrets{mask: mask}
	s.Add(vals...)
	return s
}

// Len returns the number of forms held.
func (s *Secrets) Len() int { return len(s.list()) }

// Values returns the forms held, longest first.
func (s *Secrets) Values() []string { return slices.Clone(s.list()) }

// Add adds values (and the credential after an auth scheme, as in "Bearer
// <token>"), in each of their encoded forms. Values shorter than
// MinSecretLen are ignored.
func (s *Secrets) Add(vals ...string) {
	out := s.list()
	for _, v := range vals {
		v = strings.TrimSpace(v)
		out = addForms(out, v)
		if i := strings.LastIndexAny(v, " \t"); i >= 0 {
			out = addForms(out, strings.TrimSpace(v[i+1:]))
		}
		// Cookies: each value of "a=1; b=2".
		if strings.Contains(v, ";") || strings.Contains(v, "=") {
			for _, part := range strings.Split(v, ";") {
				if _, val, ok := strings.Cut(strings.TrimSpace(part), "="); ok {
					out = addForms(out, val)
				}
			}
		}
	}
	s.set(out)
}

func addForms(out []string, v string) []string {
	if len(v) < MinSecretLen {
		return out
	}
	qe := url.QueryEscape(v)
	pe := url.PathEscape(v)
	js, _ := json.Marshal(v)
	var jsNoHTML strings.Builder
	enc := json.NewEncoder(&jsNoHTML)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	for _, f := range []string{v, qe, pe, lowerHex(qe), lowerHex(pe), strings.ReplaceAll(qe, "+", "%20"),
		unquote(string(js)), unquote(strings.TrimSpace(jsNoHTML.String()))} {
		if len(f) >= MinSecretLen && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// lowerHex lower-cases the hex digits of percent escapes ("%2F" → "%2f").
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for k := i + 1; k <= i+2; k++ {
				if b[k] >= 'A' && b[k] <= 'F' {
					b[k] += 'a' - 'A'
				}
			}
		}
	}
	return string(b)
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// AddURL adds the user info and the sensitive query values of a URL.
func (s *Secrets) AddURL(raw string) {
	u, err := url.Parse(raw)
	if err != nil {
		return
	}
	if u.User != nil {
		s.Add(u.User.Username())
		if p, ok := u.User.Password(); ok {
			s.Add(p)
		}
	}
	if u.RawQuery != "" {
		for _, p := range strings.Split(u.RawQuery, "&") {
			name, val, ok := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if ok && SensitiveParam(name) {
				s.Add(val) // the encoded form as sent
				if d, err := url.QueryUnescape(val); err == nil {
					s.Add(d)
				}
			}
		}
	}
}

// AddHeader adds a header's value when its name is sensitive (or when
// always is true, for headers configured as sensitive).
func (s *Secrets) AddHeader(name string, always bool, vals ...string) {
	if always || SensitiveHeader(name) {
		s.Add(vals...)
	}
}

// Merge adds the forms of o.
func (s *Secrets) Merge(o *Secrets) {
	if o.Len() == 0 {
		return
	}
	out := s.list()
	for _, v := range o.list() {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	s.set(out)
}

// ReplaceKnown replaces the known values only (no pattern scrubbing).
func (s *Secrets) ReplaceKnown(text string) string {
	if s == nil {
		return text
	}
	mask := s.mask
	if mask == "" {
		mask = Mask
	}
	for _, v := range s.list() {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, mask)
		}
	}
	return text
}

// Scrub replaces the known values, then scrubs by pattern (Text).
func (s *Secrets) Scrub(text string) string {
	return Text(s.ReplaceKnown(text))
}

// ScrubBytes is Scrub for a byte slice; it returns b itself when nothing
// changed.
func (s *Secrets) ScrubBytes(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	t := s.Scrub(string(b))
	if t == string(b) {
		return b
	}
	return []byte(t)
}

// AddExact adds v as is, whatever its length (for a value known to be a
// secret, such as an API key, however short).
func (s *Secrets) AddExact(v string) {
	if out := s.list(); v != "" && !slices.Contains(out, v) {
		s.set(append(out, v))
	}
}

// Secret holds one secret value (an API key, a password, a webhook
// secret) so that nothing prints it: every fmt verb prints "REDACTED", and
// the value is held behind a closure that no reflection-based dumper can
// walk. Reveal returns it.
type Secret struct {
	get func() string
}

// NewSecret returns a Secret holding v.
func NewSecret(v string) Secret {
	if v == "" {
		return Secret{}
	}
	return Secret{get: func() string { return v }}
}

// Reveal returns the value ("" for the zero Secret).
func (s Secret) Reveal() string {
	if s.get == nil {
		return ""
	}
	return s.get()
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// String hides the value.
func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return Mask
}

// GoString hides the value.
func (s Secret) GoString() string { return "redact.Secret{" + s.String() + "}" }

// Format hides the value from every verb.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalText hides the value from encoders (JSON, slog's handlers).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue hides the value from slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// asciiLower lower-cases ASCII letters only, so that indexes into the
// result are indexes into s (strings.ToLower changes the length of invalid
// UTF-8 and of some letters).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for k := i; k < len(b); k++ {
				if b[k] >= 'A' && b[k] <= 'Z' {
					b[k] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
