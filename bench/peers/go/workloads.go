// Go peer for weft's microthread benchmarks (bench/compare.sh).
//
// What it measures: the cost of goroutines and unbuffered channels on ONE processor (GOMAXPROCS=1 is
// forced below), for the workloads defined in ../shared/ANCHORS.md ("Microthread runtimes"):
//
//	yield      2 goroutines calling runtime.Gosched; N switches in total (default 10,000,000).
//	           ns_per_op = ns per switch; checksum = number of Gosched calls (= N).
//	pingpong   main sends i on an unbuffered channel, a partner answers i+1 on another; N round trips
//	           (default 1,000,000). ns_per_op = ns per round trip; checksum = sum of answers = N(N+1)/2.
//	spawn      N goroutines (default 1,000,000) each blocking on a receive from ONE shared channel.
//	           ns_per_op = ns per task to spawn it and get it blocked; bytes_per_task = VmRSS delta / N;
//	           teardown_ms = close the channel and wait until all N have finished; checksum = N.
//	sieve      the classic concurrent prime sieve (generator + one filter goroutine per prime, chained by
//	           unbuffered channels), first N primes (default 2,000; sum 16274627). checksum = sum.
//	           teardown_ms = 0: Go cannot reclaim the blocked chain without changing the algorithm.
//	hackysack  K goroutines (default 1,000) each owning an unbuffered channel; main sends ball 0 to task 0;
//	           the holder computes nb = ball + 1, stops at nb == P (P = N, default 1,000,000), else picks
//	           t = xorshift64() % K (t == self -> (t + 1) % K), adds t to the checksum and sends nb to t.
//	           xorshift64: x ^= x << 13; x ^= x >> 7; x ^= x << 17, seed 88172645463325252.
//	           Checksums: K=1,000 -> 499382756, K=100,000 -> 50011331750.
//	           total_ms covers creating the K channels and goroutines plus all passes; teardown_ms =
//	           closing all channels and waiting for the K goroutines to end.
//
// Usage: workloads WORKLOAD [N] [K]. Prints exactly one JSON line on stdout:
//
//	{"impl":"go","workload":...,"n":...,"k":...,"ns_per_op":...,"total_ms":...,"checksum":...,
//	 "bytes_per_task":...,"teardown_ms":...,"stack_bytes":null,"build":"go","cxxflags":"",
//	 "sanitize":"","compiler":"go1.19.8"}
//
// stack_bytes is null: goroutine stacks start small and grow, there is no size to set (the C++
// implementations all run on 64 KiB). build/cxxflags/sanitize have no Go meaning; compiler is
// runtime.Version(). The Go toolchain always optimises (no -N/-l here).
//
// Timing uses time.Now/time.Since (monotonic) around the workload only.
// Build: GO111MODULE=off go build -o go_workloads workloads.go   (standard library only)
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	workload     string
	n, k         uint64
	total        time.Duration
	checksum     uint64
	bytesPerTask float64
	teardown     time.Duration
}

// rssBytes returns the resident set size from /proc/self/status (VmRSS, in kB there).
func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			if len(fields) >= 2 {
				kb, _ := strconv.ParseInt(fields[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func yieldBench(n uint64) result {
	var wg sync.WaitGroup
	var calls [2]uint64 // each slot written by one goroutine only
	start := time.Now()
	wg.Add(2)
	for w := 0; w < 2; w++ {
		count := n / 2
		if w == 0 {
			count = n - n/2
		}
		go func(w int, count uint64) {
			for i := uint64(0); i < count; i++ {
				runtime.Gosched()
				calls[w]++
			}
			wg.Done()
		}(w, count)
	}
	wg.Wait()
	total := time.Since(start)
	return result{workload: "yield", n: n, total: total, checksum: calls[0] + calls[1]}
}

func pingpongBench(n uint64) result {
	ping := make(chan uint64)
	pong := make(chan uint64)
	start := time.Now()
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	var sum uint64
	for i := uint64(0); i < n; i++ {
		ping <- i
		sum += <-pong
	}
	total := time.Since(start)
	close(ping)
	return result{workload: "pingpong", n: n, total: total, checksum: sum}
}

func spawnBench(n uint64) result {
	ch := make(chan struct{})
	var blocked int64 // incremented by each goroutine right before it blocks
	var finished uint64
	var wg sync.WaitGroup
	runtime.GC()
	rssBefore := rssBytes()

	start := time.Now()
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		go func() {
			atomic.AddInt64(&blocked, 1)
			<-ch
			atomic.AddUint64(&finished, 1)
			wg.Done()
		}()
	}
	// On one P, main only runs again when the others have parked or been queued behind it.
	for atomic.LoadInt64(&blocked) < int64(n) {
		runtime.Gosched()
	}
	total := time.Since(start)
	rssAfter := rssBytes()

	tstart := time.Now()
	close(ch)
	wg.Wait()
	teardown := time.Since(tstart)
	return result{workload: "spawn", n: n, total: total, checksum: atomic.LoadUint64(&finished),
		bytesPerTask: float64(rssAfter-rssBefore) / float64(n), teardown: teardown}
}

func generate(ch chan<- uint64) {
	for i := uint64(2); ; i++ {
		ch <- i
	}
}

func filter(in <-chan uint64, out chan<- uint64, prime uint64) {
	for {
		i := <-in
		if i%prime != 0 {
			out <- i
		}
	}
}

func sieveBench(n uint64) result {
	start := time.Now()
	ch := make(chan uint64)
	go generate(ch)
	var sum uint64
	for i := uint64(0); i < n; i++ {
		prime := <-ch
		sum += prime
		ch1 := make(chan uint64)
		go filter(ch, ch1, prime)
		ch = ch1
	}
	total := time.Since(start)
	return result{workload: "sieve", n: n, total: total, checksum: sum}
}

func hackysackBench(p, k uint64) result {
	// rng and checksum are touched only by the current ball holder; the channel hand-off orders them.
	rng := uint64(88172645463325252)
	var checksum uint64
	var wg sync.WaitGroup
	done := make(chan uint64)

	start := time.Now()
	chans := make([]chan uint64, k)
	for i := range chans {
		chans[i] = make(chan uint64)
	}
	wg.Add(int(k))
	for i := uint64(0); i < k; i++ {
		go func(self uint64) {
			for ball := range chans[self] {
				nb := ball + 1
				if nb == p {
					done <- nb
					continue
				}
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				t := rng % k
				if t == self {
					t = (t + 1) % k
				}
				checksum += t
				chans[t] <- nb
			}
			wg.Done()
		}(i)
	}
	chans[0] <- 0
	<-done
	total := time.Since(start)

	tstart := time.Now()
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	teardown := time.Since(tstart)
	return result{workload: "hackysack", n: p, k: k, total: total, checksum: checksum, teardown: teardown}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: workloads {yield|pingpong|spawn|sieve|hackysack} [N] [K]")
	os.Exit(2)
}

func main() {
	runtime.GOMAXPROCS(1)
	if len(os.Args) < 2 {
		usage()
	}
	argOr := func(i int, def uint64) uint64 {
		if len(os.Args) > i {
			v, err := strconv.ParseUint(os.Args[i], 10, 64)
			if err != nil || v == 0 {
				usage()
			}
			return v
		}
		return def
	}
	var r result
	switch os.Args[1] {
	case "yield":
		r = yieldBench(argOr(2, 10000000))
	case "pingpong":
		r = pingpongBench(argOr(2, 1000000))
	case "spawn":
		r = spawnBench(argOr(2, 1000000))
	case "sieve":
		r = sieveBench(argOr(2, 2000))
	case "hackysack":
		k := argOr(3, 1000)
		if k < 2 {
			usage()
		}
		r = hackysackBench(argOr(2, 1000000), k)
	default:
		usage()
	}
	totalNs := float64(r.total.Nanoseconds())
	fmt.Printf("{\"impl\":\"go\",\"workload\":\"%s\",\"n\":%d,\"k\":%d,\"ns_per_op\":%.2f,\"total_ms\":%.3f,"+
		"\"checksum\":%d,\"bytes_per_task\":%.1f,\"teardown_ms\":%.3f,\"stack_bytes\":null,\"build\":\"go\","+
		"\"cxxflags\":\"\",\"sanitize\":\"\",\"compiler\":%q}\n",
		r.workload, r.n, r.k, totalNs/float64(r.n), totalNs/1e6, r.checksum, r.bytesPerTask,
		float64(r.teardown.Nanoseconds())/1e6, runtime.Version())
}
