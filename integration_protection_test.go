package apikey

// Integration tests of throttling, rate limits and metrics. Like those in
// integration_test.go, they run Caddy in this test process on the fixed
// ports that caddytest expects.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddyserver/caddy/v2"
)

// clientFrom returns an HTTP/1.1 client whose connections start from the
// loopback address source and go to 127.0.0.1, whatever the URL's host.
// Linux accepts any address of 127.0.0.0/8 as a source on the loopback
// interface, so Caddy takes source as the client address.
func clientFrom(source string) *http.Client {
	dialer := &net.Dialer{
		Timeout:   5 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)},
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
		DisableKeepAlives: true,
	}
	return newClientWith(transport)
}

// response is what the protection tests read of a response.
type response struct {
	status     int
	retryAfter string
	challenge  string
}

// get sends one GET request with the given key, none if key is empty, and
// extra headers. It returns an error instead of failing the test, so
// that it may run outside the test's goroutine.
func get(client *http.Client, url, key string, headers map[string]string) (response, error) {
	request, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	if key != "" {
		request.Header.Set("X-Api-Key", key)
	}
	for name, value := range headers {
		request.Header.Set(name, value)
	}

	resp, err := client.Do(request)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return response{
		status:     resp.StatusCode,
		retryAfter: resp.Header.Get("Retry-After"),
		challenge:  resp.Header.Get("Www-Authenticate"),
	}, nil
}

// mustGet is get for the test's own goroutine.
func mustGet(t *testing.T, client *http.Client, key string, headers map[string]string) response {
	t.Helper()
	got, err := get(client, "http://localhost:9080/scanner/scan", key, headers)
	require.NoError(t, err)
	return got
}

// assertRetryAfter checks that a Retry-After value is a whole number of
// seconds from 1 to max.
func assertRetryAfter(t *testing.T, value string, max int, msgAndArgs ...any) {
	t.Helper()
	seconds, err := strconv.Atoi(value)
	if assert.NoError(t, err, msgAndArgs...) {
		assert.GreaterOrEqual(t, seconds, 1, msgAndArgs...)
		assert.LessOrEqual(t, seconds, max, msgAndArgs...)
	}
}

// throttleSite is a site that throttles an address after 5 failures.
const throttleSite = `http://localhost:9080 {
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
		client_header X-Api-Client
		max_failures 5 1m
	}
}
`

// TestIntegrationFlood floods the server with wrong keys from 127.0.0.2
// while a legitimate client keeps calling from 127.0.0.1. The flood must
// get 401 up to the limit and 429 afterwards, the legitimate client only
// 200, and the upstream only the legitimate requests.
func TestIntegrationFlood(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(throttleSite, up.address())))
	const floodRequests, legitimateRequests = 100, 40
	attacker := clientFrom("127.0.0.2")
	legitimate := clientFrom("127.0.0.1")

	flood := make([]response, floodRequests)
	floodErrors := make([]error, floodRequests)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range floodRequests {
			key := fmt.Sprintf("wrong-key-%06d-0123456789", i)
			flood[i], floodErrors[i] = get(attacker, "http://localhost:9080/scanner/scan", key, nil)
		}
	}()
	legitimateStatuses := make([]int, legitimateRequests)
	for i := range legitimateRequests {
		got, err := get(legitimate, "http://localhost:9080/scanner/scan", mailKey, nil)
		if assert.NoError(t, err, "legitimate request %d", i+1) {
			legitimateStatuses[i] = got.status
		}
	}
	wg.Wait()

	for i, got := range flood {
		if floodErrors[i] != nil {
			t.Errorf("flood request %d: %v", i+1, floodErrors[i])
			continue
		}
		if i < 5 {
			assert.Equal(t, http.StatusUnauthorized, got.status, "flood request %d", i+1)
			assert.NotEmpty(t, got.challenge, "flood request %d", i+1)
			continue
		}
		assert.Equal(t, http.StatusTooManyRequests, got.status, "flood request %d", i+1)
		assertRetryAfter(t, got.retryAfter, 60, "flood request %d", i+1)
	}
	for i, status := range legitimateStatuses {
		assert.Equal(t, http.StatusOK, status, "legitimate request %d", i+1)
	}
	requests := up.received()
	assert.Len(t, requests, legitimateRequests, "the upstream saw other than the legitimate requests")
	for _, request := range requests {
		assert.Equal(t, []string{"mailserver"}, request.Header.Values("X-Api-Client"))
	}
}

// TestIntegrationThrottleValidKeyAfterFlood checks that once throttled, an
// address is turned away even when it sends the valid key.
func TestIntegrationThrottleValidKeyAfterFlood(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	startCaddy(t, caddyfileWith("", fmt.Sprintf(throttleSite, up.address())))
	attacker := clientFrom("127.0.0.2")
	for i := range 5 {
		got := mustGet(t, attacker, scannerKey, nil)
		require.Equal(t, http.StatusUnauthorized, got.status, "failure %d", i+1)
	}

	got := mustGet(t, attacker, mailKey, nil)

	assert.Equal(t, http.StatusTooManyRequests, got.status)
	assertRetryAfter(t, got.retryAfter, 60)
	assert.Empty(t, got.challenge)
	assert.Empty(t, up.received())
}

// TestIntegrationThrottleTrustedProxy runs behind a trusted proxy on
// 127.0.0.1 that names the client in X-Forwarded-For. Throttling must
// apply to the forwarded addresses, each on its own, and not to the
// proxy. A client that is not a trusted proxy cannot escape throttling by
// forging the header.
func TestIntegrationThrottleTrustedProxy(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	up := startUpstream(t)
	servers := "\tservers {\n" +
		"\t\ttrusted_proxies static 127.0.0.1/32\n" +
		"\t\tclient_ip_headers X-Forwarded-For\n" +
		"\t}\n"
	startCaddy(t, caddyfileWith(servers, fmt.Sprintf(throttleSite, up.address())))
	proxy := clientFrom("127.0.0.1")
	untrusted := clientFrom("127.0.0.2")
	first := map[string]string{"X-Forwarded-For": "203.0.113.7"}
	second := map[string]string{"X-Forwarded-For": "203.0.113.8"}

	for i := range 5 {
		got := mustGet(t, proxy, scannerKey, first)
		require.Equal(t, http.StatusUnauthorized, got.status, "failure %d of the first client", i+1)
	}
	firstThrottled := mustGet(t, proxy, mailKey, first)
	for i := range 4 {
		got := mustGet(t, proxy, scannerKey, second)
		require.Equal(t, http.StatusUnauthorized, got.status, "failure %d of the second client", i+1)
	}
	secondBeforeLimit := mustGet(t, proxy, mailKey, second)
	secondFifth := mustGet(t, proxy, scannerKey, second)
	secondThrottled := mustGet(t, proxy, mailKey, second)
	proxyItself := mustGet(t, proxy, mailKey, nil)
	for i := range 5 {
		forged := map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i+1)}
		got := mustGet(t, untrusted, scannerKey, forged)
		require.Equal(t, http.StatusUnauthorized, got.status, "failure %d of the untrusted client", i+1)
	}
	untrustedThrottled := mustGet(t, untrusted, mailKey,
		map[string]string{"X-Forwarded-For": "198.51.100.99"})

	assert.Equal(t, http.StatusTooManyRequests, firstThrottled.status, "first client")
	assertRetryAfter(t, firstThrottled.retryAfter, 60)
	assert.Equal(t, http.StatusOK, secondBeforeLimit.status, "second client after 4 failures")
	assert.Equal(t, http.StatusUnauthorized, secondFifth.status, "fifth failure of the second client")
	assert.Equal(t, http.StatusTooManyRequests, secondThrottled.status, "second client")
	assert.Equal(t, http.StatusOK, proxyItself.status, "the proxy's own address was throttled")
	assert.Equal(t, http.StatusTooManyRequests, untrustedThrottled.status,
		"a forged X-Forwarded-For from an untrusted client escaped throttling")
	assert.Len(t, up.received(), 2)
}

// TestIntegrationRateLimitReload sends requests over a client's rate
// limit, then reloads the config: a reload that keeps the limit keeps the
// empty bucket, and one that changes it starts a full one. The limit
// refills one request every 20 minutes, which is far longer than the test
// runs.
func TestIntegrationRateLimitReload(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	t.Setenv("APIKEY_IT_SCANNER", scannerKey)
	up := startUpstream(t)
	configWith := func(extraLines string) string {
		return caddyfileWith("", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key /scanner/* {
		key mailserver {env.APIKEY_IT_MAIL}
%s	}
}
`, up.address(), extraLines))
	}
	client := newClient()
	oldLimit := RateLimit{Client: "mailserver", Requests: 3, Interval: caddy.Duration(time.Hour), Burst: 3}
	references := func() int {
		count, _ := rateLimiters.References(oldLimit.poolKey("mailserver", sha256.Sum256([]byte(mailKey))))
		return count
	}
	statuses := func(count int) []int {
		var got []int
		for range count {
			got = append(got, mustGet(t, client, mailKey, nil).status)
		}
		return got
	}

	startCaddy(t, configWith("\t\trate mailserver 3/h\n"))
	first := statuses(4)
	overLimit := mustGet(t, client, mailKey, nil)
	referencesFirst := references()
	startCaddy(t, configWith("\t\tkey scanner {env.APIKEY_IT_SCANNER}\n\t\trate mailserver 3/h\n"))
	sameLimit := mustGet(t, client, mailKey, nil)
	referencesSame := references()
	startCaddy(t, configWith("\t\trate mailserver 4/h\n"))
	changedLimit := statuses(5)
	referencesChanged := references()

	assert.Equal(t, []int{200, 200, 200, 429}, first)
	assert.Equal(t, http.StatusTooManyRequests, overLimit.status)
	assertRetryAfter(t, overLimit.retryAfter, 1200)
	assert.Equal(t, 1, referencesFirst)
	assert.Equal(t, http.StatusTooManyRequests, sameLimit.status,
		"a reload that kept the limit refilled the bucket")
	assert.Equal(t, 1, referencesSame, "the old config's reference was not released")
	assert.Equal(t, []int{200, 200, 200, 200, 429}, changedLimit)
	assert.Zero(t, referencesChanged, "the bucket of the old limit is still in the pool")
	assert.Len(t, up.received(), 7)
}

// waitForOldAdmin waits until at most one socket listens on the admin port
// 2999, so that a request after a config load reaches the new admin
// server, which Caddy starts beside the old one before stopping that.
func waitForOldAdmin(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		count, err := countSockets([]string{"/proc/net/tcp", "/proc/net/tcp6"}, 2999, "0A")
		if err != nil {
			t.Logf("cannot count sockets, so a scrape may reach the previous admin server: %v", err)
			return
		}
		if count <= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets still on port 2999 after 5 s", count)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrape reads the admin endpoint's /metrics. It returns the samples of
// caddy_api_key_requests_total keyed by "<client>/<result>", and the
// label values of those samples.
func scrape(t *testing.T) (map[string]float64, []string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://localhost:2999/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	counts := make(map[string]float64)
	var labelValues []string
	typed := false
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "# TYPE "+requestsMetric+" counter" {
			typed = true
		}
		labels, found := strings.CutPrefix(line, requestsMetric+"{")
		if !found {
			continue
		}
		labels, value, found := strings.Cut(labels, "} ")
		require.True(t, found, "malformed sample %q", line)
		sample := map[string]string{}
		for _, pair := range strings.Split(labels, ",") {
			name, quoted, found := strings.Cut(pair, "=")
			require.True(t, found, "malformed label %q in %q", pair, line)
			unquoted, err := strconv.Unquote(quoted)
			require.NoError(t, err, "label %q in %q", pair, line)
			sample[name] = unquoted
			labelValues = append(labelValues, unquoted)
		}
		number, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err, "value of %q", line)
		counts[sample["client"]+"/"+sample["result"]] = number
	}
	require.NoError(t, scanner.Err())
	if len(counts) > 0 {
		assert.True(t, typed, "no TYPE line for %s", requestsMetric)
	}
	return counts, labelValues
}

// TestIntegrationMetrics scrapes the admin endpoint before and after
// requests, then reloads the config and checks that the counter still
// counts. Label values may contain neither a key nor a value the client
// chose.
func TestIntegrationMetrics(t *testing.T) {
	t.Setenv("APIKEY_IT_MAIL", mailKey)
	t.Setenv("APIKEY_IT_SCANNER", scannerKey)
	up := startUpstream(t)
	configWith := func(keyLines string) string {
		return caddyfileWith("\tmetrics\n", fmt.Sprintf(`http://localhost:9080 {
	reverse_proxy %s
	api_key /scanner/* {
%s		client_header X-Api-Client
	}
}
`, up.address(), keyLines))
	}
	mailLine := "\t\tkey mailserver {env.APIKEY_IT_MAIL}\n"
	scannerLine := "\t\tkey scanner {env.APIKEY_IT_SCANNER}\n"
	const wrongKey = "wrong-Kq7Vn2Xc9Bz4Lm8Pw3Rt6Yh1"
	forged := map[string]string{"X-Api-Client": "forged-client-name"}
	client := newClient()

	startCaddy(t, configWith(mailLine))
	waitForOldAdmin(t)
	before, _ := scrape(t)
	mustGet(t, client, mailKey, forged)
	mustGet(t, client, mailKey, nil)
	mustGet(t, client, wrongKey, forged)
	mustGet(t, client, scannerKey, nil)
	afterFirst, firstLabels := scrape(t)

	startCaddy(t, configWith(mailLine+scannerLine))
	waitForOldAdmin(t)
	reloaded, _ := scrape(t)
	for range 3 {
		mustGet(t, client, mailKey, nil)
	}
	mustGet(t, client, scannerKey, forged)
	afterReload, reloadLabels := scrape(t)

	assert.Contains(t, afterFirst, "mailserver/allowed", "counter missing from the scrape")
	assert.Equal(t, map[string]float64{"mailserver/allowed": 2, "/invalid": 2},
		countDeltas(before, afterFirst))
	assert.Equal(t, afterFirst, reloaded, "the reload changed the counts")
	assert.Equal(t, map[string]float64{"mailserver/allowed": 3, "scanner/allowed": 1},
		countDeltas(afterFirst, afterReload))
	for _, value := range append(firstLabels, reloadLabels...) {
		assert.NotContains(t, value, wrongKey)
		assert.NotContains(t, value, mailKey)
		assert.NotContains(t, value, scannerKey)
		assert.NotContains(t, value, "forged")
	}
	assert.Len(t, up.received(), 6)
}
