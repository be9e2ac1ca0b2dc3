// Helpers shared by the ai.i2nq kernels: the per-element math (threshold rounding, Eytzinger search tree,
// code unpacking; __host__ __device__ so tests/test_plugins_host_check.cu runs the same code on the CPU)
// and 16-byte vector access.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>

namespace i2nq
{
namespace device
{

constexpr int kThreads = 256;
//! Grid-stride cap: enough blocks to fill any current GPU; each block stages its tables once. (The CPU
//! emulation in tests/emu lowers it to walk the grid-stride loops on small inputs.)
#ifndef I2NQ_MAX_BLOCKS
#define I2NQ_MAX_BLOCKS 4096
#endif
constexpr int kMaxBlocks = I2NQ_MAX_BLOCKS;
constexpr int kVecBytes = 16;

#define I2NQ_HD __host__ __device__ __forceinline__

// Kernel launch and dynamic shared memory, spelled as macros so that tests/emu can build these kernels as
// plain C++ and run them on the CPU (one std::thread per CUDA thread, a barrier per __syncthreads).
#ifndef I2NQ_LAUNCH
#define I2NQ_LAUNCH(grid, block, smemBytes, stream, ...) __VA_ARGS__<<<grid, block, smemBytes, stream>>>
#endif
#ifndef I2NQ_DYNAMIC_SMEM
#define I2NQ_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

I2NQ_HD float toFloat(float v)
{
    return v;
}
I2NQ_HD float toFloat(__half v)
{
    return __half2float(v);
}

//! Threshold (a + b) * 0.5 rounded in T's own arithmetic (ONNX semantics: fp16 sums round to half first).
I2NQ_HD float midpoint(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(__fadd_rn(a, b), 0.5f); // no FMA contraction
#else
    return (a + b) * 0.5f;
#endif
}
I2NQ_HD float midpoint(__half a, __half b)
{
    return __half2float(__hmul(__hadd(a, b), __float2half(0.5f)));
}

//! Eytzinger (BFS) slot of the in-order rank r (1-based) in a perfect binary tree of height h.
I2NQ_HD int eytzingerSlot(int r, int h)
{
#ifdef __CUDA_ARCH__
    int const tz = __ffs(r) - 1;
#else
    int const tz = __builtin_ctz(static_cast<unsigned>(r));
#endif
    return (1 << (h - 1 - tz)) | (r >> (tz + 1));
}

//! Value of sorted slot s of the padded threshold array: t_s for s < K - 1, else +inf.
template <typename T>
I2NQ_HD float paddedThreshold(T const* levels, int numLevels, int s)
{
    return s < numLevels - 1 ? midpoint(levels[s], levels[s + 1]) : INFINITY;
}

//! Search-tree height LOG2P for K levels: smallest with 2^LOG2P >= max(K, 8).
I2NQ_HD int treeDepth(int numLevels)
{
    int log2p = 3;
    while ((1 << log2p) < numLevels)
    {
        ++log2p;
    }
    return log2p;
}

//! Thresholds t_j (padded with +inf to P - 1 = 2^LOG2P - 1, P >= 8) as a perfect search tree in Eytzinger
//! order, 1-indexed. code(x) = #{t_j < x} in LOG2P branchless steps i = 2i + (tree[i] < x); the top three
//! levels are held in registers, deeper levels are consecutive words (few shared-memory bank conflicts).
template <int LOG2P>
struct ThresholdTree
{
    static_assert(LOG2P >= 3 && LOG2P <= 8, "2^LOG2P must be in [8, 256]");
    float const* tree;
    float t1, t2, t3, t4, t5, t6, t7;

    I2NQ_HD explicit ThresholdTree(float const* s)
        : tree(s)
        , t1(s[1])
        , t2(s[2])
        , t3(s[3])
        , t4(s[4])
        , t5(s[5])
        , t6(s[6])
        , t7(s[7])
    {
    }

    //! Number of thresholds strictly below x; 0 for NaN (every comparison is false).
    I2NQ_HD int code(float x) const
    {
        int const b0 = t1 < x;
        int const b1 = (b0 ? t3 : t2) < x;
        int const b2 = (b0 ? (b1 ? t7 : t6) : (b1 ? t5 : t4)) < x;
        int i = 8 | (b0 << 2) | (b1 << 1) | b2;
#pragma unroll
        for (int level = 3; level < LOG2P; ++level)
        {
            i = 2 * i + (tree[i] < x);
        }
        return i - (1 << LOG2P);
    }
};

//! Codes come in groups of 8 elements: 8 codes of b bits are exactly b whole bytes, starting at byte g*b.
constexpr int kGroup = 8;

//! The `BITS` bytes that hold the codes of group g, little-endian (bytes past numBytes read as 0). Byte j is
//! at codes[j * byteStride]: stride 1 for packed bytes, 4 for int32 elements holding one byte each (the low
//! byte, little-endian). `aligned`: codes is BITS-byte aligned, so stride-1 groups of 2/4/8 bytes are one load.
template <int BITS>
I2NQ_HD uint64_t loadGroupBits(uint8_t const* codes, int64_t numBytes, int byteStride, int64_t g, bool aligned)
{
    int64_t const off = g * BITS;
    if (BITS != 3 && aligned && byteStride == 1 && off + BITS <= numBytes)
    {
        if (BITS == 2)
            return *reinterpret_cast<uint16_t const*>(codes + off);
        if (BITS == 4)
            return *reinterpret_cast<uint32_t const*>(codes + off);
        return *reinterpret_cast<unsigned long long const*>(codes + off);
    }
    uint64_t word = 0;
#pragma unroll
    for (int k = 0; k < BITS; ++k)
    {
        if (off + k < numBytes)
        {
            word |= static_cast<uint64_t>(codes[(off + k) * byteStride]) << (8 * k);
        }
    }
    return word;
}

//! Channel (i / inner) % channels of a moving element index i, updated without divisions: next() steps one
//! element, advance() one grid stride (stepQ = (step / inner) % channels, stepR = step % inner).
struct ChannelCursor
{
    int64_t inner;
    int channels;
    int64_t rem;
    int channel;

    I2NQ_HD ChannelCursor(int64_t i, int64_t inner_, int channels_)
        : inner(inner_)
        , channels(channels_)
        , rem(i % inner_)
        , channel(static_cast<int>((i / inner_) % channels_))
    {
    }

    I2NQ_HD void next()
    {
        if (++rem == inner)
        {
            rem = 0;
            channel = channel + 1 == channels ? 0 : channel + 1;
        }
    }

    I2NQ_HD void advance(int stepQ, int64_t stepR)
    {
        rem += stepR;
        channel += stepQ;
        if (rem >= inner)
        {
            rem -= inner;
            ++channel;
        }
        if (channel >= channels)
        {
            channel -= channels;
        }
    }
};

//! Code k (0..7) of a group word.
template <int BITS>
I2NQ_HD int groupCode(uint64_t word, int k)
{
    return static_cast<int>((word >> (k * BITS)) & ((1u << BITS) - 1u));
}

//! Elements of T in one 16-byte vector.
template <typename T>
constexpr int kVecWidth = kVecBytes / static_cast<int>(sizeof(T));

//! Streaming cache hints on the 16-byte vector accesses (__ldcs / __stcs: evict-first, each byte is touched
//! once). Build with -DI2NQ_STREAMING_HINTS=0 for plain loads and stores: bench/gpu/bench_gpu.py (section
//! `hints`) times both variants in one run.
#ifndef I2NQ_STREAMING_HINTS
#define I2NQ_STREAMING_HINTS 1
#endif

//! 16-byte load/store of kVecWidth<T> elements (p must be 16-byte aligned).
template <typename T>
__device__ __forceinline__ void loadVec(T const* p, T (&v)[kVecWidth<T>])
{
#if I2NQ_STREAMING_HINTS
    uint4 raw = __ldcs(reinterpret_cast<uint4 const*>(p));
#else
    uint4 raw = *reinterpret_cast<uint4 const*>(p);
#endif
    memcpy(v, &raw, sizeof(raw));
}
template <typename T>
__device__ __forceinline__ void storeVec(T* p, T const (&v)[kVecWidth<T>])
{
    uint4 raw;
    memcpy(&raw, v, sizeof(raw));
#if I2NQ_STREAMING_HINTS
    __stcs(reinterpret_cast<uint4*>(p), raw);
#else
    *reinterpret_cast<uint4*>(p) = raw;
#endif
}

inline bool aligned16(void const* p)
{
    return reinterpret_cast<uintptr_t>(p) % kVecBytes == 0;
}

inline int gridFor(int64_t work)
{
    int64_t blocks = (work + kThreads - 1) / kThreads;
    return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

} // namespace device
} // namespace i2nq
