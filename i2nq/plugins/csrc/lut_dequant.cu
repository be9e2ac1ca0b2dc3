// LUTDequant kernel: unpack LSB-first bit-packed codes (2, 3, 4 or 8 bits) and look them up in a per-tensor
// or per-channel codebook (the channel of each element tracked by device::ChannelCursor: no division per element).
//
// A thread handles groups of 8 consecutive elements, whose codes are b whole bytes (device::loadGroupBits:
// one 2/4/8-byte load for b = 2/4/8 when aligned, 3 byte loads for the 3-bit codes that straddle bytes). Levels are
// staged in shared memory when they fit; outputs are written as 16-byte vectors when the output is aligned, and the
// partial last group element by element.
#include "i2nq_device.cuh"
#include "i2nq_kernels.h"

namespace i2nq
{
namespace
{
using device::kGroup;
using device::kThreads;
//! Largest codebook table staged in (default, non-opt-in) dynamic shared memory.
constexpr int64_t kMaxStagedBytes = 48 * 1024;

//! PER_CHANNEL: levels are [channels, numLevels] (else one codebook); STAGED: the table is copied to shared memory.
template <typename T, int BITS, bool PER_CHANNEL, bool STAGED>
__global__ void __launch_bounds__(kThreads) lutDequantKernel(uint8_t const* __restrict__ codes, int64_t numBytes,
    int byteStride, T const* __restrict__ levels, int channels, int numLevels, int64_t numel, int64_t inner,
    T* __restrict__ w, bool codesAligned, bool vectorStore)
{
    I2NQ_DYNAMIC_SMEM(smem);
    T const* table = levels;
    if (STAGED)
    {
        T* staged = reinterpret_cast<T*>(smem);
        for (int j = threadIdx.x; j < channels * numLevels; j += blockDim.x)
        {
            staged[j] = levels[j];
        }
        __syncthreads();
        table = staged;
    }
    int64_t const numGroups = (numel + kGroup - 1) / kGroup;
    int64_t const stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    int64_t const first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t const step = stride * kGroup;
    device::ChannelCursor start(first * kGroup, inner, channels);
    int const stepQ = static_cast<int>((step / inner) % channels);
    int64_t const stepR = step % inner;
    for (int64_t g = first; g < numGroups; g += stride, start.advance(stepQ, stepR))
    {
        uint64_t const word = device::loadGroupBits<BITS>(codes, numBytes, byteStride, g, codesAligned);
        int64_t const i0 = g * kGroup;
        device::ChannelCursor at = start;
        T out[kGroup];
#pragma unroll
        for (int k = 0; k < kGroup; ++k)
        {
            int const code = min(device::groupCode<BITS>(word, k), numLevels - 1);
            if (PER_CHANNEL)
            {
                out[k] = table[at.channel * numLevels + code];
                at.next();
            }
            else
            {
                out[k] = table[code];
            }
        }
        if (vectorStore && i0 + kGroup <= numel)
        {
            constexpr int kV = device::kVecWidth<T>;
#pragma unroll
            for (int k = 0; k < kGroup; k += kV)
            {
                T part[kV];
#pragma unroll
                for (int j = 0; j < kV; ++j)
                {
                    part[j] = out[k + j];
                }
                device::storeVec(w + i0 + k, part);
            }
        }
        else
        {
            for (int k = 0; k < kGroup && i0 + k < numel; ++k)
            {
                w[i0 + k] = out[k];
            }
        }
    }
}

template <typename T, int BITS>
cudaError_t launchBits(uint8_t const* codes, int64_t numBytes, int byteStride, T const* levels, int32_t channels,
    int32_t numLevels, int64_t numel, int64_t inner, T* w, cudaStream_t stream)
{
    int const grid = device::gridFor((numel + kGroup - 1) / kGroup);
    bool const codesAligned = reinterpret_cast<uintptr_t>(codes) % (BITS == 3 ? 1 : BITS) == 0;
    bool const vectorStore = device::aligned16(w);
    int64_t const tableBytes = static_cast<int64_t>(channels) * numLevels * static_cast<int64_t>(sizeof(T));
    if (channels == 1)
    {
        I2NQ_LAUNCH(grid, kThreads, tableBytes, stream, lutDequantKernel<T, BITS, false, true>)(
            codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, codesAligned, vectorStore);
    }
    else if (tableBytes <= kMaxStagedBytes)
    {
        I2NQ_LAUNCH(grid, kThreads, tableBytes, stream, lutDequantKernel<T, BITS, true, true>)(
            codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, codesAligned, vectorStore);
    }
    else
    {
        I2NQ_LAUNCH(grid, kThreads, 0, stream, lutDequantKernel<T, BITS, true, false>)(
            codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, codesAligned, vectorStore);
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t launchTyped(uint8_t const* codes, int64_t numBytes, int byteStride, T const* levels, int32_t channels,
    int32_t numLevels, int32_t bits, int64_t numel, int64_t inner, T* w, cudaStream_t stream)
{
    switch (bits)
    {
    case 2: return launchBits<T, 2>(codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, stream);
    case 3: return launchBits<T, 3>(codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, stream);
    case 4: return launchBits<T, 4>(codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, stream);
    case 8: return launchBits<T, 8>(codes, numBytes, byteStride, levels, channels, numLevels, numel, inner, w, stream);
    default: return cudaErrorInvalidValue;
    }
}

} // namespace

cudaError_t launchLutDequant(DType dtype, void const* codes, int64_t numBytes, int32_t byteStride, void const* levels,
    int32_t channels, int32_t numLevels, int32_t bits, int64_t numel, int64_t inner, void* w, cudaStream_t stream)
{
    bool const validBits = bits == 2 || bits == 3 || bits == 4 || bits == 8;
    if (!validBits || (byteStride != 1 && byteStride != 4) || numLevels < 1 || numLevels > kMaxLevels || channels < 1
        || inner < 1 || numel < 0 || numBytes < (numel * bits + 7) / 8)
    {
        return cudaErrorInvalidValue;
    }
    if (numel == 0)
    {
        return cudaSuccess;
    }
    if (!codes || !levels || !w)
    {
        return cudaErrorInvalidValue;
    }
    auto const* bytes = static_cast<uint8_t const*>(codes);
    switch (dtype)
    {
    case DType::kFloat32:
        return launchTyped(bytes, numBytes, byteStride, static_cast<float const*>(levels), channels, numLevels, bits,
            numel, inner, static_cast<float*>(w), stream);
    case DType::kFloat16:
        return launchTyped(bytes, numBytes, byteStride, static_cast<__half const*>(levels), channels, numLevels, bits,
            numel, inner, static_cast<__half*>(w), stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace i2nq
