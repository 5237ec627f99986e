// tb.cpp -- C simulation testbench: runs the kernel on data/input.dat and compares every
// output with the golden model's data/golden.dat (both one decimal integer per line).
// Writes data/csim_output.dat; prints one summary line; returns 0 only when bit-exact.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernel.h"

static bool read_ints(const char *path, std::vector<int> &out, size_t count) {
    FILE *f = std::fopen(path, "r");
    if (!f) { std::fprintf(stderr, "csim: cannot open %s\n", path); return false; }
    out.resize(count);
    for (size_t i = 0; i < count; ++i) {
        if (std::fscanf(f, "%d", &out[i]) != 1) {
            std::fprintf(stderr, "csim: %s has fewer than %zu values\n", path, count);
            std::fclose(f);
            return false;
        }
    }
    std::fclose(f);
    return true;
}

int main() {
    const size_t nx = size_t(layer_config::C) * layer_config::H * layer_config::W;
    const size_t ny = size_t(layer_config::O) * layer_config::HO * layer_config::WO;
    std::vector<int> xin, gold;
    if (!read_ints("data/input.dat", xin, nx) || !read_ints("data/golden.dat", gold, ny)) return 2;
    std::vector<int8_t> x(nx), y(ny);
    for (size_t i = 0; i < nx; ++i) x[i] = int8_t(xin[i]);
    uint32_t cycles = 0;
    KEP_TOP(x.data(), y.data(), &cycles);
    size_t bad = 0;
    FILE *f = std::fopen("data/csim_output.dat", "w");
    for (size_t i = 0; i < ny; ++i) {
        if (f) std::fprintf(f, "%d\n", int(y[i]));
        if (int(y[i]) != gold[i]) {
            if (bad < 5) {
                const size_t per = size_t(layer_config::HO) * layer_config::WO;
                std::printf("csim: mismatch at o=%zu pixel=%zu: got %d, golden %d\n", i / per,
                            i % per, int(y[i]), gold[i]);
            }
            ++bad;
        }
    }
    if (f) std::fclose(f);
    std::printf("csim: outputs=%zu mismatches=%zu cycles=%u\n", ny, bad, cycles);
    return bad == 0 ? 0 : 1;
}
