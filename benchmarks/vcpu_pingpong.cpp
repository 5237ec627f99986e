// One cache line handed back and forth between two threads pinned to CPUs 0 and 1: prints
// the one-way transfer time. On this VM it reads ~40 ns in some phases and ~210 ns in
// others, switching every few seconds (benchmarks/README.md, "Threads and cache lines");
// run it before and after a 2-thread measurement to know which phase the measurement saw.
//
//   g++ -O2 -pthread benchmarks/vcpu_pingpong.cpp -o /tmp/vcpu_pingpong && /tmp/vcpu_pingpong
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof(s), &s);
}

alignas(64) std::atomic<long> flag{0};

}  // namespace

int main() {
    const long rounds = 200000;
    std::thread other([&] {
        pin(1);
        for (long i = 0; i < rounds; ++i) {
            while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
            }
            flag.store(2 * i + 2, std::memory_order_release);
        }
    });
    pin(0);
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < rounds; ++i) {
        flag.store(2 * i + 1, std::memory_order_release);
        while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
        }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    other.join();
    std::printf("one-way cache-line transfer between CPUs 0 and 1: ~%.0f ns\n",
                s * 1e9 / rounds / 2);
    return 0;
}
