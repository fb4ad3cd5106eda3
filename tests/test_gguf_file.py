"""A real GGUF file holding every type: write with GGUFWriter, read back with GGUFReader, dequantize."""

import gguf
import numpy as np
import pytest
import torch

from gguf_dequant import dequantize, testing
from gguf_dequant.types import SUPPORTED

WRITABLE = [t for t in SUPPORTED.values() if t.name != "Q2_0"]  # gguf-py 0.19.0 has no id 42


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("gguf") / "all_types.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    raw_by_name = {}
    for t in WRITABLE:
        rows, cols = 3, 512
        raw = testing.random_blocks(t, rows * cols // t.block_elems, rng).reshape(rows, -1)
        raw_by_name[t.name] = raw
        qt = gguf.GGMLQuantizationType[t.name]
        if t.name == "F32":
            writer.add_tensor(t.name, raw.view(np.float32))
        elif t.name == "F16":
            writer.add_tensor(t.name, raw.view(np.float16))
        else:
            writer.add_tensor(t.name, raw, raw_shape=raw.shape, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, raw_by_name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
def test_every_tensor_of_a_real_file(gguf_file, dtype):
    path, raw_by_name = gguf_file
    reader = gguf.GGUFReader(str(path))
    seen = set()
    for tensor in reader.tensors:
        logical = tuple(int(d) for d in reversed(tensor.shape))
        data = np.asarray(tensor.data)
        blob = torch.from_numpy(data.view(np.uint8).reshape(data.shape[0], -1).copy())
        assert np.array_equal(blob.numpy(), raw_by_name[tensor.name]), "reader returned other bytes"
        got = dequantize(blob, tensor.tensor_type, dtype)
        assert got.shape == logical
        if tensor.name == "Q1_0":  # gguf-py 0.19.0 cannot decode Q1_0: ggml is its oracle
            from gguf_dequant.oracles import ggml

            if not ggml.available():
                pytest.skip(f"Q1_0 needs the ggml oracle: {ggml.why_unavailable()}")
            expected = ggml.to_float(tensor.tensor_type.value, blob.numpy()).reshape(logical)
        else:
            expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        testing.assert_bits_equal(got, torch.from_numpy(expected).to(dtype), tensor.name)
        seen.add(tensor.name)
    assert seen == set(raw_by_name)
