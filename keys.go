package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/caddyserver/caddy/v2"
)

// MinKeyLength is the minimum length of a resolved key in bytes. A key of
// 16 random bytes or more cannot be guessed online; generate keys with
// "openssl rand -base64 32".
const MinKeyLength = 16

// maxClientNameLength bounds client names, which appear in logs, in the
// {http.auth.user.id} placeholder and in client_header.
const maxClientNameLength = 64

// digestPrefix marks a key given as the hex SHA-256 digest of the secret
// rather than the secret itself.
const digestPrefix = "sha256:"

// ClientKey is one accepted key and the name of the client that holds it.
type ClientKey struct {
	// Client names the service that holds the key. The name is logged,
	// set as {http.auth.user.id} and sent in client_header, so it must be
	// unique and may contain only letters, digits, '.', '_' and '-'.
	Client string `json:"client"`

	// Key is the secret the client presents, or "sha256:" followed by the
	// 64 hex digits of the secret's SHA-256 digest. It may be a literal or
	// contain {env.NAME} and {file.PATH} placeholders, which are resolved
	// when the config is provisioned; no other placeholders are accepted.
	// A secret must be at least 16 bytes of printable ASCII without
	// spaces, and every client's key must differ from the others.
	Key string `json:"key"`

	// Expires is the time, in RFC 3339 format, after which the key is
	// rejected. A config whose key has already expired does not load.
	// Default: the key does not expire.
	Expires string `json:"expires,omitempty"`
}

// resolvedKey is a configured key after placeholders are resolved: only
// its digest is kept, never the secret.
type resolvedKey struct {
	client  string
	digest  [sha256.Size]byte
	expires time.Time

	// origin names the config location of the key, for error messages.
	origin string

	// long is set for a secret longer than longKeyLength.
	long bool
}

// longKeyLength is the length in bytes above which a secret draws a warning
// at load. Caddy responds with 431 to a request whose request line and
// headers together exceed the server's max_header_size, 16 KiB by default
// in Caddy v2.11.9, so a much longer key may never reach the handler.
const longKeyLength = 4 << 10

// isLongSecret reports whether key, as resolved from the config, is a
// secret rather than a digest and longer than longKeyLength.
func isLongSecret(key string) bool {
	return !hasDigestPrefix(key) && len(key) > longKeyLength
}

// keyEntry is one key as the request path uses it.
type keyEntry struct {
	digest  [sha256.Size]byte
	client  string
	expires time.Time

	// allowed is false for a client that the handler's allow list leaves
	// out: its key is valid, but the request gets 403.
	allowed bool

	// limiter is the client's rate limit, or nil.
	limiter *rate.Limiter

	counters clientCounters

	// authentication is left in the request for later api_key handlers.
	authentication *authentication

	// clientID is client as the value of {http.auth.user.id}, converted to
	// an interface once, so that setting the placeholder allocates nothing.
	clientID any
}

// expired reports whether the entry has an expiry time and now is after it.
func (e *keyEntry) expired(now time.Time) bool {
	return !e.expires.IsZero() && now.After(e.expires)
}

// keyring finds the entry for a presented key. Lookup hashes the presented
// value, finds a candidate by the first 8 bytes of the digest and compares
// full digests with crypto/subtle. Its cost therefore does not depend on
// how much of the value matches a key, and does not grow with the number
// of keys.
type keyring struct {
	entries []keyEntry
	index   map[uint64]int

	// origins name the config location of each entry, for error messages.
	origins []string

	// decoy is compared when no candidate is found, so that a miss does
	// the same work as a hit.
	decoy keyEntry
}

// resolveClientKeys resolves the placeholders of each configured key and
// parses its expiry. Every error names the client and, where one is at
// fault, the placeholder; no error contains any part of a key.
func resolveClientKeys(repl *caddy.Replacer, keys []ClientKey) ([]resolvedKey, error) {
	resolved := make([]resolvedKey, 0, len(keys))
	for i, configured := range keys {
		if err := checkClientName(configured.Client); err != nil {
			return nil, fmt.Errorf("keys[%d]: %v", i, err)
		}

		key, err := resolveKey(repl, configured.Client, configured.Key)
		if err != nil {
			return nil, err
		}
		digest, err := parseKey(key)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %s: %s %v", i,
				clientLabel(configured.Client, configured.Key), describeKey(configured.Key), err)
		}

		var expires time.Time
		if configured.Expires != "" {
			expires, err = parseExpiry(configured.Expires)
			if err != nil {
				return nil, fmt.Errorf("keys[%d]: %s: %v", i,
					clientLabel(configured.Client, configured.Key), err)
			}
		}

		resolved = append(resolved, resolvedKey{
			client:  configured.Client,
			digest:  digest,
			expires: expires,
			origin:  fmt.Sprintf("keys[%d]", i),
			long:    isLongSecret(key),
		})
	}
	return resolved, nil
}

// newKeyring indexes the resolved keys. It rejects an empty list, a client
// name used twice and a key shared by two clients.
func newKeyring(keys []resolvedKey) (*keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("no API keys configured; add 'key <client> <key>' " +
			"or keys_file to the api_key block, for example: " +
			"key mailserver {env.MAILSERVER_API_KEY}")
	}

	ring := &keyring{
		entries: make([]keyEntry, 0, len(keys)),
		index:   make(map[uint64]int, len(keys)),
	}
	origins := make(map[string]string, len(keys))
	for _, key := range keys {
		if first, seen := origins[key.client]; seen {
			return nil, fmt.Errorf("client %s is configured twice (%s, %s); give each "+
				"key its own client name", showToken(key.client), first, key.origin)
		}
		origins[key.client] = key.origin

		if err := ring.add(key); err != nil {
			return nil, err
		}
	}

	// A name pasted in place of the key and the key in place of the name,
	// as in 'key <key> sha256:<digest of key>', would load and then log
	// the key as a client name.
	for i, entry := range ring.entries {
		if _, found := ring.lookupDigest(sha256.Sum256([]byte(entry.client))); found {
			return nil, fmt.Errorf("%s: the client name (not shown) is a configured key; "+
				"put the name before the key", ring.origins[i])
		}
	}
	return ring, nil
}

// add indexes one key, rejecting a key that another client already holds.
func (k *keyring) add(key resolvedKey) error {
	prefix := indexOf(key.digest)
	if i, found := k.index[prefix]; found {
		if k.entries[i].digest == key.digest {
			return fmt.Errorf("clients %s (%s) and %s (%s) have the same key; "+
				"every client needs its own key", showToken(k.entries[i].client),
				k.origins[i], showToken(key.client), key.origin)
		}
		// Two distinct SHA-256 digests that share 64 bits: possible in
		// theory, never seen in practice.
		return fmt.Errorf("the key of client %s (%s) collides with the key of client %s "+
			"in the first 8 bytes of its SHA-256 digest; generate a new key for the first",
			showToken(key.client), key.origin, showToken(k.entries[i].client))
	}
	k.index[prefix] = len(k.entries)
	k.origins = append(k.origins, key.origin)
	k.entries = append(k.entries, keyEntry{
		digest:         key.digest,
		client:         key.client,
		expires:        key.expires,
		allowed:        true,
		authentication: &authentication{digest: key.digest, client: key.client},
		clientID:       key.client,
	})
	return nil
}

// restrict allows only the named clients, or every client if names is
// empty. Every name must be a configured client.
func (k *keyring) restrict(names []string) error {
	if len(names) == 0 {
		return nil
	}
	allowed := make(map[string]bool, len(names))
	for _, name := range names {
		allowed[name] = true
	}

	for i := range k.entries {
		k.entries[i].allowed = allowed[k.entries[i].client]
		delete(allowed, k.entries[i].client)
	}
	for _, name := range names {
		if allowed[name] {
			return fmt.Errorf("allow names the client %s, which is not configured; "+
				"configured clients: %s", showToken(name), strings.Join(k.clientNames(), ", "))
		}
	}
	return nil
}

// lookup returns the entry of the client that holds key, and whether
// there is one.
func (k *keyring) lookup(key string) (*keyEntry, bool) {
	// Converting a key of more than 32 bytes to []byte allocates, but a
	// copy in a stack buffer does not for keys of up to 128 bytes.
	var buffer [128]byte
	return k.lookupDigest(sha256.Sum256(append(buffer[:0], key...)))
}

// lookupDigest returns the entry whose key has digest, and whether there
// is one.
func (k *keyring) lookupDigest(digest [sha256.Size]byte) (*keyEntry, bool) {
	candidate := &k.decoy
	i, found := k.index[indexOf(digest)]
	if found {
		candidate = &k.entries[i]
	}

	if subtle.ConstantTimeCompare(candidate.digest[:], digest[:]) != 1 || !found {
		return nil, false
	}
	return candidate, true
}

// clientNames returns the configured client names in config order.
func (k *keyring) clientNames() []string {
	names := make([]string, len(k.entries))
	for i, entry := range k.entries {
		names[i] = entry.client
	}
	return names
}

// indexOf returns the map index of a digest: its first 8 bytes.
func indexOf(digest [sha256.Size]byte) uint64 {
	return binary.BigEndian.Uint64(digest[:8])
}

// parseKey returns the SHA-256 digest that a resolved key stands for:
// the decoded digest of a "sha256:" key, or the digest of a secret.
func parseKey(key string) ([sha256.Size]byte, error) {
	var digest [sha256.Size]byte

	algorithm, hexDigest, found := strings.Cut(key, ":")
	if found && isDigestAlgorithm(algorithm) {
		if !strings.EqualFold(algorithm+":", digestPrefix) {
			return digest, fmt.Errorf("uses the digest algorithm %q; only %s "+
				"digests are supported, as printed by 'caddy api-key hash'",
				algorithm, strings.TrimSuffix(digestPrefix, ":"))
		}
		if len(hexDigest) != hex.EncodedLen(sha256.Size) {
			return digest, fmt.Errorf("is a SHA-256 digest of %d hex digits; "+
				"it must have %d", len(hexDigest), hex.EncodedLen(sha256.Size))
		}
		if _, err := hex.Decode(digest[:], []byte(hexDigest)); err != nil {
			return digest, errors.New("is a SHA-256 digest with a character that is " +
				"not a hex digit; copy the digest from 'caddy api-key hash'")
		}
		return digest, nil
	}

	if err := checkSecret(key); err != nil {
		return digest, err
	}
	return sha256.Sum256([]byte(key)), nil
}

// parseExpiry parses an RFC 3339 expiry time. Its error does not repeat
// the text unless it is clearly not a key.
func parseExpiry(text string) (time.Time, error) {
	expires, err := time.Parse(time.RFC3339, text)
	if err != nil {
		shown := strconv.Quote(text)
		if strings.Trim(text, "0123456789-:.+TZtz ") != "" {
			// Not made of a time's characters, so possibly a key.
			shown = showToken(text)
		}
		return time.Time{}, fmt.Errorf("expiry %s is not an RFC 3339 time; write it "+
			"like 2027-01-31T00:00:00Z", shown)
	}
	if expires.Unix() <= 0 {
		return time.Time{}, fmt.Errorf("expiry %s is before 1970; write a real time "+
			"like 2027-01-31T00:00:00Z, or leave the expiry out", text)
	}
	return expires, nil
}

// hasDigestPrefix reports whether key starts with "sha256:", in any case.
func hasDigestPrefix(key string) bool {
	return len(key) >= len(digestPrefix) && strings.EqualFold(key[:len(digestPrefix)], digestPrefix)
}

// isDigestAlgorithm reports whether name is a hash algorithm's name, so
// that a key such as "sha512:..." is rejected as an unsupported digest
// instead of being taken for a secret. Secrets from the recommended
// generators (base64, hex) never contain ':'.
func isDigestAlgorithm(name string) bool {
	switch strings.ToLower(name) {
	case "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha512-256",
		"sha3-256", "sha3-384", "sha3-512", "blake2b", "blake2s", "blake3",
		"bcrypt", "scrypt", "argon2", "argon2i", "argon2id", "pbkdf2":
		return true
	}
	return false
}

// checkSecret checks a plaintext key. Its errors complete a sentence whose
// subject is the key, and never contain the key.
func checkSecret(key string) error {
	if key == "" {
		return fmt.Errorf("is empty; set it to a secret of at least %d bytes",
			MinKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return errors.New("contains a space, a control character or a non-ASCII " +
				"byte, which a header value cannot carry reliably. Check the source " +
				"for stray whitespace or newlines, or generate a key with " +
				"'caddy api-key generate'")
		}
	}
	if len(key) < MinKeyLength {
		return fmt.Errorf("is shorter than %d bytes; generate a longer one with "+
			"'caddy api-key generate'", MinKeyLength)
	}
	return nil
}

// checkClientName rejects names that would be ambiguous or unsafe in logs,
// placeholders and header values. Its errors leave the name out, because
// a key written where the name belongs would otherwise be shown; callers
// add where the name was configured.
func checkClientName(name string) error {
	if name == "" {
		return errors.New("the client name is empty; write 'key <client> <key>'")
	}
	valid := len(name) <= maxClientNameLength
	for i := 0; i < len(name) && valid; i++ {
		c := name[i]
		valid = ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '.' || c == '_' || c == '-'
	}
	if !valid {
		return fmt.Errorf("the client name is invalid (not shown, in case it is a key): "+
			"use at most %d letters, digits, '.', '_' and '-', and put the name "+
			"before the key", maxClientNameLength)
	}
	if looksLikeKey(name) {
		return errors.New("the client name looks like a key (not shown): it mixes upper " +
			"and lower case letters and digits, or is a long hex string. Use a short " +
			"readable name such as mailserver, and put it before the key")
	}
	return nil
}

// looksLikeKey reports whether token has the shape of a generated secret,
// as 'caddy api-key generate', 'openssl rand -base64' or 'openssl rand
// -hex' print them: 20 or more characters that mix upper and lower case
// letters and digits, or 32 or more hex digits. Such a token is kept out
// of names and error messages, since it may be a key in the wrong place.
func looksLikeKey(token string) bool {
	var upper, lower, digit, nonHex bool
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case 'A' <= c && c <= 'Z':
			upper = true
			nonHex = nonHex || c > 'F'
		case 'a' <= c && c <= 'z':
			lower = true
			nonHex = nonHex || c > 'f'
		case '0' <= c && c <= '9':
			digit = true
		default:
			nonHex = true
		}
	}
	mixed := len(token) >= 20 && upper && lower && digit
	hexString := len(token) >= 32 && !nonHex
	return mixed || hexString
}

// showPath returns path for logs and errors. A path that starts with '/'
// or '.', or contains a placeholder, is shown as it is. Any other path that
// has the shape of a key is left out, since it may be a key written there.
func showPath(path string) string {
	if strings.HasPrefix(path, "/") || strings.HasPrefix(path, ".") ||
		strings.Contains(path, "{") || !looksLikeKey(path) {
		return path
	}
	return "(path not shown, in case it is a key)"
}

// showToken quotes a config token for an error message, unless the token
// would pass as a key: a token in the wrong place may be a secret.
func showToken(token string) string {
	if checkSecret(token) == nil || looksLikeKey(token) {
		return "(not shown, in case it is a key)"
	}
	return strconv.Quote(token)
}

// clientLabel names a client in an error about its key. When the key is a
// literal and the name would pass as a secret, the two may have been
// swapped, so the name is left out in case it is the key.
func clientLabel(name, rawKey string) string {
	swappable := len(placeholderNames(rawKey)) == 0 && checkSecret(name) == nil
	if swappable || looksLikeKey(name) {
		return "client (name not shown, in case name and key are swapped)"
	}
	return fmt.Sprintf("client %q", name)
}
