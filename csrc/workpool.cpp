#include "workpool.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
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

constexpr auto kSpin = std::chrono::microseconds(200);  // helpers' busy wait after a job

class Pool {
  public:
    void run(long n, int helpers, const std::function<void(long, int)>& fn) {
        std::unique_lock<std::mutex> call(call_m_, std::try_to_lock);
        if (!call.owns_lock() || helpers <= 0 || n <= 1) {
            for (long i = 0; i < n; ++i) fn(i, 0);
            return;
        }
        std::unique_lock<std::mutex> lk(m_);
        while ((int)threads_.size() < helpers) {
            const int slot = (int)threads_.size() + 1;
            const uint64_t g = gen_;  // the job published below is new to this helper
            threads_.emplace_back([this, slot, g] { loop(slot, g); });
            threads_.back().detach();
        }
        fn_ = &fn;
        next_ = 0;
        total_ = n;
        allowed_ = helpers;
        ++gen_;
        gen_seen_.store(gen_, std::memory_order_release);
        lk.unlock();
        cv_.notify_all();
        lk.lock();
        while (next_ < total_) {
            const long i = next_++;
            ++active_;
            lk.unlock();
            fn(i, 0);
            lk.lock();
            --active_;
        }
        done_cv_.wait(lk, [this] { return active_ == 0; });
        fn_ = nullptr;
    }

  private:
    void loop(int slot, uint64_t seen) {
        std::unique_lock<std::mutex> lk(m_);
        for (;;) {
            lk.unlock();
            const auto until = std::chrono::steady_clock::now() + kSpin;
            while (gen_seen_.load(std::memory_order_acquire) == seen &&
                   std::chrono::steady_clock::now() < until) {
                for (int k = 0; k < 64; ++k) KEPSPARSE_PAUSE();
            }
            lk.lock();
            cv_.wait(lk, [&] { return gen_ != seen; });
            seen = gen_;
            if (slot > allowed_) continue;
            while (fn_ && next_ < total_) {
                const long i = next_++;
                ++active_;
                const std::function<void(long, int)>* f = fn_;
                lk.unlock();
                (*f)(i, slot);
                lk.lock();
                --active_;
            }
            if (active_ == 0) done_cv_.notify_all();
        }
    }

    std::mutex call_m_;  // one job at a time
    std::mutex m_;
    std::condition_variable cv_, done_cv_;
    std::vector<std::thread> threads_;
    const std::function<void(long, int)>* fn_ = nullptr;
    long next_ = 0, total_ = 0;
    int active_ = 0, allowed_ = 0;
    uint64_t gen_ = 0;
    std::atomic<uint64_t> gen_seen_{0};
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: helpers may still sleep at exit
    return *p;
}

}  // namespace

void pool_run(long n, int helpers, const std::function<void(long, int)>& fn) {
    pool().run(n, helpers, fn);
}

int default_threads() {
#ifdef KEPSPARSE_OPENMP
    return openmp_max_threads();
#else
    const unsigned hc = std::thread::hardware_concurrency();
    return hc ? (int)hc : 1;
#endif
}

}  // namespace kepsparse
