// Shared by every kernel file: the output store and the kernel entry points.
//
// Each <type>.metal file states its block layout once (a struct), defines one decode function
//     void dequantize_<type>(device const block_<type> *b, ushort sub, thread float *y)
// that writes the GGUF_SUB_<type> float32 values of sub-block `sub` exactly as ggml's CPU reference
// computes them, and ends with GGUF_DEQUANT_KERNELS(<type>). The thread mapping is described once,
// in gguf_dequant/launch.py; gguf_types.h is generated from it.
//
// The same files compile in three modes:
//   - Metal (kernel-builder, torch.mps.compile_shader): entry points `dequantize_<type>_{f32,f16,bf16}`;
//   - the Linux harness (clang-19, C++ for OpenCL, our metal_stdlib shim): the same entry points;
//   - the CPU backend (GGUF_CPU defined, plain C++, cpu/shim/metal_stdlib): a function per type that
//     loops over a range of threads, called from at::parallel_for.
// Decode functions therefore use scalars and arrays only (no vector types), and read half fields by
// converting to float first: every product in the formats is exact in float32, so computing in float
// and rounding once at the store gives ggml's results bit for bit.
#pragma once

#include <metal_stdlib>
#include "gguf_types.h"

using namespace metal;

// Ask Metal for IEEE arithmetic (denormals kept, no reassociation) where the language has the pragma: the
// math modes came with macOS 15 / MSL 3.2 (MTLCompileOptions.mathMode is macOS 15+, Dawn emits
// `#pragma METAL fp math_mode(...)` only there, openai/gpt-oss's Metal kernels use `safe`). kernel-builder
// compiles with -std=metal4.0 and fast math by default. The kernels do not depend on it: their results
// are the same with denormals flushed (tests/test_fast_math.py).
#if defined(__METAL_VERSION__) && __METAL_VERSION__ >= 320 && !defined(GGUF_CPU)
#pragma METAL fp math_mode(safe)
#endif

// bfloat came with MSL 3.1 (macOS 14). Below it every bfloat kernel (bfloat16 outputs and activations, the
// BF16 weight type) is left out, so the rest of the library still compiles (the run-time path says which
// dtypes it offers: gguf_dequant.metal_jit). The CPU build always has it.
#if defined(__METAL_VERSION__) && __METAL_VERSION__ < 310 && !defined(GGUF_CPU)
#define GGUF_BFLOAT 0
#define GGUF_IF_BFLOAT(...)
#else
#define GGUF_BFLOAT 1
#define GGUF_IF_BFLOAT(...) __VA_ARGS__
#endif

// +1 or -1 for sign bit j of `bits` (set = negative). Arithmetic rather than a select: GCC vectorizes it.
inline float gguf_sign(uint bits, uint j) {
    return float(1 - 2 * int((bits >> j) & 1));
}

// Round a float to T (float, half or bfloat) to nearest even. bfloat is rounded on the bits (as the CPU
// store does), so a float32 subnormal that rounds up to bfloat16's smallest normal is never flushed.
template <typename T>
inline T gguf_round(float x) {
    return T(x);
}

#if GGUF_BFLOAT
template <>
inline bfloat gguf_round<bfloat>(float x) {
    const uint u = as_type<uint>(x);
    const uint bits = (u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return as_type<bfloat>(ushort(bits));
}
#endif

// y[j] = float(table[(q[j] >> shift) & 0xF]) * d for j < N (N = 8 or 16): a 16-entry table of the nibbles of
// N bytes. Compilers do not vectorize the table load, so the CPU build does it with a byte shuffle (the
// shim's lookup_nibbles: the same values, the same one rounding of the product).
template <int N>
inline void gguf_nibble_lookup(constant int8_t *table, device const uchar *q, uint shift, float d, thread float *y) {
#ifdef GGUF_CPU
    metal::lookup_nibbles<N>(table, q, shift, d, y);
#else
    for (int j = 0; j < N; ++j) {
        y[j] = float(int(table[(q[j] >> shift) & 0xF])) * d;
    }
#endif
}

// y[j] = float(table[q[j] & 0xF]) * d and y[N + j] = float(table[q[j] >> 4]) * d for j < N (N = 8 or 16): the
// low nibbles of N bytes, then their high nibbles. The CPU build looks up the 16 nibbles of 8 bytes in one
// byte shuffle (the shim's lookup_nibbles_both).
template <int N>
inline void gguf_nibble_lookup_both(constant int8_t *table, device const uchar *q, float d, thread float *y) {
#ifdef GGUF_CPU
    metal::lookup_nibbles_both<N>(table, q, d, y);
#else
    gguf_nibble_lookup<N>(table, q, 0, d, y);
    gguf_nibble_lookup<N>(table, q, 4, d, y + N);
#endif
}

// y[j] = float(q[j]) * d for j < N (a multiple of 8): signed bytes times a scale. Compilers keep a 16-byte
// loop at 4 floats per vector, so the CPU build widens 16 bytes at a time (the shim's scale_int8: the same
// one rounding of each product).
template <int N>
inline void gguf_scale_int8(device const int8_t *q, float d, thread float *y) {
#ifdef GGUF_CPU
    metal::scale_int8<N>(q, d, y);
#else
    for (int j = 0; j < N; ++j) {
        y[j] = float(int(q[j])) * d;
    }
#endif
}

// y[j] = float(int((q[j] >> shift) & 0xF) - offset) * d for j < N (N = 16): nibbles minus an offset, times a
// scale; the CPU build widens the 16 nibbles at once (the shim's scale_nibbles), as for gguf_scale_int8.
template <int N>
inline void gguf_scale_nibbles(device const uchar *q, uint shift, int offset, float d, thread float *y) {
#ifdef GGUF_CPU
    metal::scale_nibbles<N>(q, shift, offset, d, y);
#else
    for (int j = 0; j < N; ++j) {
        y[j] = float(int((q[j] >> shift) & 0xF) - offset) * d;
    }
#endif
}

// y[j] = float((q[j] >> shift) & mask) for j < N (a multiple of 16): one bit field of each of N bytes, as
// floats. The integer fields of the low-bit formats are unpacked here and scaled by float loops in the decode
// functions: compilers vectorize a loop mixing bytes and floats at the bytes' width (4 floats per vector); the
// CPU build unpacks 16 bytes per instruction (the shim's unpack_bits).
template <int N>
inline void gguf_unpack_bits(device const uchar *q, uint shift, uint mask, thread float *y) {
#ifdef GGUF_CPU
    metal::unpack_bits<N>(q, shift, mask, y);
#else
    for (int j = 0; j < N; ++j) {
        y[j] = float((q[j] >> shift) & mask);
    }
#endif
}

// v[j] = q[j] for j < N (a multiple of 8): bytes widened to 32-bit integers, so that the integer loop that
// follows works at one width (compilers vectorize a loop mixing bytes and 32-bit values at the bytes' width).
template <int N>
inline void gguf_widen_bytes(device const uchar *q, thread uint *v) {
#ifdef GGUF_CPU
    metal::widen_bytes<N>(q, v);
#else
    for (int j = 0; j < N; ++j) {
        v[j] = q[j];
    }
#endif
}

// y[k] = float(grid[rows[r]][j]) * gguf_sign(signs, k) for k = W * r + j < 32 (R * W = 32): R rows of a grid
// table as floats, negated where bit k of `signs` is set (exact: the negation of a grid value). The CPU build
// loads each row as one word, widens 16 values at a time and flips their sign bits under a mask (the shim's
// grid_values).
template <int R, int W, typename E>
inline void gguf_grid_values(constant E (*grid)[W], thread const uint *rows, uint signs, thread float *y) {
#ifdef GGUF_CPU
    metal::grid_values<R, W>(grid, rows, signs, y);
#else
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < W; ++j) {
            y[W * r + j] = float(grid[rows[r]][j]) * gguf_sign(signs, W * r + j);
        }
    }
#endif
}

// Store N decoded values as T (float, half or bfloat), rounding to nearest even once. SUBNORMALS false
// promises that no value is a float32 subnormal: the CPU's bfloat16 store then skips its check for them.
template <typename T, int N, bool SUBNORMALS = true>
inline void gguf_store(device T *dst, thread const float *y) {
#ifdef GGUF_CPU
    metal::store_values<N, SUBNORMALS>(dst, y);
#else
    // Wide stores; the host guarantees dst is aligned to 4 elements.
    device vec<T, 4> *dst4 = reinterpret_cast<device vec<T, 4> *>(dst);
    for (int i = 0; i < N / 4; ++i) {
        vec<T, 4> v;
        v.x = gguf_round<T>(y[4 * i + 0]);
        v.y = gguf_round<T>(y[4 * i + 1]);
        v.z = gguf_round<T>(y[4 * i + 2]);
        v.w = gguf_round<T>(y[4 * i + 3]);
        dst4[i] = v;
    }
#endif
}

#ifdef GGUF_CPU

// CPU: decode threads [t0, t1) of the launch description into dst (n_elements is for the float
// types' tail; quantized types always cover whole blocks). Whole blocks call the decode function once per
// sub-block with `sub` a compile-time constant, everything inlined (flatten), so compilers fold the
// per-sub-block shifts, offsets and branches and vectorize each sub-block's loops. Float output is decoded
// straight into dst. Half and bfloat output of 32-value sub-blocks is converted right after each decode:
// the values are two vectors still in registers. 16-value sub-blocks are decoded into a group of at least
// 256 floats, converted at once: converting each right after its decode loads vectors still in the store
// buffer, at another width than the store for some decode loops, which stalls store forwarding.
// SUBNORMALS: whether the type's values can be float32 subnormals (gguf_dequant.types.SUBNORMAL_OUTPUTS).
template <int S, bool SUBNORMALS, typename B, typename T, typename Decode>
inline void gguf_cpu_sub_block(const B *block, ushort sub, T *__restrict dst, Decode decode) {
    if constexpr (std::is_same_v<T, float>) {
        decode(block, sub, dst);
    } else {
        float y[S];
        decode(block, sub, y);
        gguf_store<T, S, SUBNORMALS>(dst, y);
    }
}

template <int S, bool SUBNORMALS, typename B, typename T, typename Decode, int... SUB>
inline void gguf_cpu_block(const B *block, T *__restrict dst, Decode decode, std::integer_sequence<int, SUB...>) {
    (gguf_cpu_sub_block<S, SUBNORMALS>(block, ushort(SUB), dst + SUB * S, decode), ...);
}

// A type's file may give the CPU build a whole-block decoder: a specialization of gguf_cpu_whole_block with
// decode(block, dst) writing the block's QK values as T, the same bits as its decode function and gguf_store
// (used for whole blocks; partial ones take the decode function).
template <typename B>
struct gguf_cpu_whole_block {
    static constexpr bool defined = false;
};

template <int QK, int S, bool SUBNORMALS, typename B, typename T, typename Decode>
__attribute__((flatten)) inline void gguf_cpu_threads(const B *blocks, T *dst, long t0, long t1, Decode decode) {
    constexpr long SUBS = QK / S;
    constexpr long GROUP = QK >= 256 ? 1 : 256 / QK;  // blocks per conversion of 16-value sub-blocks
    constexpr auto subs = std::make_integer_sequence<int, int(SUBS)>();
    const auto one_thread = [&](long t) {
        gguf_cpu_sub_block<S, SUBNORMALS>(blocks + t / SUBS, ushort(t % SUBS), dst + t * S, decode);
    };
    long t = t0;
    for (; t < t1 && t % SUBS != 0; ++t) {
        one_thread(t);
    }
    if constexpr (gguf_cpu_whole_block<B>::defined) {
        for (; t + SUBS <= t1; t += SUBS) {
            gguf_cpu_whole_block<B>::decode(blocks + t / SUBS, dst + t * S);
        }
    } else if constexpr (std::is_same_v<T, float> || S >= 32) {
        for (; t + SUBS <= t1; t += SUBS) {
            gguf_cpu_block<S, SUBNORMALS>(blocks + t / SUBS, dst + t * S, decode, subs);
        }
    } else {
        for (; t + GROUP * SUBS <= t1; t += GROUP * SUBS) {
            float y[GROUP * QK];
            for (long g = 0; g < GROUP; ++g) {
                gguf_cpu_block<S, SUBNORMALS>(blocks + t / SUBS + g, y + g * QK, decode, subs);
            }
            gguf_store<T, GROUP * QK, SUBNORMALS>(dst + t * S, y);
        }
    }
    for (; t < t1; ++t) {
        one_thread(t);
    }
}

#define GGUF_DEQUANT_KERNELS(NAME)                                                              \
    template <typename T>                                                                       \
    inline void cpu_dequantize_##NAME(const uchar *src, T *dst, long t0, long t1, long) {       \
        gguf_cpu_threads<GGUF_QK_##NAME, GGUF_SUB_##NAME, GGUF_SUBNORMALS_##NAME>(              \
            reinterpret_cast<const block_##NAME *>(src), dst, t0, t1,                           \
            [](const block_##NAME *b, ushort sub, float *__restrict y) { dequantize_##NAME(b, sub, y); }); \
    }

#else

#define GGUF_KERNEL_PARAMS(NAME, T)                                                             \
    device const block_##NAME *src [[buffer(0)]], device T *dst [[buffer(1)]],                 \
        constant ulong &n_elements [[buffer(2)]], uint tid [[thread_position_in_grid]]

// Metal: one kernel template per type, instantiated for each output type.
#define GGUF_DEQUANT_KERNELS(NAME)                                                              \
    template <typename T>                                                                       \
    kernel void kernel_dequantize_##NAME(GGUF_KERNEL_PARAMS(NAME, T)) {                         \
        if (ulong(tid) * GGUF_SUB_##NAME >= n_elements) {                                       \
            return;                                                                             \
        }                                                                                       \
        constexpr uint SUBS = GGUF_QK_##NAME / GGUF_SUB_##NAME;                                 \
        float y[GGUF_SUB_##NAME];                                                               \
        dequantize_##NAME(src + tid / SUBS, ushort(tid % SUBS), y);                             \
        gguf_store<T, GGUF_SUB_##NAME>(dst + ulong(tid) * GGUF_SUB_##NAME, y);                  \
    }                                                                                           \
    template [[host_name("dequantize_" #NAME "_f32")]] kernel void                              \
    kernel_dequantize_##NAME<float>(GGUF_KERNEL_PARAMS(NAME, float));                           \
    template [[host_name("dequantize_" #NAME "_f16")]] kernel void                              \
    kernel_dequantize_##NAME<half>(GGUF_KERNEL_PARAMS(NAME, half));                             \
    GGUF_IF_BFLOAT(template [[host_name("dequantize_" #NAME "_bf16")]] kernel void              \
                   kernel_dequantize_##NAME<bfloat>(GGUF_KERNEL_PARAMS(NAME, bfloat));)

#endif

// Compute on packed weights: GGUF_MATMUL_FACTORED_KERNELS(<type>) after each decode function.
#include "gguf_matmul.h"
