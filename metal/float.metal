#include "gguf_common.h"

// F32, F16, BF16: one element per "block". Thread t converts elements [8t, min(8t + 8, n)), so the
// last thread of a launch handles the tail; widening to float is exact and the store rounds once.
// Nothing goes through float arithmetic that fast math could flush: the same type in and out is copied,
// BF16 widens by a shift, F16 from its bit fields on Metal (the CPU's hardware conversion is exact), and
// gguf_store rounds to bfloat16 on the bits.
inline float gguf_load(device const float *p) {
    return *p;
}

#if GGUF_BFLOAT
inline float gguf_load(device const bfloat *p) {
    return as_type<float>(uint(as_type<ushort>(*p)) << 16);
}
#endif

// The half with bits h as float, from its bit fields.
inline float gguf_half_bits(uint h) {
    const uint sign = (h & 0x8000u) << 16;
    const uint exponent = (h >> 10) & 0x1Fu;
    const uint man = h & 0x3FFu;
    if (exponent == 0) {  // zero or subnormal: man * 2^-24, a normal float (or zero), exact
        return as_type<float>(sign | as_type<uint>(float(man) * 5.9604644775390625e-8f));  // 2^-24
    }
    return as_type<float>(sign | (exponent == 0x1Fu ? 0x7F800000u : (exponent + 112u) << 23) | (man << 13));
}

inline float gguf_load(device const half *p) {
#ifdef GGUF_CPU
    return float(*p);
#else
    return gguf_half_bits(as_type<ushort>(*p));
#endif
}

#ifdef GGUF_METAL_MATMUL
// The mat-vec tier's wide loads (gguf_matmul.h): 4 elements as gguf_load widens them.
float4 gguf_mv_load4(device const float *p) {
    return *reinterpret_cast<device const float4 *>(p);
}

float4 gguf_mv_load4(device const half *p) {
    const uint2 b = *reinterpret_cast<device const uint2 *>(p);
    float4 v;
    v.x = gguf_half_bits(b.x & 0xFFFFu);
    v.y = gguf_half_bits(b.x >> 16);
    v.z = gguf_half_bits(b.y & 0xFFFFu);
    v.w = gguf_half_bits(b.y >> 16);
    return v;
}

#if GGUF_BFLOAT
float4 gguf_mv_load4(device const bfloat *p) {
    const uint2 b = *reinterpret_cast<device const uint2 *>(p);
    float4 v;
    v.x = as_type<float>(b.x << 16);
    v.y = as_type<float>(b.x & 0xFFFF0000u);
    v.z = as_type<float>(b.y << 16);
    v.w = as_type<float>(b.y & 0xFFFF0000u);
    return v;
}
#endif
#endif

template <typename IN, typename T>
inline void convert_elements(device const IN *src, device T *dst, ulong first, ulong n) {
    constexpr ulong S = GGUF_SUB_f32;
    if (first + S <= n) {
        float y[S];
        for (ulong i = 0; i < S; ++i) {
            y[i] = gguf_load(src + first + i);
        }
        gguf_store<T, S>(dst + first, y);
    } else {
        for (ulong i = first; i < n; ++i) {
            dst[i] = gguf_round<T>(gguf_load(src + i));
        }
    }
}

// The same type in and out: the bits themselves.
template <typename T>
inline void convert_elements(device const T *src, device T *dst, ulong first, ulong n) {
    constexpr ulong S = GGUF_SUB_f32;
    if (first + S <= n) {
        T v[S];  // all loads before the stores: src and dst could alias for all the compiler knows
        for (ulong i = 0; i < S; ++i) {
            v[i] = src[first + i];
        }
        for (ulong i = 0; i < S; ++i) {
            dst[first + i] = v[i];
        }
    } else {
        for (ulong i = first; i < n; ++i) {
            dst[i] = src[i];
        }
    }
}

#ifdef GGUF_CPU

// CPU: threads [t0, t1) convert elements [8 t0, min(8 t1, n)), 64 at a time through the shim's vector
// conversions (the same results as gguf_load and gguf_store), the tail one by one.
template <typename IN, typename T>
inline void gguf_cpu_convert(const IN *src, T *dst, long i, long end) {
    constexpr long W = 64;
    for (; i + W <= end; i += W) {
        metal::convert_values<W>(src + i, dst + i);
    }
    for (; i < end; ++i) {
        dst[i] = T(gguf_load(src + i));
    }
}

#define GGUF_CONVERT_KERNELS(NAME, IN)                                                          \
    template <typename T>                                                                       \
    inline void cpu_dequantize_##NAME(const uchar *src, T *dst, long t0, long t1, long n) {     \
        const long end = t1 * GGUF_SUB_##NAME < n ? t1 * GGUF_SUB_##NAME : n;                   \
        gguf_cpu_convert(reinterpret_cast<const IN *>(src), dst, t0 * GGUF_SUB_##NAME, end);    \
    }

#else

#define GGUF_CONVERT_PARAMS(IN, T)                                                              \
    device const IN *src [[buffer(0)]], device T *dst [[buffer(1)]],                            \
        constant ulong &n_elements [[buffer(2)]], uint tid [[thread_position_in_grid]]

#define GGUF_CONVERT_KERNELS(NAME, IN)                                                          \
    template <typename T>                                                                       \
    kernel void kernel_dequantize_##NAME(GGUF_CONVERT_PARAMS(IN, T)) {                          \
        convert_elements(src, dst, ulong(tid) * GGUF_SUB_##NAME, n_elements);                   \
    }                                                                                           \
    template [[host_name("dequantize_" #NAME "_f32")]] kernel void                              \
    kernel_dequantize_##NAME<float>(GGUF_CONVERT_PARAMS(IN, float));                            \
    template [[host_name("dequantize_" #NAME "_f16")]] kernel void                              \
    kernel_dequantize_##NAME<half>(GGUF_CONVERT_PARAMS(IN, half));                              \
    GGUF_IF_BFLOAT(template [[host_name("dequantize_" #NAME "_bf16")]] kernel void              \
                   kernel_dequantize_##NAME<bfloat>(GGUF_CONVERT_PARAMS(IN, bfloat));)

#endif

static_assert(GGUF_SUB_f32 == GGUF_SUB_f16 && GGUF_SUB_f16 == GGUF_SUB_bf16, "one float mapping");

GGUF_CONVERT_KERNELS(f32, float)
GGUF_CONVERT_KERNELS(f16, half)
GGUF_MATMUL_FLOAT_KERNELS(f32, float)
GGUF_MATMUL_FLOAT_KERNELS(f16, half)
#if GGUF_BFLOAT
GGUF_CONVERT_KERNELS(bf16, bfloat)
GGUF_MATMUL_FLOAT_KERNELS(bf16, bfloat)
#endif
