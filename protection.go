package apikey

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// FailureThrottle throttles client addresses that send too many requests
// with a missing, invalid, duplicate or expired key. Once an address has
// made MaxFailures such requests within Window, its requests get 429 Too
// Many Requests for one Window, and their keys are not checked. Valid
// requests from other addresses are never slowed.
type FailureThrottle struct {
	// Disabled turns throttling off. Default: false.
	Disabled bool `json:"disabled,omitempty"`

	// MaxFailures is the number of rejected requests that one address may
	// make within Window. Default: 100.
	MaxFailures int `json:"max_failures,omitempty"`

	// Window is the time in which failures are counted, and how long a
	// throttled address stays throttled. Default: 1m.
	Window caddy.Duration `json:"window,omitempty"`

	// MaxTrackedAddresses bounds the number of client addresses tracked
	// at once; the least recently seen address is forgotten to make room.
	// IPv6 addresses are tracked by /64 prefix. Default: 10000.
	MaxTrackedAddresses int `json:"max_tracked_addresses,omitempty"`
}

// Results of rejections before any client is known, as counted in
// caddy_api_key_requests_total and logged.
var (
	errThrottled   = errors.New("too many failed API key attempts from this address")
	errRateLimited = errors.New("API client rate limit exceeded")
)

// maxSweepInterval bounds how long a throttling may outlast its end before
// the end is logged.
const maxSweepInterval = 10 * time.Second

// summaryInterval is how often the counts of rejected requests are logged.
const summaryInterval = time.Minute

// rejectionKinds lists every kind of rejection, in the order that the
// periodic summary logs them. init sets each rejection's index to its
// position here, so that counting a rejection needs no lookup by reason.
var rejectionKinds = [...]*rejection{
	rejectMissing, rejectInvalid, rejectDuplicate, rejectExpired, rejectForbidden,
	rejectThrottled, rejectRateLimited,
}

func init() {
	for i, kind := range rejectionKinds {
		kind.index = i
	}
}

// protection is the runtime state of throttling, rate limits, metrics and
// log sampling of one handler.
type protection struct {
	throttle *failureTracker

	// limiterKeys are the rate limiter pool keys this handler holds.
	limiterKeys []string

	// anonymous are the metric counters, by rejection index, of the
	// rejections that name no valid client. The other entries are nil.
	anonymous [len(rejectionKinds)]prometheus.Counter

	// rejections counts rejected requests by rejection index since the
	// last summary.
	rejections [len(rejectionKinds)]atomic.Int64

	// throttlingsStarted counts throttlings since the last summary, since
	// their log lines are sampled.
	throttlingsStarted atomic.Int64

	// sampledLogger logs single rejections, at most a few a second.
	sampledLogger *zap.Logger

	// expiryWarned records, by client, the last expiry state logged by
	// warnExpiring, so that each state is logged once per config.
	expiryWarned map[string]expiryState
}

// expiryState is the stage of a key relative to its expiry: far, soon or passed.
type expiryState int

const (
	expiryFar expiryState = iota
	expirySoon
	expiryPassed
)

// provisionProtection sets up throttling, rate limits, metrics and log
// sampling, and starts the background sweep. keys must be provisioned.
func (h *Handler) provisionProtection(ctx caddy.Context) error {
	h.protection = new(protection)
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	for _, kind := range []*rejection{rejectMissing, rejectInvalid, rejectDuplicate,
		rejectThrottled} {
		h.protection.anonymous[kind.index] = requestsTotal.WithLabelValues("", kind.reason)
	}

	h.protection.sampledLogger = sampledLogger(h.logger)

	if err := h.provisionThrottle(); err != nil {
		return err
	}
	if err := h.provisionRateLimits(); err != nil {
		return err
	}

	// loadKeys has logged the keys that expire soon.
	h.protection.expiryWarned = make(map[string]expiryState)
	for _, entry := range h.keys.entries {
		if !entry.expires.IsZero() && entry.expires.Sub(h.now()) <= expiryWarning {
			h.protection.expiryWarned[entry.client] = expirySoon
		}
	}

	go h.protection.sweep(ctx, h.logger, h.now, h.keys)
	return nil
}

func (h *Handler) provisionThrottle() error {
	if h.Throttle == nil {
		h.Throttle = new(FailureThrottle)
	}
	throttle := h.Throttle
	if throttle.Disabled {
		return nil
	}
	if throttle.MaxFailures == 0 {
		throttle.MaxFailures = DefaultMaxFailures
	}
	if throttle.Window == 0 {
		throttle.Window = caddy.Duration(DefaultFailureWindow)
	}
	if throttle.MaxTrackedAddresses == 0 {
		throttle.MaxTrackedAddresses = DefaultMaxTrackedAddresses
	}
	if throttle.MaxFailures < 0 || throttle.Window < 0 || throttle.MaxTrackedAddresses < 0 {
		return errors.New("max_failures: the count, the window and the number of " +
			"tracked addresses must be positive")
	}
	h.protection.throttle = newFailureTracker(throttle.MaxFailures,
		time.Duration(throttle.Window), throttle.MaxTrackedAddresses)
	return nil
}

// provisionRateLimits gives each configured client the bucket of its own
// limit, or of the "*" limit if it has none.
func (h *Handler) provisionRateLimits() error {
	limits := make(map[string]*RateLimit, len(h.RateLimits))
	for i := range h.RateLimits {
		limit := &h.RateLimits[i]
		if err := limit.provision(); err != nil {
			return err
		}
		if _, duplicate := limits[limit.Client]; duplicate {
			return fmt.Errorf("rate limit of client %s is set twice; keep one",
				showToken(limit.Client))
		}
		limits[limit.Client] = limit
	}

	configured := make(map[string]bool, len(h.keys.entries))
	for i := range h.keys.entries {
		entry := &h.keys.entries[i]
		configured[entry.client] = true
		entry.counters = newClientCounters(entry.client)

		limit := limits[entry.client]
		if limit == nil {
			limit = limits[AllClients]
		}
		if limit == nil {
			continue
		}
		limiter, err := limit.limiter(entry.client, entry.digest)
		if err != nil {
			return fmt.Errorf("rate limit of client %s: %v", showToken(entry.client), err)
		}
		entry.limiter = limiter
		h.protection.limiterKeys = append(h.protection.limiterKeys,
			limit.poolKey(entry.client, entry.digest))
	}
	for client := range limits {
		if client != AllClients && !configured[client] {
			return fmt.Errorf("rate limit names the client %s, which is not configured",
				showToken(client))
		}
	}
	return nil
}

// Cleanup releases the handler's rate limiters. A bucket that the next
// config also uses survives, so a reload keeps its state.
func (h *Handler) Cleanup() error {
	if h.protection == nil {
		return nil
	}
	for _, key := range h.protection.limiterKeys {
		if _, err := rateLimiters.Delete(key); err != nil {
			return err
		}
	}
	h.protection.limiterKeys = nil
	return nil
}

// sweep ends throttlings and logs the summary of rejections until ctx is
// done, which happens when the config is unloaded. It takes the logger
// and clock as arguments, because a handler may be provisioned again
// while an earlier sweep still runs.
func (p *protection) sweep(ctx caddy.Context, logger *zap.Logger, now func() time.Time,
	keys *keyring,
) {
	interval := maxSweepInterval
	if p.throttle != nil {
		interval = min(interval, max(time.Second, p.throttle.window/4))
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	lastSummary := time.Now()
	for {
		select {
		case <-ctx.Done():
			p.logSummary(logger)
			return
		case <-ticker.C:
		}

		p.releaseThrottled(logger, now())
		if time.Since(lastSummary) >= summaryInterval {
			p.logSummary(logger)
			p.warnExpiring(logger, keys, now())
			lastSummary = time.Now()
		}
	}
}

// warnExpiring logs, once for each key and state, that a key expires
// within 14 days or has expired while the config runs. An expired key
// stops the next config load, so the operator has to remove it before
// reloading or restarting Caddy.
func (p *protection) warnExpiring(logger *zap.Logger, keys *keyring, now time.Time) {
	if p.expiryWarned == nil {
		p.expiryWarned = make(map[string]expiryState)
	}
	for i := range keys.entries {
		entry := &keys.entries[i]
		state := expiryFar
		switch {
		case entry.expires.IsZero():
		case entry.expired(now):
			state = expiryPassed
		case entry.expires.Sub(now) <= expiryWarning:
			state = expirySoon
		}
		if state == expiryFar || p.expiryWarned[entry.client] == state {
			continue
		}
		p.expiryWarned[entry.client] = state

		if state == expiryPassed {
			logger.Warn("API key has expired and is rejected; remove it from the config, "+
				"since a config with an expired key does not load",
				zap.String("client", entry.client), zap.Time("expires", entry.expires))
		} else {
			logger.Warn("API key expires soon; rotate it",
				zap.String("client", entry.client), zap.Time("expires", entry.expires))
		}
	}
}

// releaseThrottled ends the throttlings that are over at now and logs them.
func (p *protection) releaseThrottled(logger *zap.Logger, now time.Time) {
	if p.throttle == nil {
		return
	}
	released := p.throttle.sweep(now)
	switch {
	case len(released) == 0:
	case len(released) <= 10:
		for _, prefix := range released {
			logger.Info("client address no longer throttled",
				zap.String("client_ip", addressOf(prefix)))
		}
	default:
		logger.Info("client addresses no longer throttled",
			zap.Int("count", len(released)))
	}
}

// logSummary logs how many requests were rejected since the last summary,
// by reason, if any were.
func (p *protection) logSummary(logger *zap.Logger) {
	fields := make([]zap.Field, 0, len(rejectionKinds)+1)
	for i, kind := range rejectionKinds {
		if count := p.rejections[i].Swap(0); count > 0 {
			fields = append(fields, zap.Int64(kind.reason, count))
		}
	}
	if count := p.throttlingsStarted.Swap(0); count > 0 {
		fields = append(fields, zap.Int64("throttlings_started", count))
	}
	if len(fields) > 0 {
		logger.Info("requests rejected since the last summary", fields...)
	}
}

// throttledFor returns how long the request's client address remains
// throttled, or 0, and the parsed address. While no address is throttled
// it returns at once, with the zero address.
func (h *Handler) throttledFor(r *http.Request, now *requestTime) (time.Duration, netip.Addr) {
	throttle := h.protection.throttle
	if throttle == nil || !throttle.active(now) {
		return 0, netip.Addr{}
	}
	address := clientAddress(r)
	return throttle.throttled(address, now.get()), address
}

// recordFailure counts a rejected request against its client address and
// logs the start of a throttling. The address is parsed from r unless
// throttledFor parsed it.
func (h *Handler) recordFailure(r *http.Request, address netip.Addr, now *requestTime) {
	if h.protection.throttle == nil {
		return
	}
	if !address.IsValid() {
		address = clientAddress(r)
	}
	until := h.protection.throttle.recordFailure(address, now.get())
	if until.IsZero() {
		return
	}
	h.protection.throttlingsStarted.Add(1)
	if entry := h.protection.sampledLogger.Check(zapcore.InfoLevel, "client address throttled"); entry != nil {
		entry.Write(
			zap.String("client_ip", trackedAddress(address)),
			zap.Int("max_failures", h.Throttle.MaxFailures),
			zap.Duration("window", time.Duration(h.Throttle.Window)),
			zap.Time("until", until))
	}
}

// sampledLogger returns a logger that writes, each second, the first 10
// entries with the same level and message and drops the rest. Rejections
// are still counted for the periodic summary.
func sampledLogger(logger *zap.Logger) *zap.Logger {
	return logger.WithOptions(zap.WrapCore(func(core zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(core, time.Second, 10, 0)
	}))
}

// setRetryAfter sets the Retry-After response header to wait, rounded up
// to whole seconds.
func setRetryAfter(w http.ResponseWriter, wait time.Duration) {
	seconds := max(1, int((wait+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
}

// clientAddress returns the client IP that Caddy determined for r, which
// honours the server's trusted_proxies, or the zero address.
func clientAddress(r *http.Request) netip.Addr {
	text, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	address, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}
	}
	return address
}

// trackedAddress returns address as throttling tracks and logs it: the
// address for IPv4, its /64 prefix for IPv6.
func trackedAddress(address netip.Addr) string {
	prefix, ok := trackingPrefix(address)
	if !ok {
		return address.String()
	}
	return addressOf(prefix)
}

// addressOf returns a tracked prefix as logged: the address for IPv4, the
// prefix for IPv6.
func addressOf(prefix netip.Prefix) string {
	if prefix.Addr().Is4() {
		return prefix.Addr().String()
	}
	return prefix.String()
}

// clientCounters are the metric counters of one configured client.
type clientCounters struct {
	allowed, expired, forbidden, rateLimited prometheus.Counter
}

func newClientCounters(client string) clientCounters {
	return clientCounters{
		allowed:     requestsTotal.WithLabelValues(client, resultAllowed),
		expired:     requestsTotal.WithLabelValues(client, rejectExpired.reason),
		forbidden:   requestsTotal.WithLabelValues(client, rejectForbidden.reason),
		rateLimited: requestsTotal.WithLabelValues(client, resultRateLimited),
	}
}

// Interface guards
var (
	_ caddy.CleanerUpper = (*Handler)(nil)
)
