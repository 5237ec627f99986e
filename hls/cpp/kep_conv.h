// kep_conv.h -- the KEP sparse convolution engine in HLS C++ (standard integer types only,
// so g++ compiles it for C simulation and Vitis HLS synthesizes it as is).
//
// Micro-architecture (non-sliding-window): for every output channel o and every tile of P
// output pixels, the non-zero weights of filter o are streamed one per cycle; each weight is
// broadcast to P parallel MACs, one per output pixel of the tile. Zero weights are never
// visited: the weight ROMs hold KEP's pattern layout (see kepsparse/formats/pattern.py):
//   plane_ids : the bit-packed pattern id of every (o, c) kernel plane (little-endian bits)
//   patterns  : the pattern library, one KH*KW-bit mask per pattern (bit kh*KW+kw)
//   values    : int8 weights, per plane in (o, c) order, pattern positions in (kh, kw) order
// Requantization (the golden model, kepsparse/fpga/quant.py):
//   y = clip((int64(acc) * mult[o] + 2^(shift[o]-1)) >> shift[o], relu ? 0 : -128, 127)
//
// CFG is a layer config struct (generated layer_config.h documents every field).
#ifndef KEP_CONV_H
#define KEP_CONV_H

#include <cstdint>

namespace kep {

// Pattern id of plane k from the bit-packed id stream (ids are 1, 2, 4, 8 or 16 bits).
template <int B>
inline unsigned plane_id(const uint8_t ids[], int k) {
    if (B == 16) return unsigned(ids[2 * k]) | (unsigned(ids[2 * k + 1]) << 8);
    const int bit = k * B;
    return (unsigned(ids[bit >> 3]) >> (bit & 7)) & ((1u << B) - 1u);
}

// Index of the lowest set bit of a non-zero mask (a priority encoder in hardware).
template <int KK>
inline int lowest_bit(uint64_t mask) {
    int found = -1;
LOWEST_BIT:
    for (int b = KK - 1; b >= 0; --b) {
#pragma HLS UNROLL
        if ((mask >> b) & 1u) found = b;
    }
    return found;
}

inline int8_t requantize(int32_t acc, int32_t mult, int shift, bool relu) {
    const int64_t prod = int64_t(acc) * int64_t(mult);
    const int64_t r = (prod + (int64_t(1) << (shift - 1))) >> shift;  // arithmetic shift
    const int64_t lo = relu ? 0 : -128;
    return int8_t(r < lo ? lo : (r > 127 ? 127 : r));
}

// x: int8 input (C, H, W) row-major; y: int8 output (O, HO, WO) row-major.
// cycles: the modelled cycle count (one per streamed non-zero, one per tile of an empty
// filter, one per plane scanned at the start of each filter row).
template <class CFG>
void sparse_conv(const int8_t x[CFG::C * CFG::H * CFG::W], int8_t y[CFG::O * CFG::HO * CFG::WO],
                 const uint8_t plane_ids[], const uint64_t patterns[], const int8_t values[],
                 const int32_t bias[], const int32_t mult[], const uint8_t shift[],
                 uint32_t *cycles) {
    constexpr int NPIX = CFG::HO * CFG::WO;
    constexpr int NT = (NPIX + CFG::P - 1) / CFG::P;
    uint32_t cyc = 0;
    int vbase = 0;  // first value of the current filter
    int planes[CFG::C];  // non-empty planes of the current filter
    uint64_t plane_mask[CFG::C];
ROW:
    for (int o = 0; o < CFG::O; ++o) {
        int nplanes = 0, row_nnz = 0;
    ROW_SCAN:
        for (int c = 0; c < CFG::C; ++c) {
#pragma HLS PIPELINE II = 1
            const unsigned id = plane_id<CFG::ID_BITS>(plane_ids, o * CFG::C + c);
            ++cyc;
            if (id == 0) continue;
            const uint64_t m = patterns[id];
            planes[nplanes] = c;
            plane_mask[nplanes] = m;
            ++nplanes;
            row_nnz += __builtin_popcountll(m);
        }
    TILE:
        for (int t = 0; t < NT; ++t) {
            int32_t acc[CFG::P];
#pragma HLS ARRAY_PARTITION variable = acc complete
            int ih0[CFG::P], iw0[CFG::P];
            bool ok[CFG::P];
        LANE_INIT:
            for (int p = 0; p < CFG::P; ++p) {
#pragma HLS UNROLL
                const int q = t * CFG::P + p;
                ok[p] = q < NPIX;
                ih0[p] = (q / CFG::WO) * CFG::SH - CFG::PT;
                iw0[p] = (q % CFG::WO) * CFG::SW - CFG::PL;
                acc[p] = bias[o];
            }
            int j = 0, vptr = vbase;
            uint64_t mask = nplanes ? plane_mask[0] : 0;
        NZ:  // one non-zero weight per cycle, broadcast to the P MACs
            for (int k = 0; k < row_nnz; ++k) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 0 max = CFG::C * CFG::KH * CFG::KW
                const int b = lowest_bit<CFG::KH * CFG::KW>(mask);
                const int c = planes[j];
                const int kh = b / CFG::KW, kw = b % CFG::KW;
                const int32_t w = values[vptr];
            MAC:
                for (int p = 0; p < CFG::P; ++p) {
#pragma HLS UNROLL
                    const int ih = ih0[p] + kh, iw = iw0[p] + kw;
                    const bool in = ok[p] && ih >= 0 && ih < CFG::H && iw >= 0 && iw < CFG::W;
                    const int32_t xv = in ? int32_t(x[(c * CFG::H + ih) * CFG::W + iw]) : 0;
                    acc[p] += w * xv;
                }
                ++vptr;
                ++cyc;
                mask &= mask - 1;
                if (mask == 0 && ++j < nplanes) mask = plane_mask[j];
            }
            if (row_nnz == 0) ++cyc;  // an empty filter still writes its tile (bias only)
        WRITE_BACK:
            for (int p = 0; p < CFG::P; ++p) {
#pragma HLS UNROLL
                const int q = t * CFG::P + p;
                if (q < NPIX) y[o * NPIX + q] = requantize(acc[p], mult[o], shift[o], CFG::RELU);
            }
        }
        vbase += row_nnz;
    }
    *cycles = cyc;
}

}  // namespace kep

#endif  // KEP_CONV_H
