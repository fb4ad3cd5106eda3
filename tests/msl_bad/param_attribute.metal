// expect: param-attribute
#include <metal_stdlib>
using namespace metal;

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid) {
    dst[tid] = src[tid];
}
