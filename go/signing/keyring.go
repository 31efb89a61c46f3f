package signing

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"syscall"
)

// KeyringVersion is the keyring file format this package reads.
const KeyringVersion = 1

// MinSecretBytes is the shortest secret a keyring may hold.
const MinSecretBytes = 16

// Key is one keyring entry.
type Key struct {
	ID        string
	Principal string
	Secret    []byte
	Active    bool
	Created   int64
}

// Keyring is the JSON file both ends share (docs/protocol.md, "Keyring").
type Keyring struct {
	Keys []Key
}

type rawKey struct {
	ID        *string `json:"id"`
	Principal *string `json:"principal"`
	Secret    *string `json:"secret"`
	Active    *bool   `json:"active"`
	Created   int64   `json:"created"`
}

var keyIDFormat = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseKeyring reads a keyring document; source names it in errors.
func ParseKeyring(data []byte, source string) (*Keyring, error) {
	var doc struct {
		Version *int               `json:"version"`
		Keys    *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid JSON: %w", source, err)
	}
	if doc.Version == nil || *doc.Version != KeyringVersion {
		return nil, fmt.Errorf(`%s: expected an object with "version": %d`, source, KeyringVersion)
	}
	if doc.Keys == nil {
		return nil, fmt.Errorf(`%s: "keys" must be a list`, source)
	}
	kr := &Keyring{}
	seen := map[string]bool{}
	for i, raw := range *doc.Keys {
		where := fmt.Sprintf("%s: keys[%d]", source, i)
		var k rawKey
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("%s: must be an object", where)
		}
		switch {
		case k.ID == nil || !keyIDFormat.MatchString(*k.ID):
			return nil, fmt.Errorf("%s.id: missing or malformed", where)
		case seen[*k.ID]:
			return nil, fmt.Errorf("%s.id: duplicate key id %q", where, *k.ID)
		case k.Principal == nil || *k.Principal == "":
			return nil, fmt.Errorf("%s.principal: missing", where)
		case k.Secret == nil:
			return nil, fmt.Errorf("%s.secret: missing", where)
		}
		secret, err := base64.StdEncoding.Strict().DecodeString(*k.Secret)
		if err != nil {
			return nil, fmt.Errorf("%s.secret: not base64", where)
		}
		if len(secret) < MinSecretBytes {
			return nil, fmt.Errorf("%s.secret: shorter than %d bytes", where, MinSecretBytes)
		}
		seen[*k.ID] = true
		active := k.Active == nil || *k.Active
		kr.Keys = append(kr.Keys, Key{*k.ID, *k.Principal, secret, active, k.Created})
	}
	return kr, nil
}

// LoadKeyring reads a keyring file after checking it is private (CheckPrivate).
func LoadKeyring(path string) (*Keyring, error) {
	if err := CheckPrivate(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read keyring %s: %w", path, err)
	}
	return ParseKeyring(data, path)
}

// CheckPrivate refuses, as ssh does, a secret file that others may read:
// group or world permission bits set, or owned by another user.
func CheckPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	if mode := st.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("permissions %04o for %q are too open: it must not be readable by group or others (chmod 600 %s)", mode, path, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return fmt.Errorf("%q is owned by uid %d, not by this user (uid %d)", path, sys.Uid, os.Getuid())
	}
	return nil
}

// SigningKey is the newest active key of principal; on equal creation times
// the later entry wins, so a rotation within one second still takes.
func (kr *Keyring) SigningKey(principal string) (Key, error) {
	best, found := Key{}, false
	for _, k := range kr.Keys {
		if k.Active && k.Principal == principal && (!found || k.Created >= best.Created) {
			best, found = k, true
		}
	}
	if !found {
		return Key{}, fmt.Errorf("no active key for principal %q in the keyring", principal)
	}
	return best, nil
}

// Get is the key with this id.
func (kr *Keyring) Get(id string) (Key, bool) {
	for _, k := range kr.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return Key{}, false
}
