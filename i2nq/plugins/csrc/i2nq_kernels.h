// CUDA launchers for the ai.i2nq ops, shared by the TensorRT plugin and the torch extension.
// Plain C++ (no TensorRT, no torch): each launcher validates its arguments, enqueues one kernel
// on `stream` and returns the launch status.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace i2nq
{

//! Version of the op contract (domain ai.i2nq) and of the plugin creators.
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "i2nq";
//! Codebooks hold at most 256 levels (8-bit codes).
constexpr int32_t kMaxLevels = 256;

enum class DType : int32_t
{
    kFloat32 = 0,
    kFloat16 = 1,
};

//! NUQuant: y[i] = levels[#{j : t_j < x[i]}], t_j = (levels[j] + levels[j+1]) * 0.5 computed in dtype;
//! NaN maps to levels[0]. `levels` (numLevels <= 256, sorted ascending) lives in device memory.
cudaError_t launchNuquant(
    DType dtype, void const* x, void const* levels, int32_t numLevels, void* y, int64_t n, cudaStream_t stream);

//! LUTDequant: w[i] = levels[channel(i) * numLevels + code(i)], code(i) the `bits`-wide field at bit i*bits of
//! the LSB-first packed code bytes (numBytes >= ceil(numel*bits/8)); channel(i) = (i / inner) % channels.
//! Code byte j is read at codes[j * byteStride]: 1 for uint8/int8 bytes, 4 for int32 elements holding one byte
//! each (what TensorRT's ONNX parser makes of a uint8 initializer). Codes >= numLevels are clamped to the last
//! level (out of contract; keeps memory access in bounds).
cudaError_t launchLutDequant(DType dtype, void const* codes, int64_t numBytes, int32_t byteStride, void const* levels,
    int32_t channels, int32_t numLevels, int32_t bits, int64_t numel, int64_t inner, void* w, cudaStream_t stream);

} // namespace i2nq
