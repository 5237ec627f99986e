// kep_sparse_conv.v -- RTL of the KEP sparse convolution engine (same micro-architecture as
// hls/cpp/kep_conv.h, bit-exact with the golden model kepsparse/fpga/quant.py).
//
// Synthesizable Verilog-2005, one clock, synchronous active-high reset, no delays.
//
// Operation
//   1. Load the int8 input (C, H, W), row-major, through the write port x_we/x_addr/x_data.
//   2. Pulse `start`. The engine walks filter o = 0..O-1; for each tile of P output pixels
//      it streams the non-zeros of filter o, one per cycle, each broadcast to P MACs (one per
//      output pixel). Zero weights and empty kernel planes take no cycle: a priority encoder
//      finds the next non-empty plane of the row and the next set bit of the plane's pattern.
//      An empty filter costs one cycle per tile (its outputs are the requantized bias).
//   3. One output word per tile: out_valid with out_o (filter), out_t (tile), out_data
//      (P int8 lanes, lane p in bits 8p+7..8p = output pixel t*P+p in (oh, ow) raster order),
//      out_lanes (lanes inside the image). No back-pressure: the consumer always accepts.
//   4. `done` pulses once when the last output has left; `cycles` holds start->done cycles.
//
// Weight ROMs ($readmemh, hex, one entry per line; KEP's pattern layout, see
// kepsparse/formats/pattern.py):
//   rom_plane_ids.mem  NPB bytes: bit-packed pattern id of every (o, c) plane, IDB bits each,
//                      little-endian bit stream
//   rom_patterns.mem   NPAT words of KH*KW bits: bit kh*KW+kw set where the pattern keeps
//   rom_values.mem     max(NNZ,1) bytes: int8 weights in (o, c, kh, kw) order
//   rom_bias.mem / rom_mult.mem / rom_shift.mem   O words: int32 bias, int32 multiplier M,
//                      shift n (y = sat((acc * M + 2^(n-1)) >>> n))
//
// Pipeline: E (emit token) -> R (ROM + P input reads) -> A (P MACs) -> Q (requantize, out).
module kep_sparse_conv #(
    parameter integer P    = 4,   // parallel MACs (output pixels per tile)
    parameter integer C    = 4,   // input channels
    parameter integer H    = 8,   // input height
    parameter integer W    = 8,   // input width
    parameter integer O    = 4,   // filters
    parameter integer KH   = 3,
    parameter integer KW   = 3,
    parameter integer SH   = 1,   // stride
    parameter integer SW   = 1,
    parameter integer PT   = 0,   // padding top / left (bottom / right follow from HO, WO)
    parameter integer PL   = 0,
    parameter integer HO   = 6,   // output size
    parameter integer WO   = 6,
    parameter integer NPAT = 2,   // pattern library rows (row 0 = empty pattern)
    parameter integer IDB  = 1,   // bits per plane id: 1, 2, 4, 8 or 16
    parameter integer NPB  = 2,   // bytes of packed plane ids
    parameter integer NNZ  = 1,   // stored weights (>= 1; an all-zero layer stores a dummy)
    parameter integer RELU = 0    // 1: fused ReLU (clamp at 0)
) (
    input  wire             clk,
    input  wire             rst,
    input  wire             x_we,
    input  wire [31:0]      x_addr,
    input  wire [7:0]       x_data,
    input  wire             start,
    output reg              busy,
    output reg              done,
    output reg              out_valid,
    output reg  [15:0]      out_o,
    output reg  [15:0]      out_t,
    output reg  [8*P-1:0]   out_data,
    output reg  [P-1:0]     out_lanes,
    output reg  [31:0]      cycles
);
    localparam integer KK   = KH * KW;
    localparam integer NPIX = HO * WO;
    localparam integer NT   = (NPIX + P - 1) / P;
    localparam integer XSZ  = C * H * W;
    localparam integer DQ   = P / WO;      // a tile step of P pixels = DQ rows + DR columns
    localparam integer DR   = P % WO;
    localparam integer ROWB = C * IDB;     // bits of one filter's plane ids

    // ---------------------------------------------------------------- memories
    reg [7:0]      xmem [0:XSZ-1];
    reg [7:0]      plane_ids [0:NPB-1];
    reg [KK-1:0]   lib [0:NPAT-1];
    reg [7:0]      vals [0:NNZ-1];
    reg [31:0]     bias [0:O-1];
    reg [31:0]     mult [0:O-1];
    reg [7:0]      shft [0:O-1];

    initial begin
        $readmemh("rom_plane_ids.mem", plane_ids);
        $readmemh("rom_patterns.mem", lib);
        $readmemh("rom_values.mem", vals);
        $readmemh("rom_bias.mem", bias);
        $readmemh("rom_mult.mem", mult);
        $readmemh("rom_shift.mem", shft);
    end

    always @(posedge clk) begin
        if (x_we) xmem[x_addr] <= x_data;
    end

    // the id stream as one vector; bit k of the stream = bit k%8 of byte k/8
    wire [8*NPB-1:0] ids_flat;
    genvar gi;
    generate
        for (gi = 0; gi < NPB; gi = gi + 1) begin : g_ids
            assign ids_flat[8*gi +: 8] = plane_ids[gi];
        end
    endgenerate

    // ---------------------------------------------------------------- emitter state
    localparam [2:0] S_IDLE = 3'd0, S_LOAD = 3'd1, S_EMIT = 3'd2, S_FLUSH = 3'd3, S_DRAIN = 3'd4;
    reg [2:0]  state;
    reg [15:0] o, t;
    reg [15:0] c, first_c;
    reg [KK-1:0] mask, first_mask;
    reg [31:0] vptr, row_base;
    reg        tile_first;
    reg [15:0] lane_oh [0:P-1];
    reg [15:0] lane_ow [0:P-1];

    // the current filter's plane ids and non-empty planes (combinational from o)
    wire [ROWB-1:0] row_ids = ids_flat[o*ROWB +: ROWB];
    reg  [C-1:0]    nonempty;
    integer ci;
    always @* begin
        for (ci = 0; ci < C; ci = ci + 1) nonempty[ci] = |row_ids[ci*IDB +: IDB];
    end

    // first non-empty plane of the row, and the next one after c
    reg        first_found, next_found;
    reg [15:0] first_idx, next_idx;
    integer fi;
    always @* begin
        first_found = 1'b0; first_idx = 16'd0;
        next_found = 1'b0;  next_idx = 16'd0;
        for (fi = C - 1; fi >= 0; fi = fi - 1) begin
            if (nonempty[fi]) begin
                first_found = 1'b1; first_idx = fi[15:0];
                if (fi > c) begin next_found = 1'b1; next_idx = fi[15:0]; end
            end
        end
    end
    wire [KK-1:0] first_pat = lib[row_ids[first_idx*IDB +: IDB]];
    wire [KK-1:0] next_pat  = lib[row_ids[next_idx*IDB +: IDB]];

    // the same for the next filter, so a row change costs no cycle
    wire [15:0]     o_next = (o == O - 1) ? 16'd0 : o + 16'd1;
    wire [ROWB-1:0] nrow_ids = ids_flat[o_next*ROWB +: ROWB];
    reg  [C-1:0]    nonempty_n;
    reg             nfirst_found;
    reg  [15:0]     nfirst_idx;
    integer ni, nj;
    always @* begin
        nfirst_found = 1'b0; nfirst_idx = 16'd0;
        for (ni = 0; ni < C; ni = ni + 1) nonempty_n[ni] = |nrow_ids[ni*IDB +: IDB];
        for (nj = C - 1; nj >= 0; nj = nj - 1)
            if (nonempty_n[nj]) begin nfirst_found = 1'b1; nfirst_idx = nj[15:0]; end
    end
    wire [KK-1:0] nfirst_pat = lib[nrow_ids[nfirst_idx*IDB +: IDB]];

    // lowest set bit of the current pattern mask
    reg [7:0] bit_idx;
    integer bi;
    always @* begin
        bit_idx = 8'd0;
        for (bi = KK - 1; bi >= 0; bi = bi - 1) if (mask[bi]) bit_idx = bi[7:0];
    end
    wire [KK-1:0] mask_rest = mask & (mask - 1'b1);

    // ---------------------------------------------------------------- stage E registers
    reg        e_valid, e_nop, e_first, e_last;
    reg [15:0] e_o, e_t, e_c;
    reg [7:0]  e_kh, e_kw;
    reg [31:0] e_vptr;
    reg [15:0] e_oh [0:P-1];
    reg [15:0] e_ow [0:P-1];
    reg [P-1:0] e_ok;

    // stage R (reads) and stage A (MACs) registers
    reg               r_valid, r_first, r_last;
    reg [15:0]        r_o, r_t;
    reg [P-1:0]       r_ok;
    reg signed [7:0]  r_w;
    reg signed [7:0]  r_x [0:P-1];
    reg               a_valid;
    reg [15:0]        a_o, a_t;
    reg [P-1:0]       a_ok;
    reg signed [31:0] acc [0:P-1];

    // lane p of tile t is inside the image when t*P + p < NPIX
    function [P-1:0] lanes_ok(input [15:0] tile);
        integer lp;
        begin
            for (lp = 0; lp < P; lp = lp + 1) lanes_ok[lp] = (tile * P + lp) < NPIX;
        end
    endfunction

    integer lp;
    task automatic lanes_reset;
        begin
            for (lp = 0; lp < P; lp = lp + 1) begin
                lane_oh[lp] <= lp / WO;
                lane_ow[lp] <= lp % WO;
            end
        end
    endtask
    task automatic lanes_advance;
        begin
            for (lp = 0; lp < P; lp = lp + 1) begin
                if (lane_ow[lp] + DR >= WO) begin
                    lane_ow[lp] <= lane_ow[lp] + DR - WO;
                    lane_oh[lp] <= lane_oh[lp] + DQ + 1;
                end else begin
                    lane_ow[lp] <= lane_ow[lp] + DR;
                    lane_oh[lp] <= lane_oh[lp] + DQ;
                end
            end
        end
    endtask

    integer ep;
    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE; busy <= 1'b0; done <= 1'b0; cycles <= 32'd0;
            e_valid <= 1'b0; o <= 16'd0; t <= 16'd0; c <= 16'd0; vptr <= 32'd0;
        end else begin
            done <= 1'b0;
            e_valid <= 1'b0;
            if (busy) cycles <= cycles + 32'd1;
            case (state)
                S_IDLE: if (start) begin
                    busy <= 1'b1; cycles <= 32'd0;
                    o <= 16'd0; vptr <= 32'd0;
                    state <= S_LOAD;
                end
                S_LOAD: begin  // one cycle at start: find filter 0's first non-empty plane
                    t <= 16'd0;
                    lanes_reset;
                    tile_first <= 1'b1;
                    row_base <= vptr;
                    if (first_found) begin
                        first_c <= first_idx; first_mask <= first_pat;
                        c <= first_idx; mask <= first_pat;
                        state <= S_EMIT;
                    end else begin
                        state <= S_FLUSH;
                    end
                end
                S_EMIT, S_FLUSH: begin
                    // the token of this cycle
                    e_valid <= 1'b1;
                    e_nop <= (state == S_FLUSH);
                    e_first <= tile_first || (state == S_FLUSH);
                    e_o <= o; e_t <= t; e_c <= c;
                    e_kh <= bit_idx / KW; e_kw <= bit_idx % KW;
                    e_vptr <= vptr;
                    e_ok <= lanes_ok(t);
                    for (ep = 0; ep < P; ep = ep + 1) begin
                        e_oh[ep] <= lane_oh[ep]; e_ow[ep] <= lane_ow[ep];
                    end
                    tile_first <= 1'b0;
                    e_last <= 1'b0;
                    if (state == S_EMIT && mask_rest != {KK{1'b0}}) begin
                        mask <= mask_rest; vptr <= vptr + 32'd1;
                    end else if (state == S_EMIT && next_found) begin
                        c <= next_idx; mask <= next_pat; vptr <= vptr + 32'd1;
                    end else begin  // last token of the tile
                        e_last <= 1'b1;
                        if (t != NT - 1) begin
                            t <= t + 16'd1;
                            lanes_advance;
                            tile_first <= 1'b1;
                            c <= first_c; mask <= first_mask; vptr <= row_base;
                        end else begin
                            if (o != O - 1) begin  // straight into the next filter
                                o <= o_next;
                                t <= 16'd0;
                                lanes_reset;
                                tile_first <= 1'b1;
                                row_base <= (state == S_EMIT) ? vptr + 32'd1 : vptr;
                                vptr <= (state == S_EMIT) ? vptr + 32'd1 : vptr;
                                if (nfirst_found) begin
                                    first_c <= nfirst_idx; first_mask <= nfirst_pat;
                                    c <= nfirst_idx; mask <= nfirst_pat;
                                    state <= S_EMIT;
                                end else begin
                                    state <= S_FLUSH;
                                end
                            end else begin
                                state <= S_DRAIN;
                            end
                        end
                    end
                end
                S_DRAIN: if (!e_valid && !r_valid && !a_valid) begin
                    busy <= 1'b0; done <= 1'b1; state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end

    // ---------------------------------------------------------------- stage R: reads
    integer rp, ih, iw;
    always @(posedge clk) begin
        if (rst) begin
            r_valid <= 1'b0;
        end else begin
            r_valid <= e_valid;
            r_first <= e_first; r_last <= e_last; r_o <= e_o; r_t <= e_t; r_ok <= e_ok;
            r_w <= e_nop ? 8'sd0 : vals[e_vptr];
            for (rp = 0; rp < P; rp = rp + 1) begin
                ih = e_oh[rp] * SH - PT + e_kh;
                iw = e_ow[rp] * SW - PL + e_kw;
                if (e_ok[rp] && ih >= 0 && ih < H && iw >= 0 && iw < W)
                    r_x[rp] <= xmem[(e_c * H + ih) * W + iw];
                else
                    r_x[rp] <= 8'sd0;
            end
        end
    end

    // ---------------------------------------------------------------- stage A: P MACs
    integer ap;
    always @(posedge clk) begin
        if (rst) begin
            a_valid <= 1'b0;
        end else begin
            a_valid <= r_valid && r_last;   // a finished tile for stage Q
            a_o <= r_o; a_t <= r_t; a_ok <= r_ok;
            if (r_valid) begin
                for (ap = 0; ap < P; ap = ap + 1)
                    acc[ap] <= (r_first ? $signed(bias[r_o]) : acc[ap]) + r_w * r_x[ap];
            end
        end
    end

    // ---------------------------------------------------------------- stage Q: requantize
    reg signed [63:0] prod, rnd;
    integer qp;
    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
        end else begin
            out_valid <= a_valid;
            if (a_valid) begin
                out_o <= a_o; out_t <= a_t; out_lanes <= a_ok;
                for (qp = 0; qp < P; qp = qp + 1) begin
                    prod = acc[qp] * $signed({32'd0, mult[a_o]});
                    rnd = (prod + (64'sd1 <<< (shft[a_o] - 1))) >>> shft[a_o];
                    if (rnd > 64'sd127)
                        out_data[8*qp +: 8] <= 8'd127;
                    else if (rnd < (RELU != 0 ? 64'sd0 : -64'sd128))
                        out_data[8*qp +: 8] <= (RELU != 0 ? 8'd0 : 8'h80);
                    else
                        out_data[8*qp +: 8] <= rnd[7:0];
                end
            end
        end
    end
endmodule
