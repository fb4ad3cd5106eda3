// expect: recursion
#include <metal_stdlib>
using namespace metal;

int fact(int n) { return n <= 1 ? 1 : n * fact(n - 1); }
int pong(int n);
int ping(int n) { return n > 0 ? pong(n - 1) : 0; }
int pong(int n) { return n > 0 ? ping(n - 1) : 1; }
kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) { dst[tid] = src[tid] * float(fact(3) + ping(2)); }
