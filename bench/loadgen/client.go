package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddy-apikey/apikey/bench/stats"
)

// requestTimeout bounds each request, so that a stalled server cannot
// hang a run.
const requestTimeout = 10 * time.Second

// newRequest returns the bytes of an HTTP/1.1 GET request for path on
// addr, with the given "Name: value" header lines. The load generator
// writes requests itself and reads responses with http.ReadResponse,
// without http.Client's connection pool, to keep its own work small on a
// machine that also runs Caddy and the upstream.
func newRequest(addr, path string, headers ...string) []byte {
	var builder strings.Builder
	fmt.Fprintf(&builder, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: apikey-loadgen\r\n", path, addr)
	for _, header := range headers {
		builder.WriteString(header)
		builder.WriteString("\r\n")
	}
	builder.WriteString("\r\n")
	return []byte(builder.String())
}

// connection is one keep-alive HTTP/1.1 connection to addr from a chosen
// source address. It dials again after an error or when the server
// closes the connection.
type connection struct {
	addr   string
	dialer net.Dialer
	conn   net.Conn
	reader *bufio.Reader
}

func newConnection(addr string, source net.IP) *connection {
	return &connection{
		addr: addr,
		dialer: net.Dialer{
			Timeout:   requestTimeout,
			LocalAddr: &net.TCPAddr{IP: source},
		},
	}
}

// roundTrip sends raw and returns the response status after reading the
// whole body.
func (c *connection) roundTrip(raw []byte) (int, error) {
	if c.conn == nil {
		conn, err := c.dialer.Dial("tcp", c.addr)
		if err != nil {
			return 0, err
		}
		c.conn = conn
		c.reader = bufio.NewReader(conn)
	}
	if err := c.conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		c.close()
		return 0, err
	}

	if _, err := c.conn.Write(raw); err != nil {
		c.close()
		return 0, err
	}
	response, err := http.ReadResponse(c.reader, nil)
	if err != nil {
		c.close()
		return 0, err
	}
	_, err = io.Copy(io.Discard, response.Body)
	response.Body.Close()
	if err != nil || response.Close {
		c.close()
	}
	return response.StatusCode, err
}

func (c *connection) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// result is the measurements of a load run's measured interval.
type result struct {
	// latencies are the durations of the completed requests, in
	// nanoseconds.
	latencies []float64
	statuses  map[int]int
	errors    int
	duration  time.Duration
}

func newResult(duration time.Duration) result {
	return result{statuses: make(map[int]int), duration: duration}
}

// add merges other into r, adding up the durations.
func (r *result) add(other result) {
	r.latencies = append(r.latencies, other.latencies...)
	for status, count := range other.statuses {
		r.statuses[status] += count
	}
	r.errors += other.errors
	r.duration += other.duration
}

// requestsPerSecond returns the completed requests per second.
func (r *result) requestsPerSecond() float64 {
	return float64(len(r.latencies)) / r.duration.Seconds()
}

// percentile returns the p-th latency percentile in microseconds.
func (r *result) percentile(p float64) float64 {
	sorted := slices.Clone(r.latencies)
	slices.Sort(sorted)
	return stats.Percentile(sorted, p) / 1e3
}

// share returns the fraction of completed requests with status.
func (r *result) share(status int) float64 {
	total := r.errors
	for _, count := range r.statuses {
		total += count
	}
	if total == 0 {
		return 0
	}
	return float64(r.statuses[status]) / float64(total)
}

// statusSummary formats the status counts and errors, such as
// "200: 1000, 401: 2, errors: 1".
func (r *result) statusSummary() string {
	statuses := make([]int, 0, len(r.statuses))
	for status := range r.statuses {
		statuses = append(statuses, status)
	}
	slices.Sort(statuses)
	parts := make([]string, 0, len(statuses)+1)
	for _, status := range statuses {
		parts = append(parts, fmt.Sprintf("%d: %d", status, r.statuses[status]))
	}
	if r.errors > 0 {
		parts = append(parts, fmt.Sprintf("errors: %d", r.errors))
	}
	return strings.Join(parts, ", ")
}

// runClosedLoop sends raw over the given number of connections from
// source, each sending its next request as soon as the previous response
// is read, for warmup plus duration. Only requests that start after the
// warmup and finish within the duration are measured.
func runClosedLoop(addr string, source net.IP, raw []byte, connections int,
	warmup, duration time.Duration,
) result {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)

	results := make([]result, connections)
	var wait sync.WaitGroup
	for i := range results {
		results[i] = newResult(0)
		wait.Add(1)
		go func(own *result) {
			defer wait.Done()
			conn := newConnection(addr, source)
			defer conn.close()
			for {
				sent := time.Now()
				if !sent.Before(end) {
					return
				}
				status, err := conn.roundTrip(raw)
				received := time.Now()
				if sent.Before(measureFrom) || received.After(end) {
					continue
				}
				if err != nil {
					own.errors++
					continue
				}
				own.statuses[status]++
				own.latencies = append(own.latencies, float64(received.Sub(sent)))
			}
		}(&results[i])
	}
	wait.Wait()

	total := newResult(duration)
	for _, r := range results {
		total.add(r)
	}
	return total
}

// runPaced sends raw over one connection from source, one request every
// interval, for duration. A request that is due while the previous one
// is still running is sent as soon as that one ends.
func runPaced(addr string, source net.IP, raw []byte, interval, duration time.Duration) result {
	conn := newConnection(addr, source)
	defer conn.close()

	r := newResult(duration)
	start := time.Now()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= duration {
			return r
		}
		time.Sleep(time.Until(due))

		sent := time.Now()
		status, err := conn.roundTrip(raw)
		if err != nil {
			r.errors++
			continue
		}
		r.statuses[status]++
		r.latencies = append(r.latencies, float64(time.Since(sent)))
	}
}
