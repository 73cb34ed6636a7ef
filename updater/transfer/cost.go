package transfer

import (
	"io"
	"sync"
	"time"
)

// method is a way to send a NAR.
type method int

const (
	asIs      method = iota // the NAR itself (version 4)
	plain                   // zstd at a fast level
	copyDelta               // a copydelta against the base, zstd-compressed (version 4)
	dictDelta               // zstd with the base's NAR as dictionary (version 2)
	nMethods
)

var methodNames = [nMethods]string{"as is", "zstd", "copy delta", "zstd delta"}

func (m method) String() string { return methodNames[m] }

// costModel estimates how long each method takes to send a NAR, from
// what this transfer measured so far, and priors until then: the link's
// throughput (wire bytes a second) and, for each method, how many NAR
// bytes a second one worker prepares (reading the base and checking it
// included) and how large the result is. Workers prepare in parallel
// while the link sends, so a NAR costs the larger of its share of the
// workers' time and its time on the link.
type costModel struct {
	mu      sync.Mutex
	workers float64
	link    func() float64 // measured link throughput, 0 until known
	speed   [nMethods]float64
	ratio   [nMethods]float64
}

const (
	// priorLink stands for the link until the meter knows it: 100
	// Mbit/s, between a slow uplink and a LAN.
	priorLink = 12.5e6
	// A sample moves an estimate in proportion to its size, up to half
	// the way for sampleWeight bytes or more: tiny NARs time badly.
	sampleWeight = 4 << 20
)

func newCostModel(workers int, link func() float64) *costModel {
	return &costModel{
		workers: float64(max(workers, 1)),
		link:    link,
		// Measured on 12-14 MB Go binaries at a new version, one core.
		speed: [nMethods]float64{asIs: 2e9, plain: 150e6, copyDelta: 400e6, dictDelta: 25e6},
		ratio: [nMethods]float64{asIs: 1, plain: 0.5, copyDelta: 0.02, dictDelta: 0.02},
	}
}

// estimate is the seconds that sending size bytes of NAR by m adds.
func (c *costModel) estimate(m method, size float64) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.estimateLocked(m, size, c.workers)
}

// estimateLocked is estimate with the workers' time shared by workers.
func (c *costModel) estimateLocked(m method, size, workers float64) float64 {
	link := c.link()
	if link <= 0 {
		link = priorLink
	}
	work := 0.0
	if m != asIs {
		work = size / c.speed[m] / workers
	}
	return max(work, size*c.ratio[m]/link)
}

// alone is the seconds m takes for size bytes of NAR on one worker.
func (c *costModel) alone(m method, size float64) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.estimateLocked(m, size, 1) * float64(time.Second))
}

// plainSize is how large plain compression of size bytes is expected to be.
func (c *costModel) plainSize(size float64) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return size * c.ratio[plain]
}

// choose picks the method estimated to finish first among those allowed.
func (c *costModel) choose(size float64, allowed [nMethods]bool) method {
	c.mu.Lock()
	defer c.mu.Unlock()
	best, bestT := plain, -1.0
	for m := range nMethods {
		if !allowed[m] {
			continue
		}
		if t := c.estimateLocked(m, size, c.workers); bestT < 0 || t < bestT {
			best, bestT = m, t
		}
	}
	return best
}

// observe records that m prepared size bytes of NAR into out bytes in d.
func (c *costModel) observe(m method, size, out int, d time.Duration) {
	if size <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := 0.5 * min(1, float64(size)/sampleWeight)
	if s := d.Seconds(); s > 0 && m != asIs {
		c.speed[m] += w * (float64(size)/s - c.speed[m])
	}
	c.ratio[m] += w * (float64(out)/float64(size) - c.ratio[m])
}

// meter measures the link: how fast the connection takes what is
// written to it, once the buffers on the way (the SSH window, socket
// buffers) are full. It counts time spent inside writes only: time the
// sender spent waiting for a worker says nothing about the link.
type meter struct {
	w   io.Writer
	now func() time.Time

	mu            sync.Mutex
	total         int64
	bytes, nanos  float64 // decayed sums over recent writes
	nanosObserved float64
}

const (
	// meterWarmup is what the buffers between the laptop and the router
	// may take before a write waits for the link: SSH's 2 MiB channel
	// window, the router's reader and socket buffers.
	meterWarmup = 4 << 20
	// meterSpan is about how many recent bytes the estimate averages.
	meterSpan = 8 << 20
)

func (m *meter) Write(p []byte) (int, error) {
	t0 := m.now()
	n, err := m.w.Write(p)
	m.record(n, m.now().Sub(t0))
	return n, err
}

func (m *meter) record(n int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total += int64(n)
	if m.total <= meterWarmup {
		return
	}
	keep := max(0, 1-float64(n)/meterSpan)
	m.bytes = m.bytes*keep + float64(n)
	m.nanos = m.nanos*keep + float64(d)
	m.nanosObserved += float64(d)
}

// rate is the link's throughput in bytes a second, 0 while unknown.
func (m *meter) rate() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Some 10 ms of writing, past the buffers, say something.
	if m.nanosObserved < float64(10*time.Millisecond) || m.nanos <= 0 {
		return 0
	}
	return m.bytes / m.nanos * 1e9
}
