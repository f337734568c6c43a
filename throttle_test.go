package apikey

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trackerStart is the time of the first failure in the tracker tests.
var trackerStart = time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)

// recordFailures records count failures of address at now and returns the
// result of the last call.
func recordFailures(f *failureTracker, address netip.Addr, now time.Time, count int) time.Time {
	var until time.Time
	for range count {
		until = f.recordFailure(address, now)
	}
	return until
}

// isTracked reports whether the tracker contains an entry for address.
func isTracked(f *failureTracker, address netip.Addr) bool {
	prefix, ok := trackingPrefix(address)
	if !ok {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, found := f.entries[prefix]
	return found
}

// testIPv4 returns a distinct IPv4 address from 10.0.0.0/8 for each i
// below 2^24.
func testIPv4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestFailureTrackerThrottlesAtLimit(t *testing.T) {
	f := newFailureTracker(3, time.Minute, 100)
	address := netip.MustParseAddr("192.0.2.1")

	first := f.recordFailure(address, trackerStart)
	second := f.recordFailure(address, trackerStart)
	beforeLimit := f.throttled(address, trackerStart)
	third := f.recordFailure(address, trackerStart)

	assert.True(t, first.IsZero(), "first failure started a throttling")
	assert.True(t, second.IsZero(), "second failure started a throttling")
	assert.Zero(t, beforeLimit, "throttled below max failures")
	assert.Equal(t, trackerStart.Add(time.Minute), third, "end of the throttling")
	assert.Equal(t, time.Minute, f.throttled(address, trackerStart))
	assert.Equal(t, 30*time.Second, f.throttled(address, trackerStart.Add(30*time.Second)))
}

// TestFailureTrackerThrottlingEnd checks that a throttling lasts exactly
// one window from the failure that reached the limit.
func TestFailureTrackerThrottlingEnd(t *testing.T) {
	const window = time.Minute
	reached := trackerStart.Add(10 * time.Second)
	tests := []struct {
		name string
		now  time.Time
		want time.Duration
	}{
		{"at the limit", reached, window},
		{"one nanosecond before the end", reached.Add(window - time.Nanosecond), time.Nanosecond},
		{"at the end", reached.Add(window), 0},
		{"one nanosecond after the end", reached.Add(window + time.Nanosecond), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFailureTracker(3, window, 100)
			address := netip.MustParseAddr("192.0.2.1")
			recordFailures(f, address, trackerStart, 2)
			until := f.recordFailure(address, reached)
			require.Equal(t, reached.Add(window), until)

			assert.Equal(t, tt.want, f.throttled(address, tt.now))
		})
	}
}

// TestFailureTrackerCountingWindow checks that failures count together
// only within one window from the first of them.
func TestFailureTrackerCountingWindow(t *testing.T) {
	const window = time.Minute
	tests := []struct {
		name      string
		last      time.Time // time of the failure that would reach the limit
		throttled bool
	}{
		{"same instant", trackerStart, true},
		{"one nanosecond before the window ends", trackerStart.Add(window - time.Nanosecond), true},
		{"when the window ends", trackerStart.Add(window), false},
		{"one nanosecond after the window ends", trackerStart.Add(window + time.Nanosecond), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFailureTracker(3, window, 100)
			address := netip.MustParseAddr("192.0.2.1")
			recordFailures(f, address, trackerStart, 2)

			until := f.recordFailure(address, tt.last)

			if tt.throttled {
				assert.Equal(t, tt.last.Add(window), until)
				assert.Equal(t, window, f.throttled(address, tt.last))
				return
			}
			assert.True(t, until.IsZero(), "throttled by failures of an earlier window")
			assert.Zero(t, f.throttled(address, tt.last))
		})
	}
}

// TestFailureTrackerNewWindowCountsFromZero checks that a failure after
// the window starts a new count: the limit is then reached only by
// max_failures failures of the new window.
func TestFailureTrackerNewWindowCountsFromZero(t *testing.T) {
	f := newFailureTracker(3, time.Minute, 100)
	address := netip.MustParseAddr("192.0.2.1")
	recordFailures(f, address, trackerStart, 2)
	later := trackerStart.Add(time.Minute)

	second := recordFailures(f, address, later, 2)
	third := f.recordFailure(address, later)

	assert.True(t, second.IsZero(), "two failures of a new window started a throttling")
	assert.Equal(t, later.Add(time.Minute), third)
}

func TestFailureTrackerOtherAddresses(t *testing.T) {
	f := newFailureTracker(3, time.Minute, 100)
	attacker := netip.MustParseAddr("192.0.2.1")
	neighbour := netip.MustParseAddr("192.0.2.2")
	other := netip.MustParseAddr("198.51.100.7")
	recordFailures(f, neighbour, trackerStart, 2)

	until := recordFailures(f, attacker, trackerStart, 3)

	require.False(t, until.IsZero(), "attacker not throttled")
	assert.Zero(t, f.throttled(neighbour, trackerStart), "neighbour throttled")
	assert.Zero(t, f.throttled(other, trackerStart), "untracked address throttled")
	assert.False(t, f.recordFailure(neighbour, trackerStart).IsZero(),
		"neighbour's third failure did not throttle it")
}

// TestFailureTrackerFailureWhileThrottled checks that a failure recorded
// during a throttling, as a request that passed the check just before the
// throttling began may record, does not extend it.
func TestFailureTrackerFailureWhileThrottled(t *testing.T) {
	f := newFailureTracker(2, time.Minute, 100)
	address := netip.MustParseAddr("192.0.2.1")
	until := recordFailures(f, address, trackerStart, 2)
	require.Equal(t, trackerStart.Add(time.Minute), until)

	again := recordFailures(f, address, trackerStart.Add(time.Second), 5)

	assert.True(t, again.IsZero(), "a failure during the throttling started another")
	assert.Equal(t, 59*time.Second, f.throttled(address, trackerStart.Add(time.Second)))
	assert.Zero(t, f.throttled(address, until))
}

// TestFailureTrackerAfterRelease checks that a released address is
// throttled again only after max_failures new failures.
func TestFailureTrackerAfterRelease(t *testing.T) {
	f := newFailureTracker(3, time.Minute, 100)
	address := netip.MustParseAddr("192.0.2.1")
	until := recordFailures(f, address, trackerStart, 3)
	require.False(t, until.IsZero())

	second := recordFailures(f, address, until, 2)
	third := f.recordFailure(address, until.Add(time.Second))

	assert.True(t, second.IsZero(), "throttled again after two failures")
	assert.Equal(t, until.Add(time.Second).Add(time.Minute), third)
}

func TestTrackingPrefix(t *testing.T) {
	tests := []struct {
		address string
		want    string
	}{
		{"192.0.2.10", "192.0.2.10/32"},
		{"::ffff:192.0.2.10", "192.0.2.10/32"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			prefix, ok := trackingPrefix(netip.MustParseAddr(tt.address))

			require.True(t, ok)
			assert.Equal(t, tt.want, prefix.String())
		})
	}

	t.Run("zero address", func(t *testing.T) {
		_, ok := trackingPrefix(netip.Addr{})

		assert.False(t, ok)
	})
}

// TestFailureTrackerSharedEntries checks which pairs of addresses count
// their failures together: IPv6 addresses of one /64, and an IPv4 address
// with its IPv4-mapped IPv6 form.
func TestFailureTrackerSharedEntries(t *testing.T) {
	tests := []struct {
		name          string
		first, second string
		shared        bool
	}{
		{"same /64", "2001:db8:1:2::1", "2001:db8:1:2:abcd:ef01:2345:6789", true},
		{"same /64 with zones", "fe80::1%eth0", "fe80::2%eth1", true},
		{"adjacent /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"same /48, other /64", "2001:db8:1:2::1", "2001:db8:1:ff::1", false},
		{"IPv4 and its mapped form", "192.0.2.10", "::ffff:192.0.2.10", true},
		{"mapped forms of two IPv4 addresses", "::ffff:192.0.2.10", "::ffff:192.0.2.11", false},
		{"adjacent IPv4 addresses", "192.0.2.10", "192.0.2.11", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFailureTracker(4, time.Minute, 100)
			first := netip.MustParseAddr(tt.first)
			second := netip.MustParseAddr(tt.second)

			recordFailures(f, first, trackerStart, 2)
			until := recordFailures(f, second, trackerStart, 2)

			if tt.shared {
				assert.False(t, until.IsZero(), "failures of %s and %s not counted together",
					tt.first, tt.second)
				assert.Positive(t, f.throttled(first, trackerStart), "%s not throttled", tt.first)
				assert.Equal(t, 1, f.tracked())
				return
			}
			assert.True(t, until.IsZero(), "failures of %s and %s counted together",
				tt.first, tt.second)
			assert.Equal(t, 2, f.tracked())
		})
	}
}

func TestFailureTrackerInvalidAddress(t *testing.T) {
	f := newFailureTracker(1, time.Minute, 100)

	until := recordFailures(f, netip.Addr{}, trackerStart, 50)

	assert.True(t, until.IsZero(), "the zero address was throttled")
	assert.Zero(t, f.throttled(netip.Addr{}, trackerStart))
	assert.Zero(t, f.tracked(), "the zero address was tracked")
}

// TestFailureTrackerMaxTracked records failures from ten times as many
// addresses as the tracker may track, and checks that it keeps only the
// most recent ones.
func TestFailureTrackerMaxTracked(t *testing.T) {
	const maxTracked = 100
	f := newFailureTracker(1_000_000, time.Minute, maxTracked)

	for i := range 10 * maxTracked {
		f.recordFailure(testIPv4(i), trackerStart)
		require.LessOrEqual(t, f.tracked(), maxTracked, "after %d addresses", i+1)
	}

	assert.Equal(t, maxTracked, f.tracked())
	for i := range 10 * maxTracked {
		recent := i >= 9*maxTracked
		assert.Equal(t, recent, isTracked(f, testIPv4(i)), "address %s", testIPv4(i))
	}
}

// TestFailureTrackerMaxTrackedIPv6 checks the bound with IPv6 addresses,
// each in its own /64, beside many addresses of one /64 that share an
// entry.
func TestFailureTrackerMaxTrackedIPv6(t *testing.T) {
	const maxTracked = 50
	f := newFailureTracker(1_000_000, time.Minute, maxTracked)

	for i := range 10 * maxTracked {
		ownPrefix := netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::1", i>>16, i&0xffff))
		samePrefix := netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff:ffff::%x", i+1))
		f.recordFailure(ownPrefix, trackerStart)
		f.recordFailure(samePrefix, trackerStart)
	}

	assert.Equal(t, maxTracked, f.tracked())
	assert.True(t, isTracked(f, netip.MustParseAddr("2001:db8:ffff:ffff::1")),
		"the /64 used on every step was evicted")
}

// TestFailureTrackerEvictsLeastRecentlyUsed checks that an address whose
// failures keep coming survives a flood of new addresses, and one that
// stopped failing is evicted.
func TestFailureTrackerEvictsLeastRecentlyUsed(t *testing.T) {
	const maxTracked = 100
	f := newFailureTracker(1_000_000, time.Minute, maxTracked)
	active := netip.MustParseAddr("192.0.2.1")
	quiet := netip.MustParseAddr("192.0.2.2")
	f.recordFailure(active, trackerStart)
	f.recordFailure(quiet, trackerStart)

	for i := range 10 * maxTracked {
		if i%(maxTracked/2) == 0 {
			f.recordFailure(active, trackerStart)
		}
		f.recordFailure(testIPv4(i), trackerStart)
	}

	assert.Equal(t, maxTracked, f.tracked())
	assert.True(t, isTracked(f, active), "the recently used address was evicted")
	assert.False(t, isTracked(f, quiet), "the least recently used address survived")
}

// TestFailureTrackerEvictionReleases checks that throttled addresses beyond
// the bound are forgotten, and so released, oldest first.
func TestFailureTrackerEvictionReleases(t *testing.T) {
	const maxTracked = 10
	f := newFailureTracker(1, time.Minute, maxTracked)

	for i := range 10 * maxTracked {
		until := f.recordFailure(testIPv4(i), trackerStart)
		require.False(t, until.IsZero(), "address %s not throttled", testIPv4(i))
	}

	assert.Equal(t, maxTracked, f.tracked())
	for i := range 10 * maxTracked {
		recent := i >= 9*maxTracked
		assert.Equal(t, recent, f.throttled(testIPv4(i), trackerStart) > 0,
			"address %s", testIPv4(i))
	}
}

// TestFailureTrackerThrottledStaysRecent checks that an address which
// keeps sending while throttled is not evicted, and so released, by
// failures from many other addresses.
func TestFailureTrackerThrottledStaysRecent(t *testing.T) {
	const maxTracked = 10
	f := newFailureTracker(1, time.Minute, maxTracked)
	attacker := netip.MustParseAddr("198.51.100.7")
	require.False(t, f.recordFailure(attacker, trackerStart).IsZero())

	for i := range 10 * maxTracked {
		f.recordFailure(testIPv4(i), trackerStart)
		require.Positive(t, f.throttled(attacker, trackerStart),
			"attacker released after %d other addresses", i+1)
	}
	assert.Equal(t, maxTracked, f.tracked())
}

func TestFailureTrackerSweep(t *testing.T) {
	const window = time.Minute
	f := newFailureTracker(3, window, 100)
	throttled := netip.MustParseAddr("192.0.2.1")
	early := netip.MustParseAddr("192.0.2.2")
	late := netip.MustParseAddr("2001:db8:1:2::7")
	recordFailures(f, throttled, trackerStart, 3)
	f.recordFailure(early, trackerStart)
	f.recordFailure(late, trackerStart.Add(30*time.Second))

	beforeEnd := f.sweep(trackerStart.Add(window - time.Nanosecond))
	trackedBeforeEnd := f.tracked()
	atEnd := f.sweep(trackerStart.Add(window))
	trackedAtEnd := f.tracked()
	afterLate := f.sweep(trackerStart.Add(window + 30*time.Second))
	trackedAfterLate := f.tracked()
	afterAll := f.sweep(trackerStart.Add(2 * window))

	assert.Empty(t, beforeEnd, "released before the end of the throttling")
	assert.Equal(t, 3, trackedBeforeEnd)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}, atEnd)
	assert.Equal(t, 2, trackedAtEnd, "the expired window of %s was kept", early)
	assert.False(t, isTracked(f, early))
	assert.Empty(t, afterLate, "an address was released twice")
	assert.Equal(t, 1, trackedAfterLate, "the expired window of %s was kept", late)
	assert.Empty(t, afterAll)
	assert.Zero(t, f.tracked(), "entries left after every window ended")
}

// TestFailureTrackerSweepKeepsCount checks that a sweep does not reset
// the failures of a window that is still open.
func TestFailureTrackerSweepKeepsCount(t *testing.T) {
	f := newFailureTracker(3, time.Minute, 100)
	address := netip.MustParseAddr("192.0.2.1")
	recordFailures(f, address, trackerStart, 2)

	released := f.sweep(trackerStart.Add(30 * time.Second))
	until := f.recordFailure(address, trackerStart.Add(40*time.Second))

	assert.Empty(t, released)
	assert.False(t, until.IsZero(), "the sweep reset an open window")
}

// fixedTime returns a request time whose clock reads trackerStart plus
// offset.
func fixedTime(offset time.Duration) *requestTime {
	return &requestTime{clock: func() time.Time { return trackerStart.Add(offset) }}
}

// TestFailureTrackerActive checks that the tracker is active from the
// start of the first throttling until the end of the last one, and again
// when a new one starts.
func TestFailureTrackerActive(t *testing.T) {
	f := newFailureTracker(2, time.Minute, 100)
	first := netip.MustParseAddr("192.0.2.1")
	second := netip.MustParseAddr("192.0.2.2")

	assert.False(t, f.active(fixedTime(0)), "active before any failure")
	recordFailures(f, first, trackerStart, 1)
	assert.False(t, f.active(fixedTime(0)), "active below max failures")

	recordFailures(f, first, trackerStart, 1)                      // until 1m
	recordFailures(f, second, trackerStart.Add(30*time.Second), 2) // until 1m30s
	assert.True(t, f.active(fixedTime(time.Minute)), "inactive while the second throttling runs")
	assert.True(t, f.active(fixedTime(90*time.Second-time.Nanosecond)), "inactive just before the end")
	assert.False(t, f.active(fixedTime(90*time.Second)), "active at the end of the last throttling")
	assert.Nil(t, f.latestEnd.Load(), "latest end kept after all throttlings ended")

	recordFailures(f, first, trackerStart.Add(2*time.Minute), 2)
	assert.True(t, f.active(fixedTime(2*time.Minute)), "inactive during a new throttling")
}

// TestFailureTrackerActiveKeepsLatestEnd checks that a throttling that
// ends earlier, as one recorded with a slightly older clock reading does,
// does not shorten the time in which the tracker is active.
func TestFailureTrackerActiveKeepsLatestEnd(t *testing.T) {
	f := newFailureTracker(1, time.Minute, 100)
	recordFailures(f, netip.MustParseAddr("192.0.2.1"), trackerStart.Add(time.Second), 1)
	recordFailures(f, netip.MustParseAddr("192.0.2.2"), trackerStart, 1)

	assert.True(t, f.active(fixedTime(time.Minute)), "inactive while the later throttling runs")
}

// TestFailureTrackerActiveStartDuringClear checks the interleaving in which
// one request finds every throttling ended and, before it clears the latest
// end, another request starts a new throttling. The new one must stay
// visible.
func TestFailureTrackerActiveStartDuringClear(t *testing.T) {
	f := newFailureTracker(1, time.Minute, 100)
	recordFailures(f, netip.MustParseAddr("192.0.2.1"), trackerStart, 1)
	ended := f.latestEnd.Load()
	require.NotNil(t, ended)

	recordFailures(f, netip.MustParseAddr("192.0.2.2"), trackerStart.Add(time.Minute), 1)
	f.clearLatestEnd(ended)

	assert.True(t, f.active(fixedTime(time.Minute)), "new throttling lost by the clear")
}

// TestFailureTrackerActiveConcurrent starts throttlings one after another
// while other goroutines find the previous one ended and clear the latest
// end. A throttling that has just started must always be seen. The forced
// interleaving is in TestFailureTrackerActiveStartDuringClear; this test is
// for the race detector, which CI runs on this package.
func TestFailureTrackerActiveConcurrent(t *testing.T) {
	const rounds = 2000
	f := newFailureTracker(1, time.Minute, 100)
	var round, cleared atomic.Int64
	var wg sync.WaitGroup
	done := make(chan struct{})

	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				// The start of the current round is the end of the
				// previous round's throttling.
				if !f.active(fixedTime(time.Duration(round.Load()) * time.Minute)) {
					cleared.Add(1)
				}
			}
		}()
	}

	missed := 0
	for i := range rounds {
		start := time.Duration(i) * time.Minute
		address := netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 200)})
		round.Store(int64(i))
		recordFailures(f, address, trackerStart.Add(start), 1)
		if !f.active(fixedTime(start)) {
			missed++
		}
	}
	close(done)
	wg.Wait()

	assert.Zero(t, missed, "throttlings not seen right after they started, of %d", rounds)
	t.Logf("the other goroutines found no throttling %d times", cleared.Load())
}
