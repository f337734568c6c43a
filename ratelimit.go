package apikey

import (
	"crypto/sha256"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/caddyserver/caddy/v2"
)

// AllClients is the client name of a rate limit that applies to every
// client without a limit of its own.
const AllClients = "*"

// RateLimit limits how often one authenticated client may call, with a
// token bucket: the bucket holds Burst requests and refills at Requests
// per Interval.
type RateLimit struct {
	// Client is the client name the limit applies to, or "*" for every
	// client without a limit of its own.
	Client string `json:"client"`

	// Requests is the number of requests allowed per Interval.
	Requests int `json:"requests"`

	// Interval is the time in which Requests are allowed. Default: 1s.
	Interval caddy.Duration `json:"interval,omitempty"`

	// Burst is the number of requests that may come at once after a
	// quiet period. Default: Requests.
	Burst int `json:"burst,omitempty"`
}

// rateLimiters holds the token buckets of all loaded configs. A bucket is
// keyed by the client and its limit, so a reload that keeps a client's
// limit keeps its bucket, and a changed limit starts a new one.
var rateLimiters = caddy.NewUsagePool()

// clientLimiter is a shared token bucket.
type clientLimiter struct {
	*rate.Limiter
}

// Destruct implements caddy.Destructor; a bucket holds no resources.
func (clientLimiter) Destruct() error { return nil }

// provision checks the limit and fills in defaults.
func (l *RateLimit) provision() error {
	if l.Client != AllClients {
		if err := checkClientName(l.Client); err != nil {
			return fmt.Errorf("rate limit: %v", err)
		}
	}
	if l.Interval == 0 {
		l.Interval = caddy.Duration(time.Second)
	}
	if l.Requests <= 0 || l.Interval < 0 {
		return fmt.Errorf("rate limit of client %s: allow at least one request per "+
			"positive interval, for example 50/s", showToken(l.Client))
	}
	if l.Burst == 0 {
		l.Burst = l.Requests
	}
	if l.Burst < 0 {
		return fmt.Errorf("rate limit of client %s: burst must be at least 1",
			showToken(l.Client))
	}
	return nil
}

// poolKey identifies the bucket of a client's key under this limit. The
// key's digest is part of it, so that two handlers whose clients share a
// name but not a key, such as two shorthand "default" clients, do not
// share a bucket.
func (l *RateLimit) poolKey(client string, digest [sha256.Size]byte) string {
	return fmt.Sprintf("%s|%x|%d/%d|%d", client, digest, l.Requests,
		time.Duration(l.Interval), l.Burst)
}

// limiter returns the shared bucket of a client's key under this limit.
func (l *RateLimit) limiter(client string, digest [sha256.Size]byte) (*rate.Limiter, error) {
	key := l.poolKey(client, digest)
	value, _, err := rateLimiters.LoadOrNew(key, func() (caddy.Destructor, error) {
		perSecond := rate.Limit(float64(l.Requests) / time.Duration(l.Interval).Seconds())
		return clientLimiter{rate.NewLimiter(perSecond, l.Burst)}, nil
	})
	if err != nil {
		return nil, err
	}
	return value.(clientLimiter).Limiter, nil
}

// retryAfter returns the whole number of seconds after which limiter
// allows one more request, at least 1, for the Retry-After header.
func retryAfter(limiter *rate.Limiter, now time.Time) int {
	reservation := limiter.ReserveN(now, 1)
	defer reservation.CancelAt(now)
	if !reservation.OK() {
		return 1
	}
	return max(1, int(math.Ceil(reservation.DelayFrom(now).Seconds())))
}

// parseRate parses "<requests>/<unit>", where unit is s, m, h or a Go
// duration such as 10s.
func parseRate(text string) (int, time.Duration, error) {
	// Errors show the whole text or nothing of it: a key with a '/' in it,
	// written in the wrong place, must not be shown in pieces.
	shown := showToken(text)
	count, unit, found := strings.Cut(text, "/")
	if !found {
		return 0, 0, fmt.Errorf("rate %s has no '/'; write it like 50/s, 600/m or 10/5s",
			shown)
	}
	requests, err := strconv.Atoi(count)
	if err != nil || requests <= 0 {
		return 0, 0, fmt.Errorf("rate %s: the part before the '/' is not a positive "+
			"whole number of requests", shown)
	}

	var interval time.Duration
	switch unit {
	case "s":
		interval = time.Second
	case "m":
		interval = time.Minute
	case "h":
		interval = time.Hour
	default:
		interval, err = time.ParseDuration(unit)
		if err != nil || interval <= 0 {
			return 0, 0, fmt.Errorf("rate %s: the part after the '/' is not s, m, h or a "+
				"positive duration such as 10s", shown)
		}
	}
	return requests, interval, nil
}
