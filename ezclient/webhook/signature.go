package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the request header that carries a webhook's signature:
//
//	X-EZThrottle-Signature: t=<unix seconds>,v1=<lower-case hex HMAC-SHA256(secret, "<t>.<raw body>")>
const SignatureHeader = "X-EZThrottle-Signature"

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock, in either direction, before the delivery is rejected as
// expired (protocol §4).
const DefaultTolerance = 300 * time.Second

// maxHeaderLen bounds the signature header a verifier will parse. A real
// header is well under 200 bytes; a handful of v1 values fit easily.
const maxHeaderLen = 4096

// Sign returns the value of the SignatureHeader for body signed with secret at
// time t: "t=<unix seconds>,v1=<lower-case hex HMAC-SHA256>" where the MAC is
// computed over "<unix seconds>.<body>". It is what EZThrottle engines send,
// and what tests and local engines use to produce deliveries that Verify
// accepts.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

// mac is HMAC-SHA256(secret, ts "." body).
func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Reasons a signature is rejected. Every verification failure is a
// *SignatureError that satisfies errors.Is with ErrInvalidSignature and with
// exactly one of these reasons.
var (
	// ErrInvalidSignature matches every signature verification failure.
	ErrInvalidSignature = errors.New("webhook: invalid signature")
	// ErrMissingHeader: the request carries no (or an empty)
	// X-EZThrottle-Signature header.
	ErrMissingHeader = errors.New("missing " + SignatureHeader + " header")
	// ErrMissingV1: the header has no v1=<hex> signature (or none that is
	// well-formed hex of the right length).
	ErrMissingV1 = errors.New("signature header has no v1 signature")
	// ErrBadTimestamp: the header has no t=<unix seconds>, or it is not an
	// integer, or it is given twice.
	ErrBadTimestamp = errors.New("signature header has a missing or malformed timestamp")
	// ErrExpired: the timestamp is further from the receiver's clock than the
	// tolerance allows, in the past or in the future.
	ErrExpired = errors.New("signature timestamp outside the tolerance")
	// ErrMismatch: no v1 signature matches the body under any configured
	// secret (tampered body, wrong secret, or a secret rotated away).
	ErrMismatch = errors.New("signature does not match")
	// ErrNoSecret: verification was asked for without any non-empty secret.
	ErrNoSecret = errors.New("no webhook secret configured")
)

// SignatureError reports why a delivery's signature was rejected. Use
// errors.Is with ErrInvalidSignature (any failure) or with a reason
// (ErrMissingHeader, ErrMissingV1, ErrBadTimestamp, ErrExpired, ErrMismatch,
// ErrNoSecret), or errors.As to read the details. It never contains a secret.
type SignatureError struct {
	// Reason is one of the reason sentinels above.
	Reason error
	// Timestamp is the signature's timestamp when it could be parsed (zero
	// otherwise).
	Timestamp time.Time
	// Skew is now − Timestamp when the timestamp could be parsed: positive
	// for a signature from the past, negative for one from the future.
	Skew time.Duration
}

// Error describes why the signature was rejected; it never contains a secret.
func (e *SignatureError) Error() string {
	msg := "webhook: invalid signature: " + e.Reason.Error()
	if errors.Is(e.Reason, ErrExpired) {
		if e.Skew < 0 {
			msg += " (timestamp " + (-e.Skew).Round(time.Second).String() + " in the future)"
		} else {
			msg += " (timestamp " + e.Skew.Round(time.Second).String() + " old)"
		}
	}
	return msg
}

// Unwrap returns the reason.
func (e *SignatureError) Unwrap() error { return e.Reason }

// Is makes errors.Is(err, ErrInvalidSignature) true for every SignatureError.
func (e *SignatureError) Is(target error) bool { return target == ErrInvalidSignature }

// Signature is a parsed SignatureHeader value.
type Signature struct {
	// Timestamp is the signing time (t=), in whole seconds.
	Timestamp time.Time
	// V1 holds every well-formed v1 signature (32 bytes each) in header
	// order. Senders normally send one; more are allowed so a sender can sign
	// with two secrets during a rotation.
	V1 [][]byte
}

// ParseSignature parses a SignatureHeader value: comma-separated key=value
// pairs, where t is the unix time in seconds and each v1 is a lower- or
// upper-case hex HMAC-SHA256. Spaces around pairs are ignored, as are
// unknown keys (future schemes such as v2). Malformed v1 values are skipped.
//
// Errors are *SignatureError with reason ErrMissingHeader (empty value),
// ErrBadTimestamp (no t, a non-integer t, or t given twice) or ErrMissingV1
// (no usable v1).
func ParseSignature(header string) (Signature, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return Signature{}, &SignatureError{Reason: ErrMissingHeader}
	}
	if len(header) > maxHeaderLen {
		return Signature{}, &SignatureError{Reason: ErrBadTimestamp}
	}
	var (
		sig   Signature
		haveT bool
	)
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "t":
			if haveT {
				return Signature{}, &SignatureError{Reason: ErrBadTimestamp}
			}
			n, err := parseUnix(v)
			if err != nil {
				return Signature{}, &SignatureError{Reason: ErrBadTimestamp}
			}
			haveT = true
			sig.Timestamp = time.Unix(n, 0)
		case "v1":
			if len(v) != 2*sha256.Size {
				continue
			}
			b, err := hex.DecodeString(v)
			if err != nil {
				continue
			}
			sig.V1 = append(sig.V1, b)
		}
	}
	if !haveT {
		return Signature{}, &SignatureError{Reason: ErrBadTimestamp}
	}
	if len(sig.V1) == 0 {
		return Signature{}, &SignatureError{Reason: ErrMissingV1, Timestamp: sig.Timestamp}
	}
	return sig, nil
}

// parseUnix accepts a plain decimal integer of at most 12 digits (no sign,
// no spaces): seconds since 1970 up to the year 33658.
func parseUnix(v string) (int64, error) {
	if v == "" || len(v) > 12 {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// Verifier checks webhook signatures. The zero value has no secret and
// rejects everything with ErrNoSecret; set at least Primary.
type Verifier struct {
	// Primary is the account's current webhook secret.
	Primary string
	// Secondary is the previous secret, still accepted during a rotation.
	// Empty means none.
	Secondary string
	// Tolerance is the accepted distance between the signature's timestamp
	// and Now, in either direction. 0 means DefaultTolerance.
	Tolerance time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Verify checks header (the SignatureHeader value) against the raw request
// body: the timestamp must be within the tolerance of now, and one v1
// signature must equal HMAC-SHA256 over "<t>.<body>" under the primary
// secret, or else under the secondary. Comparisons are constant-time.
// It returns nil or a *SignatureError.
func (v *Verifier) Verify(header string, body []byte) error {
	_, err := v.verify(header, body)
	return err
}

// verify is Verify, also returning the accepted signature's timestamp.
func (v *Verifier) verify(header string, body []byte) (time.Time, error) {
	if v == nil {
		return time.Time{}, &SignatureError{Reason: ErrNoSecret}
	}
	return verify(header, body, []string{v.Primary, v.Secondary}, v.Tolerance, v.Now)
}

// Verify checks a SignatureHeader value against the raw body with the
// default tolerance and the system clock, trying each secret in order
// (primary first, then the secondary during a rotation). Empty secrets are
// skipped; with none it fails with ErrNoSecret. Use a Verifier to set the
// tolerance or the clock.
func Verify(header string, body []byte, secrets ...string) error {
	_, err := verify(header, body, secrets, 0, nil)
	return err
}

// verify checks the signature and returns its timestamp when it is valid.
func verify(header string, body []byte, secrets []string, tol time.Duration, now func() time.Time) (time.Time, error) {
	if !hasSecret(secrets) {
		return time.Time{}, &SignatureError{Reason: ErrNoSecret}
	}
	sig, err := ParseSignature(header)
	if err != nil {
		return time.Time{}, err
	}
	if now == nil {
		now = time.Now
	}
	if tol <= 0 {
		tol = DefaultTolerance
	}
	skew := now().Sub(sig.Timestamp)
	if skew > tol || skew < -tol {
		return time.Time{}, &SignatureError{Reason: ErrExpired, Timestamp: sig.Timestamp, Skew: skew}
	}
	ts := strconv.FormatInt(sig.Timestamp.Unix(), 10)
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		want := mac(secret, ts, body)
		for _, got := range sig.V1 {
			if hmac.Equal(want, got) {
				return sig.Timestamp, nil
			}
		}
	}
	return time.Time{}, &SignatureError{Reason: ErrMismatch, Timestamp: sig.Timestamp, Skew: skew}
}

func hasSecret(secrets []string) bool {
	for _, s := range secrets {
		if s != "" {
			return true
		}
	}
	return false
}
