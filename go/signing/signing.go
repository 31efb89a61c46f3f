// Package signing implements the request signature of the Shakedown agent
// protocol (docs/protocol.md): the canonical string, the HMAC-SHA256
// signature over it, and the metadata that carries it.
//
// The signature covers the exact serialized request bytes, never a
// re-serialization: protobuf encoding is not canonical, so both ends work on
// the wire bytes.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Schemes, as the first line of the canonical string.
const (
	SchemeV1 = "SHAKEDOWN-HMAC-SHA256-V1"
	SchemeV2 = "SHAKEDOWN-HMAC-SHA256-V2"
)

// Metadata keys (lowercase, as gRPC requires).
const (
	HeaderKeyID     = "x-shakedown-key-id"
	HeaderTimestamp = "x-shakedown-timestamp"
	HeaderNonce     = "x-shakedown-nonce"
	HeaderSignature = "x-shakedown-signature"
	HeaderAudience  = "x-shakedown-audience"
)

var (
	keyIDRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	nonceRe    = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)
	audienceRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// Request is what a signature covers.
type Request struct {
	KeyID     string
	Audience  string // the agent's name; empty only for scheme v1
	Method    string // full method name, e.g. /shakedown.agent.v1.Agent/GetNodeInfo
	Timestamp int64  // Unix seconds
	Nonce     string
	Body      []byte // the serialized request, exactly as sent
}

// Validate checks the fields a signer controls, naming the bad one.
func (r Request) Validate(scheme string) error {
	switch {
	case !keyIDRe.MatchString(r.KeyID):
		return fmt.Errorf("key id %q: want %s", r.KeyID, keyIDRe)
	case scheme == SchemeV2 && !audienceRe.MatchString(r.Audience):
		return fmt.Errorf("audience %q: want an agent name matching %s", r.Audience, audienceRe)
	case !strings.HasPrefix(r.Method, "/"):
		return fmt.Errorf("method %q: want a full method name /pkg.Service/Method", r.Method)
	case r.Timestamp < 0 || r.Timestamp > 999_999_999_999:
		return fmt.Errorf("timestamp %d: want 0..999999999999", r.Timestamp)
	case !nonceRe.MatchString(r.Nonce):
		return fmt.Errorf("nonce %q: want 16-64 characters of [A-Za-z0-9_-]", r.Nonce)
	}
	return nil
}

// BodyDigest is the lowercase hex SHA-256 of the body.
func BodyDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// Canonical is the string a signature covers, in the given scheme.
func Canonical(scheme string, r Request) ([]byte, error) {
	lines := []string{scheme, r.KeyID}
	switch scheme {
	case SchemeV2:
		lines = append(lines, r.Audience)
	case SchemeV1:
	default:
		return nil, fmt.Errorf("scheme %q: want %s or %s", scheme, SchemeV2, SchemeV1)
	}
	lines = append(lines, r.Method, strconv.FormatInt(r.Timestamp, 10), r.Nonce, BodyDigest(r.Body))
	return []byte(strings.Join(lines, "\n")), nil
}

// Signature is hex(HMAC-SHA256(secret, canonical)).
func Signature(secret, canonical []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(canonical)
	return hex.EncodeToString(mac.Sum(nil))
}

// Sign validates r and returns the metadata pairs that carry its v2 signature.
func Sign(secret []byte, r Request) ([]string, error) {
	if err := r.Validate(SchemeV2); err != nil {
		return nil, err
	}
	canonical, err := Canonical(SchemeV2, r)
	if err != nil {
		return nil, err
	}
	return []string{
		HeaderKeyID, r.KeyID,
		HeaderAudience, r.Audience,
		HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10),
		HeaderNonce, r.Nonce,
		HeaderSignature, Signature(secret, canonical),
	}, nil
}

// NewNonce is 18 random bytes, base64url: 24 characters, as the Python driver sends.
func NewNonce() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
