// CPU entry points of the fused ops (declared in torch_binding.h; the binding has checked the arguments):
// x to float32 once, then the matmul kernels of the best instruction set available (cpu/matmul_kernels.h).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>

#include "matmul_dispatch.h"
#include "torch_binding.h"

namespace {

enum class Isa { baseline, avx2, avx512 };

// The widest build this CPU runs; GGUF_DEQUANT_CPU_ISA=baseline or avx2 caps it (tests, benchmarks).
// Every build computes the same order of operations, so the choice changes speed, not results.
Isa best_isa() {
#if defined(__x86_64__)
    static const Isa isa = [] {
        const char *env = std::getenv("GGUF_DEQUANT_CPU_ISA");
        const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
        const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
        if (env && std::strcmp(env, "baseline") == 0) return Isa::baseline;
        if (env && std::strcmp(env, "avx2") == 0) return avx2 ? Isa::avx2 : Isa::baseline;
        return avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline;
    }();
    return isa;
#else
    return Isa::baseline;
#endif
}

void run(const std::vector<MatmulJob> &jobs, int64_t qtype) {
    bool done;
    switch (best_isa()) {
#if defined(__x86_64__)
        case Isa::avx512: done = gguf_mm_avx512::matmul(jobs.data(), int64_t(jobs.size())); break;
        case Isa::avx2: done = gguf_mm_avx2::matmul(jobs.data(), int64_t(jobs.size())); break;
#endif
        default: done = gguf_mm_generic::matmul(jobs.data(), int64_t(jobs.size()));
    }
    TORCH_CHECK(done, "gguf_dequant: no CPU matmul kernel for type id ", qtype);
}

OutKind out_kind(at::ScalarType dtype) {
    switch (dtype) {
        case at::kFloat: return OutKind::f32;
        case at::kHalf: return OutKind::f16;
        case at::kBFloat16: return OutKind::bf16;
        default: TORCH_CHECK_TYPE(false, "gguf_dequant: unsupported output dtype ", dtype);
    }
}

// (rows, K) x of any float dtype -> (rows, K rounded up to 16) float32, exact, zero-padded.
at::Tensor x_float32(const at::Tensor &x, int64_t k_padded) {
    if (x.scalar_type() == at::kFloat && x.is_contiguous() && x.size(1) == k_padded) return x;
    at::Tensor xf = at::zeros({x.size(0), k_padded}, x.options().dtype(at::kFloat));
    xf.narrow(1, 0, x.size(1)).copy_(x);
    return xf;
}

// The weights as the decode functions read them: contiguous and aligned for their half fields.
at::Tensor aligned_blocks(const at::Tensor &blocks, int64_t qtype) {
    TORCH_CHECK_VALUE(blocks.device().is_cpu(), "gguf_dequant (CPU build): blocks must be on the CPU, got ",
                      blocks.device());
    at::Tensor b = blocks.contiguous();
    if (reinterpret_cast<uintptr_t>(b.data_ptr()) % lookup_type(qtype).align != 0) b = b.clone();
    return b;
}

}  // namespace

void gguf_linear_out(const at::Tensor &x, const at::Tensor &blocks_in, int64_t qtype,
                     const std::optional<at::Tensor> &bias, at::Tensor &out) {
    const int64_t M = x.size(0), K = x.size(1), N = blocks_in.size(0);
    if (M == 0 || N == 0) return;
    const at::Tensor blocks = aligned_blocks(blocks_in, qtype);
    const at::Tensor xf = x_float32(x, (K + 15) / 16 * 16);
    std::vector<const float *> x_rows(M);
    std::vector<void *> out_rows(M);
    for (int64_t m = 0; m < M; ++m) {
        x_rows[m] = xf.data_ptr<float>() + m * xf.size(1);
        out_rows[m] = static_cast<char *>(out.data_ptr()) + m * N * out.element_size();
    }
    const MatmulJob job{qtype, blocks.data_ptr<uint8_t>(), N, K, blocks.size(1), x_rows.data(), M,
                        bias ? bias->data_ptr<float>() : nullptr, out_rows.data(), out_kind(out.scalar_type())};
    run({job}, qtype);
}

void gguf_mul_mat_id_out(const at::Tensor &x, const at::Tensor &blocks_in, const at::Tensor &ids, int64_t qtype,
                         at::Tensor &out) {
    const int64_t T = ids.size(0), U = ids.size(1), Ux = x.size(1), K = x.size(2);
    const int64_t E = blocks_in.size(0), N = blocks_in.size(1), row_bytes = blocks_in.size(2);
    if (T * U == 0 || N == 0) return;
    const at::Tensor blocks = aligned_blocks(blocks_in, qtype);
    const at::Tensor xf = x_float32(x.reshape({T * Ux, K}), (K + 15) / 16 * 16);
    const int32_t *id = ids.data_ptr<int32_t>();
    // Slots grouped by expert (a counting sort): one job per expert that has any.
    std::vector<int64_t> start(E + 1, 0);
    for (int64_t s = 0; s < T * U; ++s) {
        TORCH_CHECK_INDEX(id[s] >= 0 && id[s] < E, "gguf_dequant.mul_mat_id: ids must be in [0, ", E, "), got ",
                          id[s]);
        ++start[id[s] + 1];
    }
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    std::vector<const float *> x_rows(T * U);
    std::vector<void *> out_rows(T * U);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t s = 0; s < T * U; ++s) {
        const int64_t slot = fill[id[s]]++, t = s / U, u = s % U;
        x_rows[slot] = xf.data_ptr<float>() + (t * Ux + u % Ux) * xf.size(1);
        out_rows[slot] = out.data_ptr<float>() + s * N;
    }
    std::vector<MatmulJob> jobs;
    for (int64_t e = 0; e < E; ++e) {
        if (start[e + 1] == start[e]) continue;
        jobs.push_back({qtype, blocks.data_ptr<uint8_t>() + e * N * row_bytes, N, K, row_bytes,
                        x_rows.data() + start[e], start[e + 1] - start[e], nullptr, out_rows.data() + start[e],
                        OutKind::f32});
    }
    run(jobs, qtype);
}
