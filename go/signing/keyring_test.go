package signing_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shakedown-dev/shakedown/go/signing"
)

const ring = `{"version": 1, "keys": [
 {"id": "driver-old", "principal": "driver", "secret": "AAECAwQFBgcICQoLDA0ODw==", "active": true, "created": 10},
 {"id": "driver-new", "principal": "driver", "secret": "AAECAwQFBgcICQoLDA0ODw==", "active": true, "created": 20},
 {"id": "driver-off", "principal": "driver", "secret": "AAECAwQFBgcICQoLDA0ODw==", "active": false, "created": 30},
 {"id": "viewer-1", "principal": "viewer", "secret": "AAECAwQFBgcICQoLDA0ODw=="}]}`

func write(t *testing.T, text string, mode os.FileMode) string {
	p := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask may have masked bits
		t.Fatal(err)
	}
	return p
}

func TestSigningKeyIsTheNewestActiveOfThePrincipal(t *testing.T) {
	kr, err := signing.LoadKeyring(write(t, ring, 0o600))
	if err != nil {
		t.Fatal(err)
	}
	k, err := kr.SigningKey("driver")
	if err != nil || k.ID != "driver-new" {
		t.Fatalf("got %q, %v; want driver-new", k.ID, err)
	}
	if v, _ := kr.SigningKey("viewer"); !v.Active || v.ID != "viewer-1" {
		t.Fatalf("a key without \"active\" is active: got %+v", v)
	}
	if _, err := kr.SigningKey("nobody"); err == nil || !strings.Contains(err.Error(), `"nobody"`) {
		t.Fatalf("unknown principal: %v", err)
	}
}

func TestKeyringReadableByOthersIsRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		p := write(t, ring, mode)
		_, err := signing.LoadKeyring(p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "permissions "+octal(mode)) {
			t.Fatalf("mode %s: want an error naming the path and the mode, got %v", octal(mode), err)
		}
	}
	if _, err := signing.LoadKeyring(write(t, ring, 0o400)); err != nil {
		t.Fatalf("0400 is private: %v", err)
	}
}

func octal(m os.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{'0', digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestMalformedKeyringsNameTheField(t *testing.T) {
	cases := map[string]string{
		`{"version": 2, "keys": []}`: `"version": 1`,
		`{"version": 1}`:             `"keys" must be a list`,
		`{"version": 1, "keys": [{"principal": "d", "secret": "AAAA"}]}`:              "keys[0].id",
		`{"version": 1, "keys": [{"id": "k", "secret": "AAECAwQFBgcICQoLDA0ODw=="}]}`: "keys[0].principal",
		`{"version": 1, "keys": [{"id": "k", "principal": "d", "secret": "AAAA"}]}`:   "keys[0].secret: shorter",
		`{"version": 1, "keys": [{"id": "k", "principal": "d", "secret": "%%"}]}`:     "keys[0].secret: not base64",
	}
	for doc, want := range cases {
		_, err := signing.ParseKeyring([]byte(doc), "k.json")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want %q, got %v", doc, want, err)
		}
	}
}
