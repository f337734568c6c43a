package apikey

import (
	"container/list"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of failure throttling.
const (
	// DefaultMaxFailures is how many rejected requests one client address
	// may make within DefaultFailureWindow before it is throttled.
	DefaultMaxFailures = 100

	// DefaultFailureWindow is the window in which failures are counted,
	// and how long a throttled address stays throttled.
	DefaultFailureWindow = time.Minute

	// DefaultMaxTrackedAddresses bounds the memory of failure tracking: at
	// about 200 bytes an entry, 10,000 addresses take some 2 MB.
	DefaultMaxTrackedAddresses = 10000
)

// failureTracker counts rejected requests per client address and throttles
// an address that reaches the limit within a window. IPv6 addresses are
// grouped by /64 prefix, since one host commonly holds a whole /64. It
// tracks at most maxTracked addresses and evicts the least recently used
// one to make room, so a flood from many addresses cannot grow it without
// bound. An evicted address starts again from zero.
type failureTracker struct {
	maxFailures int
	window      time.Duration
	maxTracked  int

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element // values are *addressFailures
	order   *list.List                     // most recently used first

	// latestEnd is the latest end of any throttling, or nil once all have
	// ended. Requests read it without the lock, and after it no address is
	// throttled.
	latestEnd atomic.Pointer[time.Time]
}

// addressFailures is the failure count of one client address or prefix.
type addressFailures struct {
	prefix      netip.Prefix
	failures    int
	windowStart time.Time

	// throttledUntil is the end of the current throttling, or zero.
	throttledUntil time.Time
}

func newFailureTracker(maxFailures int, window time.Duration, maxTracked int) *failureTracker {
	return &failureTracker{
		maxFailures: maxFailures,
		window:      window,
		maxTracked:  maxTracked,
		entries:     make(map[netip.Prefix]*list.Element),
		order:       list.New(),
	}
}

// active reports whether any address may be throttled. While none is, it
// takes no lock and reads no clock, so that requests pay for the address
// lookup only while some throttling runs.
func (f *failureTracker) active(now *requestTime) bool {
	latestEnd := f.latestEnd.Load()
	if latestEnd == nil {
		return false
	}
	if now.get().Before(*latestEnd) {
		return true
	}
	f.clearLatestEnd(latestEnd)
	return false
}

// clearLatestEnd clears the latest end if it is still ended, the value the
// caller read. A throttling that started since that read replaced it, so
// it stays visible.
func (f *failureTracker) clearLatestEnd(ended *time.Time) {
	f.latestEnd.CompareAndSwap(ended, nil)
}

// throttled returns how long the address remains throttled at now, or 0.
func (f *failureTracker) throttled(address netip.Addr, now time.Time) time.Duration {
	prefix, ok := trackingPrefix(address)
	if !ok {
		return 0
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	element, found := f.entries[prefix]
	if !found {
		return 0
	}
	entry := element.Value.(*addressFailures)
	if !now.Before(entry.throttledUntil) {
		return 0
	}
	// An address that keeps sending while throttled stays recently used,
	// so that failures from other addresses cannot evict and release it.
	f.order.MoveToFront(element)
	return entry.throttledUntil.Sub(now)
}

// recordFailure counts one rejected request from address at now. It
// returns the end of the throttling when this failure starts one, or the
// zero time.
func (f *failureTracker) recordFailure(address netip.Addr, now time.Time) time.Time {
	prefix, ok := trackingPrefix(address)
	if !ok {
		return time.Time{}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	entry := f.entryLocked(prefix, now)

	if now.Sub(entry.windowStart) >= f.window {
		entry.failures = 0
		entry.windowStart = now
	}
	entry.failures++
	if entry.failures < f.maxFailures || now.Before(entry.throttledUntil) {
		return time.Time{}
	}

	entry.throttledUntil = now.Add(f.window)
	if latestEnd := f.latestEnd.Load(); latestEnd == nil || latestEnd.Before(entry.throttledUntil) {
		end := entry.throttledUntil
		f.latestEnd.Store(&end)
	}
	entry.failures = 0
	entry.windowStart = entry.throttledUntil
	return entry.throttledUntil
}

// entryLocked returns the entry of prefix, creating it and evicting the
// least recently used entry if the tracker is full. f.mu must be held.
func (f *failureTracker) entryLocked(prefix netip.Prefix, now time.Time) *addressFailures {
	if element, found := f.entries[prefix]; found {
		f.order.MoveToFront(element)
		return element.Value.(*addressFailures)
	}

	if f.order.Len() >= f.maxTracked {
		oldest := f.order.Back()
		f.order.Remove(oldest)
		delete(f.entries, oldest.Value.(*addressFailures).prefix)
	}
	entry := &addressFailures{prefix: prefix, windowStart: now}
	f.entries[prefix] = f.order.PushFront(entry)
	return entry
}

// sweep ends the throttling of addresses whose time is up, removes the
// entries with neither a throttling nor a current window, and returns the
// addresses it released, so that the caller can log them.
func (f *failureTracker) sweep(now time.Time) []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()

	var released []netip.Prefix
	for element := f.order.Back(); element != nil; {
		previous := element.Prev()
		entry := element.Value.(*addressFailures)
		if !entry.throttledUntil.IsZero() && !now.Before(entry.throttledUntil) {
			released = append(released, entry.prefix)
			entry.throttledUntil = time.Time{}
		}
		if entry.throttledUntil.IsZero() && now.Sub(entry.windowStart) >= f.window {
			f.order.Remove(element)
			delete(f.entries, entry.prefix)
		}
		element = previous
	}
	return released
}

// tracked returns the number of tracked addresses.
func (f *failureTracker) tracked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.order.Len()
}

// trackingPrefix returns the prefix under which address is tracked: the
// address itself for IPv4, its /64 for IPv6.
func trackingPrefix(address netip.Addr) (netip.Prefix, bool) {
	if !address.IsValid() {
		return netip.Prefix{}, false
	}
	address = address.Unmap()
	if address.Is4() {
		return netip.PrefixFrom(address, 32), true
	}
	prefix, err := address.WithZone("").Prefix(64)
	return prefix, err == nil
}
