"""kernels.benchmark workloads: every type x output dtype (run with `kernels benchmark <repo>`).

On a Mac the runner uses MPS, on Linux the CPU build. 16M elements per workload (a 4096 x 4096
weight). GB/s of total traffic for MPS, next to the chip's peak, come from benchmarks/mps_bandwidth.py.
"""

import torch
from kernels.benchmark import Benchmark

N_ELEMENTS = 1 << 24
TYPES = [(0, "f32", 1, 4), (1, "f16", 1, 2), (30, "bf16", 1, 2), (2, "q4_0", 32, 18), (3, "q4_1", 32, 20),
         (6, "q5_0", 32, 22), (7, "q5_1", 32, 24), (8, "q8_0", 32, 34), (10, "q2_k", 256, 84),
         (11, "q3_k", 256, 110), (12, "q4_k", 256, 144), (13, "q5_k", 256, 176), (14, "q6_k", 256, 210),
         (16, "iq2_xxs", 256, 66), (17, "iq2_xs", 256, 74), (22, "iq2_s", 256, 82), (18, "iq3_xxs", 256, 98),
         (21, "iq3_s", 256, 110), (19, "iq1_s", 256, 50), (29, "iq1_m", 256, 56), (20, "iq4_nl", 32, 18),
         (23, "iq4_xs", 256, 136), (34, "tq1_0", 256, 54), (35, "tq2_0", 256, 66), (39, "mxfp4", 32, 17),
         (40, "nvfp4", 64, 36), (41, "q1_0", 128, 18), (42, "q2_0", 64, 18)]
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


class DequantizeBenchmark(Benchmark):
    seed = 0


def _add_workload(type_id, name, elems, nbytes, suffix, dtype):
    def setup(self):
        g = torch.Generator().manual_seed(type_id)
        raw = torch.randint(0, 256, (N_ELEMENTS // elems * nbytes,), dtype=torch.uint8, generator=g)
        self.blob = raw.reshape(4096, -1).to(self.device)
        self.out = torch.empty(4096, N_ELEMENTS // 4096, dtype=dtype, device=self.device)

    def run(self):
        self.kernel.dequantize(self.blob, type_id, dtype, out=self.out)

    setattr(DequantizeBenchmark, f"setup_{name}_{suffix}", setup)
    setattr(DequantizeBenchmark, f"benchmark_{name}_{suffix}", run)


for _row in TYPES:
    for _suffix, _dtype in DTYPES.items():
        _add_workload(*_row, _suffix, _dtype)
