package apikey

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// maxKeysFileSize bounds the keys file that is read into memory. At about
// 100 bytes a line, 4 MiB holds some 40,000 keys.
const maxKeysFileSize = 4 << 20

// keysFile is a parsed keys file: its keys, and whether anyone may read it.
type keysFile struct {
	keys          []resolvedKey
	worldReadable bool

	// writable is true when users other than the owner may write it.
	writable bool
}

// readKeysFile reads a keys file: one "NAME KEY [EXPIRES]" entry a line,
// separated by spaces or tabs, where KEY is a secret or "sha256:" and a
// hex digest, and EXPIRES is an RFC 3339 time. Blank lines and lines that
// start with '#' are skipped. Errors name the file and the line, never a
// key.
func readKeysFile(path string) (*keysFile, error) {
	shownPath := showPath(path)

	// Stat before Open: opening a FIFO for reading would block the config
	// load until something writes to it.
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keys_file %s: %v; check the path and that the "+
			"Caddy process may read it", shownPath, unwrapPathError(err))
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("keys_file %s is not a regular file", shownPath)
	}

	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys_file %s: %v; check the path and that the "+
			"Caddy process may read it", shownPath, unwrapPathError(err))
	}
	defer file.Close()
	path = shownPath

	content, err := io.ReadAll(io.LimitReader(file, maxKeysFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("keys_file %s: reading: %v", path, unwrapPathError(err))
	}
	if len(content) > maxKeysFileSize {
		return nil, fmt.Errorf("keys_file %s is larger than %d MiB; split the clients "+
			"across api_key blocks or files", path, maxKeysFileSize>>20)
	}

	keys, err := parseKeysFile(path, content)
	if err != nil {
		return nil, err
	}
	return &keysFile{
		keys:          keys,
		worldReadable: info.Mode().Perm()&0o004 != 0,
		writable:      info.Mode().Perm()&0o022 != 0,
	}, nil
}

// parseKeysFile parses the content of the keys file at path.
func parseKeysFile(path string, content []byte) ([]resolvedKey, error) {
	var keys []resolvedKey
	scanner := bufio.NewScanner(bytes.NewReader(content))
	scanner.Buffer(make([]byte, 0, 4096), maxKeysFileSize)
	for lineNumber := 1; scanner.Scan(); lineNumber++ {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		origin := fmt.Sprintf("keys_file %s, line %d", path, lineNumber)

		fields := strings.Fields(line)
		if len(fields) < 2 || len(fields) > 3 {
			return nil, fmt.Errorf("%s: found %d fields; write 'NAME KEY' or "+
				"'NAME KEY EXPIRES', separated by spaces", origin, len(fields))
		}
		client := fields[0]
		if err := checkClientName(client); err != nil {
			return nil, fmt.Errorf("%s: %v", origin, err)
		}

		digest, err := parseKey(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s: the key of %s %v", origin, clientLabel(client, ""), err)
		}

		var expires time.Time
		if len(fields) == 3 {
			expires, err = parseExpiry(fields[2])
			if err != nil {
				// The field is not shown: it may be the second half of a
				// key that contains a space.
				return nil, fmt.Errorf("%s: %s: the third field is not an RFC 3339 "+
					"expiry time after 1970; write it like 2027-01-31T00:00:00Z",
					origin, clientLabel(client, ""))
			}
		}

		keys = append(keys, resolvedKey{
			client:  client,
			digest:  digest,
			expires: expires,
			origin:  origin,
			long:    isLongSecret(fields[1]),
		})
	}
	if err := scanner.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("keys_file %s has a line longer than %d MiB; "+
				"write one 'NAME KEY [EXPIRES]' entry a line", path, maxKeysFileSize>>20)
		}
		return nil, fmt.Errorf("keys_file %s: %v", path, err)
	}
	return keys, nil
}
