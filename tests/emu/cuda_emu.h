// CPU emulation of the little CUDA that the ai.i2nq kernels use, so that tests/test_plugins_emu.py can run
// the real kernels (nuquant.cu, lut_dequant.cu: grid-stride loops, vector head and tail, shared-memory
// staging) without a GPU. One std::thread per CUDA thread, a block's threads meet at a barrier for each
// __syncthreads, blocks run one after another (so `static` stands in for __shared__). Test code only.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <vector_types.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

namespace i2nq_emu
{

//! Dynamic shared memory of the running block: a fresh heap block of exactly the launch's size (so that
//! AddressSanitizer flags any access past it), filled with garbage; 48 KiB is the default CUDA limit.
constexpr size_t kMaxDynamicSmem = 48 * 1024;
inline unsigned char* gDynamicSmem = nullptr;
inline cudaError_t gLastError = cudaSuccess;

//! A reusable barrier on a mutex and condition variable (which ThreadSanitizer models exactly).
class Barrier
{
public:
    explicit Barrier(int count)
        : mCount(count)
    {
    }
    void wait()
    {
        std::unique_lock<std::mutex> lock(mMutex);
        int const generation = mGeneration;
        if (++mArrived == mCount)
        {
            mArrived = 0;
            ++mGeneration;
            mCv.notify_all();
            return;
        }
        mCv.wait(lock, [&] { return generation != mGeneration; });
    }

private:
    std::mutex mMutex;
    std::condition_variable mCv;
    int const mCount;
    int mArrived = 0;
    int mGeneration = 0;
};

inline thread_local Barrier* tBarrier = nullptr;

template <typename... Params>
struct Launch
{
    void (*kernel)(Params...);
    dim3 grid;
    dim3 block;
    size_t smemBytes;

    template <typename... Args>
    void operator()(Args... args) const;
};

template <typename... Params>
Launch<Params...> launch(dim3 grid, dim3 block, size_t smemBytes, void (*kernel)(Params...))
{
    return Launch<Params...>{kernel, grid, block, smemBytes};
}

} // namespace i2nq_emu

// CUDA's built-in variables, per emulated thread.
inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline void __syncthreads()
{
    i2nq_emu::tBarrier->wait();
}

template <typename T>
inline T __ldcs(T const* p)
{
    return *p;
}

template <typename T>
inline void __stcs(T* p, T v)
{
    *p = v;
}

inline int min(int a, int b)
{
    return std::min(a, b);
}

inline cudaError_t i2nqEmuLastError()
{
    cudaError_t const e = i2nq_emu::gLastError;
    i2nq_emu::gLastError = cudaSuccess;
    return e;
}
#define cudaGetLastError i2nqEmuLastError

inline char const* i2nqEmuErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : "emulated launch failed (invalid configuration or argument)";
}
#define cudaGetErrorString i2nqEmuErrorString

// Device queries of trt_device.cu: one emulated device (0), on which every kernel has an image.
inline cudaError_t i2nqEmuGetDevice(int* device)
{
    *device = 0;
    return cudaSuccess;
}
inline cudaError_t i2nqEmuSetDevice(int device)
{
    return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
template <typename Kernel>
inline cudaError_t i2nqEmuFuncGetAttributes(cudaFuncAttributes* attributes, Kernel)
{
    *attributes = cudaFuncAttributes{};
    return cudaSuccess;
}
#define cudaGetDevice i2nqEmuGetDevice
#define cudaSetDevice i2nqEmuSetDevice
#define cudaFuncGetAttributes i2nqEmuFuncGetAttributes

#define I2NQ_LAUNCH(grid, block, smemBytes, stream, ...) ::i2nq_emu::launch(grid, block, smemBytes, &__VA_ARGS__)
#define I2NQ_DYNAMIC_SMEM(name) unsigned char* name = ::i2nq_emu::gDynamicSmem

template <typename... Params>
template <typename... Args>
void i2nq_emu::Launch<Params...>::operator()(Args... args) const
{
    int const threads = static_cast<int>(block.x * block.y * block.z);
    if (smemBytes > kMaxDynamicSmem || threads < 1 || threads > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1)
    {
        gLastError = cudaErrorInvalidConfiguration;
        return;
    }
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx)
            {
                auto const release = [](unsigned char* p) { ::operator delete[](p, std::align_val_t(16)); };
                std::unique_ptr<unsigned char[], decltype(release)> smem(
                    static_cast<unsigned char*>(::operator new[](smemBytes, std::align_val_t(16))), release);
                std::memset(smem.get(), 0xA5, smemBytes); // garbage, not zeros, for what a kernel does not stage
                gDynamicSmem = smem.get();
                Barrier barrier(threads);
                std::vector<std::thread> pool;
                pool.reserve(static_cast<size_t>(threads));
                for (int t = 0; t < threads; ++t)
                {
                    pool.emplace_back([&, t] {
                        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        blockIdx = dim3(bx, by, bz);
                        blockDim = block;
                        gridDim = grid;
                        tBarrier = &barrier;
                        kernel(static_cast<Params>(args)...);
                    });
                }
                for (std::thread& th : pool)
                {
                    th.join();
                }
            }
}
