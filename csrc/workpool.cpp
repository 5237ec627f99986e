#include "workpool.hpp"

#include <atomic>
#include <chrono>
#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu_features.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KEPSPARSE_PAUSE() _mm_pause()
#else
#define KEPSPARSE_PAUSE() std::this_thread::yield()
#endif

namespace kepsparse {

namespace {

// Helpers' busy wait after a job before they sleep (back-to-back layers reuse them at once).
// KEPSPARSE_POOL_SPIN_US overrides it (read once; for measuring).
std::chrono::microseconds spin_time() {
    static const long us = [] {
        const char* e = std::getenv("KEPSPARSE_POOL_SPIN_US");
        return e ? std::max(0L, std::atol(e)) : 200L;
    }();
    return std::chrono::microseconds(us);
}

// Protocol (one job at a time, call_m_):
//  - publish: under m_, the caller waits until no helper is registered (active_ == 0),
//    writes fn_ and the claim ranges (range_, parts_), and bumps gen_; sleeping helpers
//    are woken.
//  - a helper that sees a new gen_ registers under m_ (active_++, only if gen_ is still the
//    one it saw), then claims items with atomic fetch_adds on the range counters (no lock
//    per item) and deregisters (active_--, no lock). Since publishing waits for
//    active_ == 0 under the same lock registration takes, a registered helper's fn_ and
//    ranges are its job's.
//  - the caller claims items the same way, then waits (spinning, then yielding) only for
//    items helpers have already claimed. A helper that registers late finds no item left
//    and never calls fn.
// active_ and the claims use sequentially consistent operations: a helper's registration
// comes before its claims, and the caller's last claim before its check of active_, in one
// total order; so a helper holding an item is always seen by the caller's final wait.
class Pool {
  public:
    void run(long n, int helpers, const std::function<void(long, int)>& fn, bool owned) {
        std::unique_lock<std::mutex> call(call_m_, std::try_to_lock);
        if (!call.owns_lock() || helpers <= 0 || n <= 1) {
            for (long i = 0; i < n; ++i) fn(i, 0);
            return;
        }
        helpers = std::min(helpers, MAX_HELPERS);
        bool wake = false;
        {
            std::unique_lock<std::mutex> lk(m_);
            while ((int)threads_.size() < helpers) {
                const int slot = (int)threads_.size() + 1;
                const uint64_t g = gen_.load(std::memory_order_relaxed);
                threads_.emplace_back([this, slot, g] { loop(slot, g); });
                threads_.back().detach();
            }
            while (active_.load(std::memory_order_acquire) != 0) wait_briefly();
            fn_ = &fn;
            allowed_ = helpers;
            // one range per slot (owned), or all items in range 0 (claimed by everyone)
            parts_ = owned ? helpers + 1 : 1;
            for (int s = 0; s < parts_; ++s) {
                range_[s].next.store(n * s / parts_, std::memory_order_relaxed);
                range_[s].end = n * (s + 1) / parts_;
            }
            gen_.fetch_add(1, std::memory_order_release);
            wake = sleepers_ > 0;
        }
        if (wake) cv_.notify_all();
        for (long i; (i = claim(0, parts_)) >= 0;) fn(i, 0);
        for (int k = 0; active_.load() != 0; ++k) {
            if (k < 4096) KEPSPARSE_PAUSE(); else std::this_thread::yield();
        }
    }

  private:
    // The next item for `slot`: its own range's next, else the first left in another range
    // (parts of them); -1 when every item is claimed. Counters only grow, so a range seen
    // exhausted stays so.
    long claim(int slot, int parts) {
        for (int j = 0; j < parts; ++j) {
            Range& r = range_[(slot + j) % parts];
            // acquire: a range seen exhausted by another thread's claim also shows that
            // thread's registration to the final wait (see the protocol above)
            if (r.next.load(std::memory_order_acquire) >= r.end) continue;
            const long i = r.next.fetch_add(1);
            if (i < r.end) return i;
        }
        return -1;
    }

    static void wait_briefly() {
        for (int k = 0; k < 16; ++k) KEPSPARSE_PAUSE();
    }

    void loop(int slot, uint64_t seen) {
        for (;;) {
            // wait for a new job: spin for spin_time(), then sleep. The job is looked for
            // after every pause (~24 ns on Zen 5; after every 64, a helper came ~0.8 us late
            // on average, a tenth of a small layer), the clock after the first pause and
            // every 64th.
            const auto until = std::chrono::steady_clock::now() + spin_time();
            for (unsigned k = 0; gen_.load(std::memory_order_acquire) == seen; ++k) {
                KEPSPARSE_PAUSE();
                if (k % 64 == 0 && std::chrono::steady_clock::now() >= until) break;
            }
            std::unique_lock<std::mutex> lk(m_);
            if (gen_.load(std::memory_order_relaxed) == seen) {
                ++sleepers_;
                cv_.wait(lk, [&] { return gen_.load(std::memory_order_relaxed) != seen; });
                --sleepers_;
            }
            seen = gen_.load(std::memory_order_relaxed);
            if (slot > allowed_) continue;
            active_.fetch_add(1);  // registered (m_ is held); seq_cst, see below
            const std::function<void(long, int)>* f = fn_;
            const int parts = parts_;
            lk.unlock();
            for (long i; (i = claim(slot, parts)) >= 0;) (*f)(i, slot);
            active_.fetch_sub(1);
        }
    }

    std::mutex call_m_;  // one job at a time
    std::mutex m_;       // publishing a job, registering for it, going to sleep
    std::condition_variable cv_;
    std::vector<std::thread> threads_;
    const std::function<void(long, int)>* fn_ = nullptr;  // guarded by m_ (see above)
    int allowed_ = 0, sleepers_ = 0, parts_ = 1;
    std::atomic<uint64_t> gen_{0};
    std::atomic<int> active_{0};
    // claim counters, one cache line each (the threads claim from their own)
    struct alignas(64) Range {
        std::atomic<long> next{0};
        long end = 0;  // guarded by m_, like fn_
    };
    static constexpr int MAX_HELPERS = 255;
    Range range_[MAX_HELPERS + 1];
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: helpers may still sleep at exit
    return *p;
}

}  // namespace

void pool_run(long n, int helpers, const std::function<void(long, int)>& fn) {
    pool().run(n, helpers, fn, false);
}

void pool_run_owned(long n, int helpers, const std::function<void(long, int)>& fn) {
    pool().run(n, helpers, fn, true);
}

int default_threads() {
#ifdef KEPSPARSE_OPENMP
    return openmp_max_threads();
#else
    const unsigned hc = std::thread::hardware_concurrency();
    return hc ? (int)hc : 1;
#endif
}

// Work worth giving one more thread (units: see threads_for_work in workpool.hpp).
// Measured on Zen 5 with 2 threads, KEP 90 % 3x3 layers (benchmarks/README.md, "Threads per
// call"): a second thread breaks even at about 70,000 work units (16 channels at 16x16) and
// gains 1.26x at 250,000 (16 at 32x32) while hand-offs are cheap. But in this VM's slow
// phases (the other vCPU not running when asked) a hand-off costs tens of microseconds:
// CIFAR ResNet-56 at 2 threads took 1.5 ms with two threads on its ~300,000-unit layers,
// 0.9 ms on one. 1,000,000 per thread keeps such layers on one thread in every phase
// (ResNet-56: 0.9 ms either way; ImageNet layers, 2-20 million units, still split).
// Sparse convs between a tenth of this and this choose by measured time (ThreadChoice).
double work_per_thread() {
    static const double w = [] {
        const char* e = std::getenv("KEPSPARSE_WORK_PER_THREAD");
        char* end = nullptr;
        const double v = e ? std::strtod(e, &end) : 0.0;
        return (e && end != e && v >= 0.0) ? v : 1.0e6;
    }();
    return w;
}

int threads_for_work(double work, int threads, double per_thread) {
    const int nt_max = std::min(256, threads > 0 ? threads : default_threads());
    const double per = std::max(per_thread > 0.0 ? per_thread : work_per_thread(), 1.0);
    return (int)std::max(1.0, std::min((double)nt_max, work / per));
}

int ThreadChoice::pick() const {
    const unsigned c = calls_.fetch_add(1, std::memory_order_relaxed);
    for (int k = 0; k < 2; ++k)
        if (seen_[k].load(std::memory_order_relaxed) < 3) return k;
    const int best = mean_[1].load(std::memory_order_relaxed) <
                     mean_[0].load(std::memory_order_relaxed);
    return c % 64 == 0 ? 1 - best : best;
}

void ThreadChoice::record(int k, double seconds) {
    const unsigned n = seen_[k].load(std::memory_order_relaxed);
    const double m = mean_[k].load(std::memory_order_relaxed);
    // the mean of the first timings, then a running mean over ~8 calls; a call the OS
    // interrupted counts as twice the mean at most
    const double w = n < 8 ? 1.0 / (n + 1) : 1.0 / 8;
    const double t = n == 0 ? seconds : std::min(seconds, 2.0 * m);
    mean_[k].store(n == 0 ? t : m + w * (t - m), std::memory_order_relaxed);
    seen_[k].store(n + 1, std::memory_order_relaxed);
}

}  // namespace kepsparse
