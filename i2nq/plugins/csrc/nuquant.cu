// NUQuant kernel: nearest-level quantize-dequantize with the I2NQ tie rule (a value equal to a threshold
// takes the lower level; NaN takes level 0). Each block stages the levels and the threshold search tree
// (device::ThresholdTree) in shared memory, then streams x in 16-byte vectors with a scalar head and tail.
#include "i2nq_device.cuh"
#include "i2nq_kernels.h"

#include <algorithm>

namespace i2nq
{
namespace
{
using device::kThreads;

template <typename T, int LOG2P>
__global__ void __launch_bounds__(kThreads) nuquantKernel(T const* __restrict__ x, T const* __restrict__ levels,
    int numLevels, T* __restrict__ y, int64_t n, int64_t head, bool vectorized)
{
    constexpr int kP = 1 << LOG2P;
    constexpr int kV = device::kVecWidth<T>;
    __shared__ float tree[kP];
    __shared__ T lv[kMaxLevels];
    for (int j = threadIdx.x; j < numLevels; j += blockDim.x)
    {
        lv[j] = levels[j];
    }
    __syncthreads();
    for (int s = threadIdx.x; s < kP - 1; s += blockDim.x)
    {
        tree[device::eytzingerSlot(s + 1, LOG2P)] = device::paddedThreshold(lv, numLevels, s);
    }
    __syncthreads();
    device::ThresholdTree<LOG2P> const search(tree);

    int64_t const tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t const stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    if (!vectorized)
    {
        for (int64_t i = tid; i < n; i += stride)
        {
            y[i] = lv[search.code(device::toFloat(x[i]))];
        }
        return;
    }
    // x + head and y + head are 16-byte aligned: vector body, then the scalar head and tail.
    int64_t const numVec = (n - head) / kV;
    for (int64_t v = tid; v < numVec; v += stride)
    {
        int64_t const i = head + v * kV;
        T in[kV];
        T out[kV];
        device::loadVec(x + i, in);
#pragma unroll
        for (int k = 0; k < kV; ++k)
        {
            out[k] = lv[search.code(device::toFloat(in[k]))];
        }
        device::storeVec(y + i, out);
    }
    int64_t const tailStart = head + numVec * kV;
    int64_t const numScalar = head + (n - tailStart);
    for (int64_t s = tid; s < numScalar; s += stride)
    {
        int64_t const i = s < head ? s : tailStart + (s - head);
        y[i] = lv[search.code(device::toFloat(x[i]))];
    }
}

template <typename T>
cudaError_t launchTyped(T const* x, T const* levels, int32_t numLevels, T* y, int64_t n, cudaStream_t stream)
{
    constexpr int kV = device::kVecWidth<T>;
    uintptr_t const ax = reinterpret_cast<uintptr_t>(x);
    uintptr_t const ay = reinterpret_cast<uintptr_t>(y);
    // The vector path needs x and y equally misaligned: the same head brings both to 16 bytes.
    bool const vectorized = (ax % device::kVecBytes) == (ay % device::kVecBytes) && ax % sizeof(T) == 0;
    int64_t const headBytes = static_cast<int64_t>((device::kVecBytes - ax % device::kVecBytes) % device::kVecBytes);
    int64_t const head = vectorized ? std::min<int64_t>(headBytes / static_cast<int64_t>(sizeof(T)), n) : 0;
    int const grid = device::gridFor(vectorized ? (n - head) / kV + kV : n);
    switch (device::treeDepth(numLevels))
    {
    case 3: I2NQ_LAUNCH(grid, kThreads, 0, stream, nuquantKernel<T, 3>)(x, levels, numLevels, y, n, head, vectorized); break;
    case 4: I2NQ_LAUNCH(grid, kThreads, 0, stream, nuquantKernel<T, 4>)(x, levels, numLevels, y, n, head, vectorized); break;
    case 5: I2NQ_LAUNCH(grid, kThreads, 0, stream, nuquantKernel<T, 5>)(x, levels, numLevels, y, n, head, vectorized); break;
    case 6: I2NQ_LAUNCH(grid, kThreads, 0, stream, nuquantKernel<T, 6>)(x, levels, numLevels, y, n, head, vectorized); break;
    case 7: I2NQ_LAUNCH(grid, kThreads, 0, stream, nuquantKernel<T, 7>)(x, levels, numLevels, y, n, head, vectorized); break;
    default: I2NQ_LAUNCH(grid, kThreads, 0, stream, nuquantKernel<T, 8>)(x, levels, numLevels, y, n, head, vectorized); break;
    }
    return cudaGetLastError();
}

} // namespace

cudaError_t launchNuquant(
    DType dtype, void const* x, void const* levels, int32_t numLevels, void* y, int64_t n, cudaStream_t stream)
{
    if (numLevels < 1 || numLevels > kMaxLevels || n < 0 || (n > 0 && (!x || !y || !levels)))
    {
        return cudaErrorInvalidValue;
    }
    if (n == 0)
    {
        return cudaSuccess;
    }
    switch (dtype)
    {
    case DType::kFloat32:
        return launchTyped(static_cast<float const*>(x), static_cast<float const*>(levels), numLevels,
            static_cast<float*>(y), n, stream);
    case DType::kFloat16:
        return launchTyped(static_cast<__half const*>(x), static_cast<__half const*>(levels), numLevels,
            static_cast<__half*>(y), n, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace i2nq
