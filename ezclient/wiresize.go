package ezclient

import "unicode/utf8"

// WireBodySize returns the number of bytes a job body takes inside a Cloud
// proxy envelope, which is what counts against the proxy's 1 MiB limit: the
// body is JSON-escaped once as the job's "body" string, and the job is
// escaped again as the envelope's "body" string. A plain character counts
// once; a quote or a backslash four times; a newline, tab, carriage
// return, backspace or form feed three times; any other control
// character, an invalid UTF-8 byte, U+2028 or U+2029 seven bytes. The
// surrounding quotes are not counted. On a self-hosted engine the body is
// escaped once, so it takes at most this much.
//
// The size is computed without encoding anything; it matches this
// package's encoder byte for byte.
func WireBodySize(body string) int {
	n := 0
	for i := 0; i < len(body); {
		b := body[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\':
				n += 4 // \" then \\\"
			case b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
				n += 3 // \n then \\n
			case b < 0x20:
				n += 7 // \u0001 then \\u0001
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(body[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 7 // \ufffd then \\ufffd
		case r == '\u2028' || r == '\u2029':
			n += 7 // \u2028 then \\u2028
		default:
			n += size
		}
		i += size
	}
	return n
}
