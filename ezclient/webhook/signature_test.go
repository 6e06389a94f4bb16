package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testSecret = "whsec_primary_0123456789"
	oldSecret  = "whsec_previous_987654321"
)

func TestSignFormat(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	body := []byte(`{"job_id":"j1"}`)
	got := Sign("s3cr3t", ts, body)

	m := hmac.New(sha256.New, []byte("s3cr3t"))
	m.Write([]byte("1700000000." + string(body)))
	want := "t=1700000000,v1=" + hex.EncodeToString(m.Sum(nil))
	assert.Equal(t, want, got)
	assert.Equal(t, strings.ToLower(got), got, "hex must be lower-case")
}

func TestVerify(t *testing.T) {
	clk := newFakeClock()
	now := clk.Now()
	body := []byte(`{"job_id":"job_1","status":"success"}`)
	valid := Sign(testSecret, now, body)

	tests := []struct {
		name      string
		v         Verifier
		header    string
		body      []byte
		wantErr   error // nil = accepted
		wantInMsg string
	}{
		{name: "valid", v: Verifier{Primary: testSecret}, header: valid, body: body},
		{name: "valid with spaces and unknown keys", v: Verifier{Primary: testSecret},
			header: " t=" + strconv.FormatInt(now.Unix(), 10) + " , v0=abc, v1=" + valid[strings.Index(valid, "v1=")+3:] + " ", body: body},
		{name: "upper-case hex accepted", v: Verifier{Primary: testSecret}, header: valid[:strings.Index(valid, "v1=")+3] + strings.ToUpper(valid[strings.Index(valid, "v1=")+3:]), body: body},
		{name: "tampered body", v: Verifier{Primary: testSecret}, header: valid, body: []byte(`{"job_id":"job_1","status":"failed"}`), wantErr: ErrMismatch},
		{name: "body with trailing newline", v: Verifier{Primary: testSecret}, header: valid, body: append(append([]byte{}, body...), '\n'), wantErr: ErrMismatch},
		{name: "wrong secret", v: Verifier{Primary: "another-secret-entirely"}, header: valid, body: body, wantErr: ErrMismatch},
		{name: "rotated: signed with old secret, old is secondary", v: Verifier{Primary: "new-secret-0000000000", Secondary: testSecret}, header: valid, body: body},
		{name: "rotated: old secret dropped", v: Verifier{Primary: "new-secret-0000000000"}, header: valid, body: body, wantErr: ErrMismatch},
		{name: "two v1 values, second matches", v: Verifier{Primary: testSecret},
			header: Sign("other-secret-xxxxxxxx", now, body) + ",v1=" + valid[strings.Index(valid, "v1=")+3:], body: body},
		{name: "expired", v: Verifier{Primary: testSecret}, header: Sign(testSecret, now.Add(-301*time.Second), body), body: body, wantErr: ErrExpired, wantInMsg: "old"},
		{name: "at tolerance edge is accepted", v: Verifier{Primary: testSecret}, header: Sign(testSecret, now.Add(-300*time.Second), body), body: body},
		{name: "future", v: Verifier{Primary: testSecret}, header: Sign(testSecret, now.Add(301*time.Second), body), body: body, wantErr: ErrExpired, wantInMsg: "future"},
		{name: "custom tolerance", v: Verifier{Primary: testSecret, Tolerance: 10 * time.Second}, header: Sign(testSecret, now.Add(-11*time.Second), body), body: body, wantErr: ErrExpired},
		{name: "missing header", v: Verifier{Primary: testSecret}, header: "", body: body, wantErr: ErrMissingHeader},
		{name: "blank header", v: Verifier{Primary: testSecret}, header: "   ", body: body, wantErr: ErrMissingHeader},
		{name: "missing v1", v: Verifier{Primary: testSecret}, header: "t=" + strconv.FormatInt(now.Unix(), 10), body: body, wantErr: ErrMissingV1},
		{name: "v1 not hex", v: Verifier{Primary: testSecret}, header: "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=" + strings.Repeat("zz", 32), body: body, wantErr: ErrMissingV1},
		{name: "v1 too short", v: Verifier{Primary: testSecret}, header: "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=abcd", body: body, wantErr: ErrMissingV1},
		{name: "missing t", v: Verifier{Primary: testSecret}, header: valid[strings.Index(valid, "v1="):], body: body, wantErr: ErrBadTimestamp},
		{name: "non-numeric t", v: Verifier{Primary: testSecret}, header: "t=soon," + valid[strings.Index(valid, "v1="):], body: body, wantErr: ErrBadTimestamp},
		{name: "negative t", v: Verifier{Primary: testSecret}, header: "t=-5," + valid[strings.Index(valid, "v1="):], body: body, wantErr: ErrBadTimestamp},
		{name: "t given twice", v: Verifier{Primary: testSecret}, header: "t=1," + valid, body: body, wantErr: ErrBadTimestamp},
		{name: "no secret", v: Verifier{}, header: valid, body: body, wantErr: ErrNoSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.Now = clk.Now
			err := tc.v.Verify(tc.header, tc.body)
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.wantErr)
			assert.ErrorIs(t, err, ErrInvalidSignature)
			var se *SignatureError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tc.wantErr, se.Reason)
			assert.NotContains(t, err.Error(), testSecret)
			if tc.wantInMsg != "" {
				assert.Contains(t, err.Error(), tc.wantInMsg)
			}
		})
	}
}

func TestVerifyFunc(t *testing.T) {
	body := []byte(`{}`)
	h := Sign(oldSecret, time.Now(), body)
	require.NoError(t, Verify(h, body, oldSecret))
	require.NoError(t, Verify(h, body, testSecret, oldSecret), "secondary accepted")
	require.NoError(t, Verify(h, body, "", "x-secret-xxxxxxxxxxx", "y-secret-yyyyyyyyy", oldSecret), "any listed secret accepted")
	assert.ErrorIs(t, Verify(h, body, testSecret), ErrMismatch)
	assert.ErrorIs(t, Verify(h, body), ErrNoSecret)
	assert.ErrorIs(t, Verify(h, body, ""), ErrNoSecret)
	var nilV *Verifier
	assert.ErrorIs(t, nilV.Verify(h, body), ErrNoSecret)
}

func TestParseSignature(t *testing.T) {
	sig, err := ParseSignature(Sign(testSecret, time.Unix(42, 0), nil))
	require.NoError(t, err)
	assert.Equal(t, int64(42), sig.Timestamp.Unix())
	require.Len(t, sig.V1, 1)
	assert.Len(t, sig.V1[0], sha256.Size)

	_, err = ParseSignature(strings.Repeat("t=1,", 2000))
	assert.ErrorIs(t, err, ErrInvalidSignature, "oversized header rejected")
}

// FuzzParseSignature checks the header parser never panics, and that
// whatever it accepts is coherent and verifies only with the right MAC.
func FuzzParseSignature(f *testing.F) {
	body := []byte(`{"job_id":"j"}`)
	for _, s := range []string{
		Sign(testSecret, time.Unix(1700000000, 0), body),
		"t=1700000000,v1=" + strings.Repeat("0", 64),
		"t=,v1=",
		"v1=abc",
		"t=1,t=2",
		",,,,=,==",
		"t=99999999999999999999,v1=00",
		"t=1700000000, v1=" + strings.Repeat("A", 64) + ", v2=zz",
		"",
		"\x00t=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		sig, err := ParseSignature(header)
		if err != nil {
			var se *SignatureError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSignature) {
				t.Fatalf("error %v is not a *SignatureError", err)
			}
			return
		}
		if len(sig.V1) == 0 {
			t.Fatal("accepted a header without v1")
		}
		for _, v := range sig.V1 {
			if len(v) != sha256.Size {
				t.Fatalf("v1 of %d bytes accepted", len(v))
			}
		}
		// An arbitrary header must not verify unless it carries the real MAC.
		v := Verifier{Primary: testSecret, Now: func() time.Time { return sig.Timestamp }}
		err = v.Verify(header, body)
		want := mac(testSecret, strconv.FormatInt(sig.Timestamp.Unix(), 10), body)
		has := false
		for _, got := range sig.V1 {
			has = has || hmac.Equal(got, want)
		}
		if (err == nil) != has {
			t.Fatalf("Verify = %v but header carries the right MAC = %v", err, has)
		}
	})
}
