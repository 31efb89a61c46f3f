package signing_test

// The language-neutral vectors in tests/vectors/, read from the repo (no copy).

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/shakedown-dev/shakedown/go/signing"
)

type vectorFile struct {
	Scheme string `json:"scheme"`
	Keys   map[string]struct {
		Principal string `json:"principal"`
		SecretB64 string `json:"secret_b64"`
	} `json:"keys"`
	Sign []struct {
		Name       string `json:"name"`
		KeyID      string `json:"key_id"`
		Audience   string `json:"audience"`
		Method     string `json:"method"`
		Timestamp  int64  `json:"timestamp"`
		Nonce      string `json:"nonce"`
		BodyHex    string `json:"body_hex"`
		BodySHA256 string `json:"body_sha256"`
		Canonical  string `json:"canonical"`
		Signature  string `json:"signature"`
	} `json:"sign"`
	Verify []struct {
		Name     string            `json:"name"`
		Valid    bool              `json:"valid"`
		Method   string            `json:"method"`
		BodyHex  string            `json:"body_hex"`
		Metadata map[string]string `json:"metadata"`
	} `json:"verify"`
	// v2: a valid signature is accepted only by the agent it names.
	Audience []struct {
		Name      string            `json:"name"`
		Accept    bool              `json:"accept"`
		AgentName string            `json:"agent_name"`
		Method    string            `json:"method"`
		BodyHex   string            `json:"body_hex"`
		Metadata  map[string]string `json:"metadata"`
	} `json:"audience"`
	Malformed []struct {
		Name  string  `json:"name"`
		Field string  `json:"field"`
		Value *string `json:"value"`
	} `json:"malformed"`
}

func load(t *testing.T, name string) vectorFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "tests", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(v.Sign) == 0 || len(v.Verify) == 0 || len(v.Malformed) == 0 {
		t.Fatalf("%s: a section is empty", name)
	}
	return v
}

func secret(t *testing.T, v vectorFile, id string) []byte {
	k, ok := v.Keys[id]
	if !ok {
		t.Fatalf("key %q is not in the vectors", id)
	}
	b, err := base64.StdEncoding.DecodeString(k.SecretB64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unhex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lookup reads metadata the way gRPC's MD.Get does: every value of a key.
func lookup(md map[string]string) func(string) []string {
	return func(k string) []string {
		if val, ok := md[k]; ok {
			return []string{val}
		}
		return nil
	}
}

func check(t *testing.T, file string) {
	v := load(t, file)
	for _, c := range v.Sign {
		t.Run("sign/"+c.Name, func(t *testing.T) {
			body := unhex(t, c.BodyHex)
			if got := signing.BodyDigest(body); got != c.BodySHA256 {
				t.Fatalf("digest %s, want %s", got, c.BodySHA256)
			}
			req := signing.Request{KeyID: c.KeyID, Audience: c.Audience, Method: c.Method,
				Timestamp: c.Timestamp, Nonce: c.Nonce, Body: body}
			canonical, err := signing.Canonical(v.Scheme, req)
			if err != nil {
				t.Fatal(err)
			}
			if string(canonical) != c.Canonical {
				t.Fatalf("canonical\n%q\nwant\n%q", canonical, c.Canonical)
			}
			if got := signing.Signature(secret(t, v, c.KeyID), canonical); got != c.Signature {
				t.Fatalf("signature %s, want %s", got, c.Signature)
			}
		})
	}
	for _, c := range v.Verify {
		t.Run("verify/"+c.Name, func(t *testing.T) {
			h, err := signing.ParseHeaders(lookup(c.Metadata), v.Scheme)
			ok := err == nil
			if ok {
				_, known := v.Keys[h.KeyID]
				ok = known && signing.Matches(v.Scheme, secret(t, v, h.KeyID), c.Method, unhex(t, c.BodyHex), h)
			}
			if ok != c.Valid {
				t.Fatalf("valid=%v, want %v (parse error: %v)", ok, c.Valid, err)
			}
		})
	}
	if v.Scheme == signing.SchemeV2 && len(v.Audience) == 0 {
		t.Fatalf("%s: no audience cases", file)
	}
	for _, c := range v.Audience {
		t.Run("audience/"+c.Name, func(t *testing.T) {
			h, err := signing.ParseHeaders(lookup(c.Metadata), v.Scheme)
			ok := err == nil && signing.Matches(v.Scheme, secret(t, v, h.KeyID), c.Method,
				unhex(t, c.BodyHex), h) && h.Audience == c.AgentName
			if ok != c.Accept {
				t.Fatalf("accepted=%v by %q, want %v (parse error: %v)", ok, c.AgentName, c.Accept, err)
			}
		})
	}
	for _, c := range v.Malformed {
		t.Run("malformed/"+c.Name, func(t *testing.T) {
			good := v.Verify[0].Metadata
			get := func(k string) []string {
				if k == c.Field {
					if c.Value == nil {
						return nil
					}
					return []string{*c.Value}
				}
				return lookup(good)(k)
			}
			if _, err := signing.ParseHeaders(get, v.Scheme); err == nil {
				t.Fatalf("%s=%v accepted", c.Field, c.Value)
			}
		})
	}
}

func TestVectorsV1(t *testing.T) { check(t, "hmac-v1.json") }

func TestVectorsV2(t *testing.T) { check(t, "hmac-v2.json") }
