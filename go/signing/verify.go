package signing

import (
	"crypto/hmac"
	"fmt"
	"regexp"
	"strconv"
)

var (
	timestampRe = regexp.MustCompile(`^(0|[1-9][0-9]{0,11})$`)
	signatureRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Headers are the signature entries of one request, parsed and well formed.
type Headers struct {
	KeyID, Audience, Nonce, Signature string
	Timestamp                         int64
}

// ParseHeaders reads the signature entries from gRPC metadata (each key must
// appear exactly once; the audience is required for scheme v2), naming the
// first bad entry. get returns every value of a key.
func ParseHeaders(get func(key string) []string, scheme string) (Headers, error) {
	one := func(key string, re *regexp.Regexp) (string, error) {
		vals := get(key)
		if len(vals) != 1 {
			return "", fmt.Errorf("%s: want exactly one value, got %d", key, len(vals))
		}
		if !re.MatchString(vals[0]) {
			return "", fmt.Errorf("%s: malformed", key)
		}
		return vals[0], nil
	}
	var h Headers
	var err error
	if h.KeyID, err = one(HeaderKeyID, keyIDRe); err != nil {
		return h, err
	}
	ts, err := one(HeaderTimestamp, timestampRe)
	if err != nil {
		return h, err
	}
	h.Timestamp, _ = strconv.ParseInt(ts, 10, 64)
	if h.Nonce, err = one(HeaderNonce, nonceRe); err != nil {
		return h, err
	}
	if h.Signature, err = one(HeaderSignature, signatureRe); err != nil {
		return h, err
	}
	if scheme == SchemeV2 {
		if h.Audience, err = one(HeaderAudience, audienceRe); err != nil {
			return h, err
		}
	}
	return h, nil
}

// Matches reports whether h signs (method, body) under secret, in constant time.
func Matches(scheme string, secret []byte, method string, body []byte, h Headers) bool {
	canonical, err := Canonical(scheme, Request{h.KeyID, h.Audience, method, h.Timestamp, h.Nonce, body})
	if err != nil {
		return false
	}
	return hmac.Equal([]byte(Signature(secret, canonical)), []byte(h.Signature))
}
