// A small work-sharing thread pool in which the caller never waits for a helper that has
// not started: the caller claims items too, and only waits for items already running.
//
// Why not a plain `#pragma omp parallel for`: on a shared, oversubscribed machine an OpenMP
// team stalls at its closing barrier until every member has been scheduled (measured here:
// 40-70 ms per call instead of 0.3 ms with 2 threads under load 8). Here a helper the OS has
// not scheduled simply finds no work left. Helpers spin briefly after a job (back-to-back
// layers reuse them at once), then sleep.
#pragma once

#include <atomic>
#include <functional>

namespace kepsparse {

// Runs fn(item, slot) for every item in [0, n) on the caller (slot 0) and up to `helpers`
// pool threads (slots 1..helpers); returns when all items are done. fn must not throw.
// Concurrent callers do not share the pool: a second caller runs its items itself.
void pool_run(long n, int helpers, const std::function<void(long, int)>& fn);

// The same, but slot s first runs its own items [s*n/P, (s+1)*n/P) (P = helpers + 1) in
// order, and only then takes what is left of the others' (from the front of theirs). A
// slot is the same thread from call to call, so the calls of one shape give each thread
// the same pixels: what it packed or wrote in one call, it reads in the next from its
// own cache. Between the two vCPUs of this VM a cache line takes ~40 ns in some phases and
// ~200 ns in others (benchmarks/README.md, "Threads and cache lines"); reading the other
// thread's freshly written half of a layer's input doubled its time. A helper that never
// starts still costs nothing: the others take its items.
void pool_run_owned(long n, int helpers, const std::function<void(long, int)>& fn);

// Default thread count: OpenMP's (OMP_NUM_THREADS or the cores) when built with OpenMP.
int default_threads();

// Work units worth one more thread (default 1,000,000; env KEPSPARSE_WORK_PER_THREAD, read
// once). Measured for the sparse conv, whose unit is one FMA lane or one float packed or
// written, about 0.02 ns on one Zen 5 core (benchmarks/README.md, "Threads per call");
// other kernels count their steps in units of the same time.
double work_per_thread();

// Threads for a call of `work` units: one per work_per_thread() (or per `per_thread`
// units when given), at least 1, at most `threads` (<= 0: default_threads()) and 256.
int threads_for_work(double work, int threads, double per_thread = 0.0);

// A call site's choice between two thread counts by measured time, for work where a second
// thread may or may not pay: whether it does depends on this shared machine's phase (a
// hand-off costs ~1 us in quiet phases, tens of us in slow ones; benchmarks/README.md,
// "Threads per call"). pick() gives 0 (the default count) or 1 (the alternative): each
// until it has 3 timings, then the one with the lower running mean, and every 64th call
// the other one, so a change of phase is noticed. record() adds a call's time. Safe to
// share between threads (relaxed atomics: a lost update only delays the choice).
class ThreadChoice {
  public:
    int pick() const;
    void record(int k, double seconds);

  private:
    mutable std::atomic<unsigned> calls_{0};
    std::atomic<unsigned> seen_[2] = {{0}, {0}};
    std::atomic<double> mean_[2] = {{0.0}, {0.0}};
};

}  // namespace kepsparse
