package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Phases of a rotation run. An odd phase is a reload in progress. It starts
// before the reload command runs and ends once the old config's listener
// is closed, so a connection dialed in an even phase reaches the config of
// that phase.
const (
	phaseOld     int32 = iota // only the old key is configured
	phaseReload1              // reloading from [old] to [old, new]
	phaseBoth                 // the old and the new key are configured
	phaseReload2              // reloading from [old, new] to [new]
	phaseNew                  // only the new key is configured
)

const (
	oldClient = "mailserver"
	newClient = "mailserver-next"

	// exampleKeyLine is the key line of Caddyfile.example that a rotation
	// test replaces with its own keys.
	exampleKeyLine = "key mailserver " + keyPlaceholder

	// rotationTimeLimit bounds the traffic of one rotation run.
	rotationTimeLimit = 20 * time.Second

	// maxRequestsPerSender bounds each sender's loop.
	maxRequestsPerSender = 20000

	// senderPause is the pause after each request of a sender. Without it,
	// the senders kept both CPUs of a 2-core machine busy, which slowed the
	// reload command, and one run dialed up to 20,000 connections.
	senderPause = time.Millisecond

	// phaseRequests is how many requests the senders complete in each
	// stable phase before the next step, so that every reload meets
	// traffic that started before it.
	phaseRequests = 150

	// switchedRequests is how many requests the switching sender completes
	// with the new key after each of the two reloads.
	switchedRequests = 20

	// oldKeySenders is the number of senders that only have the old key.
	oldKeySenders = 4

	// maxAttempts bounds the tries of a request that fails at the
	// connection level. Each retry uses a new connection.
	maxAttempts = 4

	// retryPause is the pause before a retry. Without it, about one retry
	// in 100 failed again, presumably because it reached the old server
	// just before its listener closed.
	retryPause = 10 * time.Millisecond

	// requestIDHeader carries a unique ID per attempt, so that the
	// upstream's record shows which attempts reached it.
	requestIDHeader = "X-Request-Id"

	// messageBody is the body of every request, a short mail message like
	// the ones the mail server posts to the scanner.
	messageBody = "From: sender@example.com\r\nSubject: scan me\r\n\r\nhello\r\n"
)

// keySet names the keys that one step of the rotation configures.
type keySet struct {
	old, new bool
}

// The configured keys of each step: [old], then [old, new], then [new].
var (
	stepOld  = keySet{old: true}
	stepBoth = keySet{old: true, new: true}
	stepNew  = keySet{new: true}
)

// keySource configures the keys of the rotation in one of the ways a
// Caddyfile can name them.
type keySource struct {
	// force is set when the Caddyfile stays the same and only a file that
	// it names changes, so that 'caddy reload' needs --force.
	force bool

	// configure writes the files of a step and returns the lines of the
	// api_key block that configure its keys.
	configure func(t *testing.T, step keySet) string
}

// filePlaceholderSource keeps each key in its own file and names the files
// with {file.*} placeholders in key lines, as with Docker secrets.
func filePlaceholderSource(t *testing.T, dir, oldKey, newKey string) keySource {
	t.Helper()
	oldFile := filepath.Join(dir, "old.key")
	newFile := filepath.Join(dir, "new.key")
	require.NoError(t, os.WriteFile(oldFile, []byte(oldKey+"\n"), 0o600))
	require.NoError(t, os.WriteFile(newFile, []byte(newKey+"\n"), 0o600))

	return keySource{
		configure: func(t *testing.T, step keySet) string {
			var lines []string
			if step.old {
				lines = append(lines, "key "+oldClient+" {file."+oldFile+"}")
			}
			if step.new {
				lines = append(lines, "key "+newClient+" {file."+newFile+"}")
			}
			return strings.Join(lines, "\n\t\t")
		},
	}
}

// keysFileSource lists the keys in a keys_file, the new one as its SHA-256
// digest, and rewrites the file at each step.
func keysFileSource(t *testing.T, dir, oldKey, newKey string) keySource {
	t.Helper()
	keysFile := filepath.Join(dir, "api_keys")
	newDigest := sha256.Sum256([]byte(newKey))

	return keySource{
		force: true,
		configure: func(t *testing.T, step keySet) string {
			content := "# client key\n"
			if step.old {
				content += oldClient + " " + oldKey + "\n"
			}
			if step.new {
				content += newClient + "\tsha256:" + hex.EncodeToString(newDigest[:]) + "\n"
			}
			// A rename replaces the file at once, as an operator should.
			staged := keysFile + ".new"
			require.NoError(t, os.WriteFile(staged, []byte(content), 0o600))
			require.NoError(t, os.Rename(staged, keysFile))
			return "keys_file " + keysFile
		},
	}
}

// TestRotationUnderLoad rotates the mail server's key from [old] through
// [old, new] to [new] with 'caddy reload' while four senders post with the
// old key, two over kept-alive connections and two with a new connection
// per request. A fifth sender moves to the new key once [old, new] is
// active. Requests with the old key that end before the last reload get
// 200, those sent after it get 401, those in between get either, and no
// request gets a 5xx. A sender with the old key stops at its first 401, as
// a client with a revoked key should, which also keeps the rejections of a
// run far below what the handler's failure throttle allows.
//
// A reload starts the new config on a second SO_REUSEPORT listener and
// then shuts the old server down. Requests that reach the old server after
// that fail with a connection reset or an EOF. The kernel resets
// connections still queued on the closed listener, and net/http closes
// idle connections and drops any request it reads after shutdown began.
// The test asserts that every such failure comes before any response byte,
// on a connection that a reload overtook, for a request that never reached
// the upstream, so that a retry is safe. It also asserts that a retry on a
// new connection gets a response.
func TestRotationUnderLoad(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skipf("needs /proc/net/tcp to see when the old config's listener is closed: %v", err)
	}

	tests := []struct {
		name      string
		newSource func(t *testing.T, dir, oldKey, newKey string) keySource
	}{
		{name: "FilePlaceholder", newSource: filePlaceholderSource},
		{name: "KeysFile", newSource: keysFileSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldKey, newKey := randomKey(t), randomKey(t)
			source := tt.newSource(t, t.TempDir(), oldKey, newKey)
			keyLines := source.configure(t, stepOld)
			example := readExample(t)
			caddyfile := strings.Replace(example, exampleKeyLine, keyLines, 1)
			require.NotEqual(t, example, caddyfile,
				"Caddyfile.example has no line %q", exampleKeyLine)
			g := startGateway(t, gatewayOptions{caddyfile: caddyfile})
			config, err := os.ReadFile(g.configFile)
			require.NoError(t, err)

			run := newRotationRun(t, g, oldKey, newKey, string(config), keyLines)
			run.start()
			run.waitForRequests(t, phaseRequests)

			run.reload(t, source, stepBoth, phaseReload1, phaseBoth)
			resp := run.probe(t, newKey)
			require.Equal(t, http.StatusOK, resp.StatusCode,
				"the new key is not accepted after the reload to [old, new]")
			run.switchKey()
			run.waitForSwitchedRequests(t, switchedRequests)
			run.waitForRequests(t, phaseRequests)

			run.reload(t, source, stepNew, phaseReload2, phaseNew)
			run.waitForRejectedSenders(t, oldKeySenders)
			run.waitForSwitchedRequests(t, switchedRequests)
			run.stop()

			resp = run.probe(t, oldKey)
			assertRejected(t, resp)
			resp = run.probe(t, newKey)
			assert.Equal(t, http.StatusOK, resp.StatusCode)

			run.check(t, g.upstream.take())
		})
	}
}

// rotationRun drives the senders of one rotation and records every
// attempt.
type rotationRun struct {
	gateway  *gateway
	oldKey   string
	newKey   string
	url      string
	deadline time.Time

	// config is the running Caddyfile, and keyLines its key lines.
	config   string
	keyLines string

	phase atomic.Int32

	// switched makes the switching sender use the new key.
	switched atomic.Bool

	// completed counts finished requests, with or without a response, and
	// switchedCompleted those of the switching sender with the new key.
	completed         atomic.Int64
	switchedCompleted atomic.Int64

	// rejectedSenders counts the senders that stopped after their first
	// 401.
	rejectedSenders atomic.Int64

	// probes numbers the requests sent by probe.
	probes int

	stopOnce sync.Once
	stopping chan struct{}
	senders  sync.WaitGroup

	mu       sync.Mutex
	attempts []attempt
}

// newRotationRun prepares the senders for a gateway that runs config, whose
// api_key block configures its keys with keyLines.
func newRotationRun(t *testing.T, g *gateway, oldKey, newKey, config,
	keyLines string,
) *rotationRun {
	t.Helper()
	run := &rotationRun{
		gateway:  g,
		oldKey:   oldKey,
		newKey:   newKey,
		config:   config,
		keyLines: keyLines,
		url:      g.baseURL + "/scanner/scan/",
		deadline: time.Now().Add(rotationTimeLimit),
		stopping: make(chan struct{}),
	}
	t.Cleanup(run.stop)
	return run
}

// sender is one client of the gateway that sends requests in a loop.
type sender struct {
	name string

	// kind groups the senders in the logged counts.
	kind string

	// client sends the first attempt of each request, and retryClient
	// sends the retries, each on a new connection.
	client      *http.Client
	retryClient *http.Client

	// switches is set for the sender that moves to the new key.
	switches bool
}

// start launches the senders.
func (r *rotationRun) start() {
	retryClient := r.newClient(false)
	senders := []*sender{
		{name: "keepalive-1", kind: "keep-alive", client: r.newClient(true)},
		{name: "keepalive-2", kind: "keep-alive", client: r.newClient(true)},
		{name: "newconn-1", kind: "new connections", client: r.newClient(false)},
		{name: "newconn-2", kind: "new connections", client: r.newClient(false)},
		{
			name: "switching", kind: "switching, keep-alive",
			client: r.newClient(true), switches: true,
		},
	}
	for _, s := range senders {
		s.retryClient = retryClient
		r.senders.Add(1)
		go r.runSender(s)
	}
}

// stop ends the senders and waits for their last requests. It may be
// called more than once.
func (r *rotationRun) stop() {
	r.stopOnce.Do(func() {
		close(r.stopping)
		r.senders.Wait()
	})
}

// phaseConn is a connection to the gateway and the phase it was dialed in.
type phaseConn struct {
	net.Conn
	phase int32
}

// newClient returns a client that marks each connection with the phase it
// was dialed in. Without keepAlive, each request gets a new connection.
func (r *rotationRun) newClient(keepAlive bool) *http.Client {
	dialer := &net.Dialer{Timeout: requestTimeout}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			phase := r.phase.Load()
			conn, err := dialer.DialContext(ctx, network, r.gateway.siteAddress)
			if err != nil {
				return nil, err
			}
			return &phaseConn{Conn: conn, phase: phase}, nil
		},
		DisableKeepAlives: !keepAlive,
	}
	return &http.Client{Transport: transport, Timeout: requestTimeout}
}

func (r *rotationRun) runSender(s *sender) {
	defer r.senders.Done()
	defer s.client.CloseIdleConnections()

	for n := 0; n < maxRequestsPerSender && time.Now().Before(r.deadline); n++ {
		select {
		case <-r.stopping:
			return
		default:
		}

		keyName, key := "old", r.oldKey
		if s.switches && r.switched.Load() {
			keyName, key = "new", r.newKey
		}
		status := 0
		for number := 1; number <= maxAttempts; number++ {
			client := s.client
			if number > 1 {
				client = s.retryClient
				time.Sleep(retryPause)
			}
			requestID := fmt.Sprintf("%s-%d-%d", s.name, n, number)
			result := r.send(client, requestID, keyName, key)
			result.senderKind = s.kind
			result.number = number

			r.mu.Lock()
			r.attempts = append(r.attempts, result)
			r.mu.Unlock()
			if result.err == nil {
				status = result.status
				break
			}
		}

		r.completed.Add(1)
		if keyName == "new" {
			r.switchedCompleted.Add(1)
		}
		if !s.switches && status == http.StatusUnauthorized {
			r.rejectedSenders.Add(1)
			return
		}
		time.Sleep(senderPause)
	}
}

// attempt is one try at sending a request, and its outcome.
type attempt struct {
	requestID  string
	senderKind string
	keyName    string

	// number is 1 for the first try of a request.
	number int

	// startPhase and endPhase are the phases when the attempt was sent and
	// when its response or error was received.
	startPhase int32
	endPhase   int32

	// connPhase is the phase in which the attempt's connection was dialed,
	// or startPhase if it got none.
	connPhase int32

	reusedConn bool

	// connections is how many connections the transport used. More than
	// one means that net/http retried the request by itself.
	connections int32

	firstByte bool
	status    int
	err       error
}

// send posts one message with key and reads the whole response.
func (r *rotationRun) send(client *http.Client, requestID, keyName, key string) attempt {
	result := attempt{requestID: requestID, keyName: keyName, startPhase: r.phase.Load()}

	// The transport calls these hooks from its own goroutines.
	var connections atomic.Int32
	var connPhase atomic.Int32
	var reused, firstByte atomic.Bool
	connPhase.Store(result.startPhase)
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			connections.Add(1)
			reused.Store(info.Reused)
			if conn, ok := info.Conn.(*phaseConn); ok {
				connPhase.Store(conn.phase)
			}
		},
		GotFirstResponseByte: func() { firstByte.Store(true) },
	}
	ctx := httptrace.WithClientTrace(context.Background(), trace)

	body := strings.NewReader(messageBody)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, body)
	if err == nil {
		req.Header.Set("X-Api-Key", key)
		req.Header.Set(requestIDHeader, requestID)
		var resp *http.Response
		resp, err = client.Do(req)
		if err == nil {
			result.status = resp.StatusCode
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	result.err = err
	result.endPhase = r.phase.Load()
	result.connPhase = connPhase.Load()
	result.reusedConn = reused.Load()
	result.connections = connections.Load()
	result.firstByte = firstByte.Load()
	return result
}

// waitForRequests waits until the senders complete count more requests.
func (r *rotationRun) waitForRequests(t *testing.T, count int64) {
	t.Helper()
	r.waitUntil(t, &r.completed, r.completed.Load()+count, "requests")
}

// waitForSwitchedRequests waits until the switching sender completes
// count more requests with the new key.
func (r *rotationRun) waitForSwitchedRequests(t *testing.T, count int64) {
	t.Helper()
	r.waitUntil(t, &r.switchedCompleted, r.switchedCompleted.Load()+count,
		"requests with the new key")
}

// waitForRejectedSenders waits until count senders have stopped after a
// 401.
func (r *rotationRun) waitForRejectedSenders(t *testing.T, count int64) {
	t.Helper()
	r.waitUntil(t, &r.rejectedSenders, count, "senders stopped by a 401")
}

// waitUntil waits until counter reaches target, and fails the test if it
// does not before the run's deadline.
func (r *rotationRun) waitUntil(t *testing.T, counter *atomic.Int64, target int64,
	description string,
) {
	t.Helper()
	for counter.Load() < target {
		require.True(t, time.Now().Before(r.deadline),
			"the senders reached %d of %d %s within %v", counter.Load(), target, description,
			rotationTimeLimit)
		time.Sleep(5 * time.Millisecond)
	}
}

// switchKey moves the switching sender to the new key.
func (r *rotationRun) switchKey() {
	r.switched.Store(true)
}

// reload loads the step's keys with 'caddy reload' and waits until the old
// config's listener is closed. The phase is reloading from before the
// command runs until then, and next afterwards.
func (r *rotationRun) reload(t *testing.T, source keySource, step keySet, reloading, next int32) {
	t.Helper()
	r.phase.Store(reloading)

	keyLines := source.configure(t, step)
	config := strings.Replace(r.config, r.keyLines, keyLines, 1)
	configFile := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(configFile, []byte(config), 0o600))
	args := []string{"reload", "--config", configFile, "--adapter", "caddyfile",
		"--address", r.gateway.adminAddress}
	if source.force {
		args = append(args, "--force")
	}

	result := runCaddy(t, r.gateway.dirs.home, r.gateway.env, args...)
	require.Zero(t, result.exitCode, "caddy reload failed; output:\n%s", result.output())
	r.config, r.keyLines = config, keyLines

	r.waitForOneListener(t)
	r.phase.Store(next)
}

// waitForOneListener waits until a single socket listens on the site's
// port. A reload opens the new config's listener before it shuts the old
// server down, so from then on every new connection reaches the new config.
func (r *rotationRun) waitForOneListener(t *testing.T) {
	t.Helper()
	_, portText, err := net.SplitHostPort(r.gateway.siteAddress)
	require.NoError(t, err)
	port, err := strconv.Atoi(portText)
	require.NoError(t, err)

	deadline := time.Now().Add(stopTimeout)
	for {
		count := listeningSockets(t, port)
		if count == 1 {
			return
		}
		require.True(t, time.Now().Before(deadline),
			"%d sockets still listen on port %d %v after the reload", count, port, stopTimeout)
		time.Sleep(5 * time.Millisecond)
	}
}

// listeningSockets returns how many TCP sockets listen on port, from
// /proc/net/tcp and /proc/net/tcp6.
func listeningSockets(t *testing.T, port int) int {
	t.Helper()
	count := 0
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		tableCount, err := countListeners(table, port)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		count += tableCount
	}
	return count
}

// countListeners counts the sockets that listen on port in a table with
// the format of /proc/net/tcp. It stops at the first socket that is not
// listening, because the kernel generates the table on demand, and after
// repeated runs tens of thousands of connections in TIME_WAIT made each
// full read take up to a second. NOTE: this relies on Linux listing every
// listening socket before the other sockets, as tcp_seq_next in
// net/ipv4/tcp_ipv4.c does (checked on Linux 6.18).
func countListeners(table string, port int) (int, error) {
	const stateListen = "0A"
	wantPort := fmt.Sprintf("%04X", port)

	file, err := os.Open(table)
	if err != nil {
		return 0, err
	}
	defer file.Close()

	// Each line after the heading starts with "sl local_address
	// rem_address st", and an address ends in ":" and the hex port.
	count := 0
	lines := bufio.NewScanner(file)
	lines.Scan()
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) < 4 {
			continue
		}
		if fields[3] != stateListen {
			break
		}
		localPort := fields[1][strings.LastIndexByte(fields[1], ':')+1:]
		if localPort == wantPort {
			count++
		}
	}
	return count, lines.Err()
}

// probe posts one message with key on a new connection.
func (r *rotationRun) probe(t *testing.T, key string) response {
	t.Helper()
	r.probes++
	header := http.Header{
		"X-Api-Key":     {key},
		requestIDHeader: {"probe-" + strconv.Itoa(r.probes)},
	}
	return r.gateway.send(t, r.gateway.client(t, false), http.MethodPost, "/scanner/scan/",
		header, messageBody)
}

// violations collects the breaches of each checked condition, keeping a
// few examples.
type violations struct {
	count    map[string]int
	examples map[string][]string
}

func (v *violations) add(condition, format string, args ...any) {
	v.count[condition]++
	if len(v.examples[condition]) < 5 {
		v.examples[condition] = append(v.examples[condition], fmt.Sprintf(format, args...))
	}
}

// The conditions that check asserts.
const (
	oldKeyRejectedBeforeReload2 = "old key without 200 in a request that ended before reload 2"
	oldKeyAcceptedAfterReload2  = "old key without 401 in a request sent after reload 2"
	oldKeyUnexpectedStatus      = "old key with a status other than 200 or 401"
	newKeyRejected              = "new key without 200"
	serverError                 = "5xx response"
	unknownFailure              = "failure that is not a reset, an EOF or a closed idle connection"
	failureAfterFirstByte       = "failure after the first response byte"
	failureOnStableConnection   = "failure on a connection that no reload overtook"
	failedAttemptForwarded      = "failed attempt that reached the upstream"
	lostRequest                 = "request without a response after all attempts"
	admittedNotForwardedOnce    = "200 response whose request did not reach the upstream exactly once"
	rejectedForwarded           = "401 response whose request reached the upstream"
	wrongClientName             = "forwarded request with the wrong client name"
	keyForwarded                = "forwarded request with the key header"
)

// check asserts the outcome of every attempt against the phases and the
// upstream's record, and logs the counts.
func (r *rotationRun) check(t *testing.T, forwarded []recordedRequest) {
	t.Helper()
	found := violations{count: map[string]int{}, examples: map[string][]string{}}

	sent := make(map[string]attempt, len(r.attempts))
	for _, a := range r.attempts {
		sent[a.requestID] = a
	}
	forwardedCount := map[string]int{}
	for _, seen := range forwarded {
		requestID := seen.Header.Get(requestIDHeader)
		forwardedCount[requestID]++
		if len(seen.Header.Values("X-Api-Key")) > 0 {
			found.add(keyForwarded, "%s", requestID)
		}

		// The probes' requests are not in the record.
		a, recorded := sent[requestID]
		if !recorded {
			continue
		}
		wantClient := oldClient
		if a.keyName == "new" {
			wantClient = newClient
		}
		if got := seen.Header.Get("X-Api-Client"); got != wantClient {
			found.add(wrongClientName, "%s: %q", requestID, got)
		}
	}

	statuses := map[string]int{}
	failures := map[string]int{}
	lastAttempt := map[string]attempt{}
	transportRetries := 0
	for _, a := range r.attempts {
		request := strings.TrimSuffix(a.requestID, "-"+strconv.Itoa(a.number))
		lastAttempt[request] = a
		if a.connections > 1 {
			transportRetries += int(a.connections) - 1
		}

		if a.err != nil {
			failures[describeFailure(a)]++
			r.checkFailure(&found, a, forwardedCount[a.requestID])
			continue
		}
		statuses[describeStatus(a)]++
		r.checkStatus(&found, a, forwardedCount[a.requestID])
	}

	retried := 0
	for _, a := range lastAttempt {
		if a.number > 1 {
			retried++
		}
		if a.err != nil {
			found.add(lostRequest, "%s: %v", a.requestID, a.err)
		}
	}

	t.Logf("%d requests in %d attempts; %d requests retried by their sender, %d by net/http itself",
		len(lastAttempt), len(r.attempts), retried, transportRetries)
	t.Logf("HTTP responses: %s", formatCounts(statuses))
	t.Logf("connection-level failures: %s", formatCounts(failures))

	conditions := []string{
		oldKeyRejectedBeforeReload2, oldKeyAcceptedAfterReload2, oldKeyUnexpectedStatus,
		newKeyRejected, serverError, unknownFailure, failureAfterFirstByte,
		failureOnStableConnection, failedAttemptForwarded, lostRequest,
		admittedNotForwardedOnce, rejectedForwarded, wrongClientName, keyForwarded,
	}
	for _, condition := range conditions {
		assert.Zero(t, found.count[condition], "%s, for example: %q",
			condition, found.examples[condition])
	}
}

// checkStatus checks an attempt that got a response.
func (r *rotationRun) checkStatus(found *violations, a attempt, forwarded int) {
	if a.status >= 500 {
		found.add(serverError, "%s: %d", a.requestID, a.status)
	}
	// A request sent after reload 2 may still use a connection to the
	// [old, new] server, but that server began shutting down before the
	// phase changed. NOTE: the 401 rule relies on net/http (Go 1.26,
	// (*conn).serve) closing the connection instead of serving a request
	// that it reads after shutdown began.
	switch {
	case a.keyName == "new" && a.status != http.StatusOK:
		found.add(newKeyRejected, "%s: %d", a.requestID, a.status)
	case a.keyName == "old" && a.status != http.StatusOK && a.status != http.StatusUnauthorized:
		found.add(oldKeyUnexpectedStatus, "%s: %d", a.requestID, a.status)
	case a.keyName == "old" && a.endPhase <= phaseBoth && a.status != http.StatusOK:
		found.add(oldKeyRejectedBeforeReload2, "%s: %d", a.requestID, a.status)
	case a.keyName == "old" && a.startPhase >= phaseNew && a.status != http.StatusUnauthorized:
		found.add(oldKeyAcceptedAfterReload2, "%s: %d", a.requestID, a.status)
	}

	switch {
	case a.status == http.StatusOK && forwarded != 1:
		found.add(admittedNotForwardedOnce, "%s: forwarded %d times", a.requestID, forwarded)
	case a.status == http.StatusUnauthorized && forwarded != 0:
		found.add(rejectedForwarded, "%s: forwarded %d times", a.requestID, forwarded)
	}
}

// checkFailure checks an attempt that failed at the connection level.
func (r *rotationRun) checkFailure(found *violations, a attempt, forwarded int) {
	if failureKind(a.err) == "" {
		found.add(unknownFailure, "%s: %v", a.requestID, a.err)
	}
	if a.firstByte {
		found.add(failureAfterFirstByte, "%s: %v", a.requestID, a.err)
	}
	// A connection dialed in a stable phase reaches that phase's config,
	// which keeps serving until the next reload starts.
	if a.connPhase%2 == 0 && a.endPhase == a.connPhase {
		found.add(failureOnStableConnection, "%s in phase %d: %v", a.requestID, a.endPhase, a.err)
	}
	if forwarded != 0 {
		found.add(failedAttemptForwarded, "%s: forwarded %d times: %v",
			a.requestID, forwarded, a.err)
	}
}

// failureKind names a connection-level failure, or returns "" for any
// other error.
func failureKind(err error) string {
	switch {
	// net/http returns this unexported error when the server closes a
	// kept-alive connection that a request was about to use.
	case strings.Contains(err.Error(), "server closed idle connection"):
		return "server closed idle connection"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	}
	return ""
}

// describeFailure groups a failed attempt by kind, connection and reload.
func describeFailure(a attempt) string {
	kind := failureKind(a.err)
	if kind == "" {
		kind = "other"
	}
	conn := "new connection"
	switch {
	case a.connections == 0:
		conn = "dial"
	case a.reusedConn:
		conn = "reused connection"
	}
	reload := "reload 1"
	if a.endPhase >= phaseReload2 {
		reload = "reload 2"
	}
	return fmt.Sprintf("%s on %s (%s, %s)", kind, conn, a.senderKind, reload)
}

// describeStatus groups a response by key, by when it was sent relative to
// the last reload, and by status.
func describeStatus(a attempt) string {
	when := "during reload 2"
	switch {
	case a.keyName == "new":
		when = "after the switch"
	case a.endPhase <= phaseBoth:
		when = "before reload 2"
	case a.startPhase >= phaseNew:
		when = "after reload 2"
	}
	return fmt.Sprintf("%s key %s: %d", a.keyName, when, a.status)
}

// formatCounts formats counts as "name=count" pairs in name order.
func formatCounts(counts map[string]int) string {
	if len(counts) == 0 {
		return "none"
	}
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s=%d", name, counts[name])
	}
	return strings.Join(parts, "; ")
}
