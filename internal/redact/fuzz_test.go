package redact

import (
	"strings"
	"testing"
	"unicode"
)

// FuzzText: Text never panics, is idempotent enough to be applied twice,
// and removes a credential placed in any of the patterns it documents,
// whatever text surrounds it (a separator keeps the pattern recognisable:
// a prefix ending in a name byte would make a different name).
func FuzzText(f *testing.F) {
	for _, s := range []string{"", "GET https://x/", `{"a":"b"}`, "error: ", "map[", "\\", "%", "?", "&"} {
		f.Add(s, "secretValue123", "!", uint8(0))
	}
	f.Add("http://h/x?", "tk%2FSECRET%2BEnc%3D%3D", "&b=1", uint8(1))
	f.Add(`{"headers":{`, "Bearer abc.def-ghi", `}}`, uint8(2))
	f.Fuzz(func(t *testing.T, prefix, secret, suffix string, pattern uint8) {
		out := Text(prefix + secret + suffix)
		_ = Text(out)
		// The credential must be a plausible token: no separators, no
		// spaces, long enough to be told from ordinary text.
		if len(secret) < 8 || strings.ContainsFunc(secret, func(r rune) bool {
			return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-._~+/%", r)))
		}) || isMask(secret) || strings.Contains(secret, Mask) {
			return
		}
		sep := " "
		var in string
		switch pattern % 6 {
		case 0:
			if strings.Contains(secret, "/") {
				return // a '/' in user info must be percent-encoded
			}
			in = prefix + sep + "https://user:" + secret + "@host.example/x" + sep + suffix
		case 1:
			in = prefix + sep + "https://host.example/x?a=1&api_key=" + secret + "&b=2" + sep + suffix
		case 2:
			in = prefix + "\n" + "Authorization: Bearer " + secret + "\n" + suffix
		case 3:
			in = prefix + `,"X-Api-Key":"` + secret + `",` + suffix
		case 4:
			in = prefix + sep + "Bearer " + secret + sep + suffix
		case 5:
			in = prefix + sep + "token=" + secret + "&" + suffix
		}
		out = Text(in)
		if strings.Count(out, secret) > strings.Count(prefix+suffix, secret) {
			t.Fatalf("pattern %d: %q left in\n in: %q\nout: %q", pattern%6, secret, in, out)
		}
	})
}
