package apikey

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Results counted in caddy_api_key_requests_total.
const (
	resultAllowed     = "allowed"
	resultThrottled   = "throttled"
	resultRateLimited = "rate_limited"
)

// requestsTotal counts the handler's decisions. It lives as long as the
// process and is registered with each config's registry, so its values
// carry over config reloads. The client label is a configured client name,
// or empty when the request named no valid client, and the result label is
// one of a fixed set, so neither can hold a key or a value the client
// chose.
var requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "caddy",
	Subsystem: "api_key",
	Name:      "requests_total",
	Help: "Requests checked by the api_key handler, by client name and result " +
		"(allowed, missing, invalid, duplicate, expired, forbidden, throttled, rate_limited).",
}, []string{"client", "result"})

// registerMetrics registers the handler's collectors with registry. A
// collector that is already registered, by another api_key handler of
// the same config, counts as success.
func registerMetrics(registry prometheus.Registerer) error {
	if registry == nil {
		return nil
	}
	err := registry.Register(requestsTotal)
	var already prometheus.AlreadyRegisteredError
	if err != nil && !errors.As(err, &already) {
		return err
	}
	return nil
}
