// CPU harness for tests/test_plugins_kernels.py: runs the kernels' per-element math (i2nq_device.cuh:
// threshold rounding, Eytzinger search tree, code unpacking) on the host, so the exact tie rule and the
// bit layout are checked against the numpy reference without a GPU.
//   host_check nuquant f32|f16 LEVELS X OUT   -> OUT: int32 code per element of X
//   host_check unpack BITS NUMEL CODES OUT    -> OUT: int32 code per element (all load paths agree)
//   host_check cursor INNER CHANNELS FIRST STRIDE GROUPS -> exit 0 when the channel cursor is right
#include "i2nq_device.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace i2nq::device;

namespace
{
std::vector<uint8_t> readFile(char const* path)
{
    std::vector<uint8_t> data;
    FILE* f = std::fopen(path, "rb");
    if (!f)
    {
        std::fprintf(stderr, "cannot read %s\n", path);
        std::exit(2);
    }
    uint8_t buf[65536];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0)
    {
        data.insert(data.end(), buf, buf + got);
    }
    std::fclose(f);
    return data;
}

void writeCodes(char const* path, std::vector<int32_t> const& codes)
{
    FILE* f = std::fopen(path, "wb");
    std::fwrite(codes.data(), sizeof(int32_t), codes.size(), f);
    std::fclose(f);
}

template <int LOG2P>
int searchCode(float const* tree, float x)
{
    return ThresholdTree<LOG2P>(tree).code(x);
}

template <typename T>
std::vector<int32_t> nuquantCodes(std::vector<uint8_t> const& levelBytes, std::vector<uint8_t> const& xBytes)
{
    std::vector<T> levels(levelBytes.size() / sizeof(T));
    std::vector<T> x(xBytes.size() / sizeof(T));
    std::memcpy(levels.data(), levelBytes.data(), levels.size() * sizeof(T));
    std::memcpy(x.data(), xBytes.data(), x.size() * sizeof(T));
    int const k = static_cast<int>(levels.size());
    int const depth = treeDepth(k);
    std::vector<float> tree(1 << depth);
    for (int s = 0; s < (1 << depth) - 1; ++s)
    {
        tree[eytzingerSlot(s + 1, depth)] = paddedThreshold(levels.data(), k, s);
    }
    int (*search)(float const*, float) = nullptr;
    switch (depth)
    {
    case 3: search = searchCode<3>; break;
    case 4: search = searchCode<4>; break;
    case 5: search = searchCode<5>; break;
    case 6: search = searchCode<6>; break;
    case 7: search = searchCode<7>; break;
    default: search = searchCode<8>; break;
    }
    std::vector<int32_t> codes(x.size());
    for (size_t i = 0; i < x.size(); ++i)
    {
        codes[i] = search(tree.data(), toFloat(x[i]));
    }
    return codes;
}

//! Codes of a packed stream through every load path: aligned 2/4/8-byte loads, byte loads, and int32
//! elements holding one byte each (stride 4); all must agree.
template <int BITS>
std::vector<int32_t> unpackCodes(std::vector<uint8_t> const& packed, int64_t numel)
{
    int64_t const numBytes = static_cast<int64_t>(packed.size());
    std::vector<uint64_t> aligned((packed.size() + 7) / 8 + 1);
    std::memcpy(aligned.data(), packed.data(), packed.size());
    auto const* base = reinterpret_cast<uint8_t const*>(aligned.data());
    std::vector<int32_t> widened(packed.begin(), packed.end());
    auto const* wide = reinterpret_cast<uint8_t const*>(widened.data());
    std::vector<int32_t> codes(numel);
    for (int64_t g = 0; g * kGroup < numel; ++g)
    {
        uint64_t const word = loadGroupBits<BITS>(base, numBytes, 1, g, true);
        if (word != loadGroupBits<BITS>(base, numBytes, 1, g, false)
            || word != loadGroupBits<BITS>(wide, numBytes, 4, g, false))
        {
            std::fprintf(stderr, "load paths differ at group %lld\n", static_cast<long long>(g));
            std::exit(1);
        }
        for (int k = 0; k < kGroup && g * kGroup + k < numel; ++k)
        {
            codes[g * kGroup + k] = groupCode<BITS>(word, k);
        }
    }
    return codes;
}
//! ChannelCursor against the direct formula along one thread's grid-stride walk; 0 when they agree.
int checkCursor(int64_t inner, int channels, int64_t first, int64_t stride, int64_t numGroups)
{
    int64_t const step = stride * kGroup;
    ChannelCursor start(first * kGroup, inner, channels);
    int const stepQ = static_cast<int>((step / inner) % channels);
    for (int64_t g = first; g < numGroups; g += stride, start.advance(stepQ, step % inner))
    {
        ChannelCursor at = start;
        for (int64_t i = g * kGroup; i < (g + 1) * kGroup; ++i, at.next())
        {
            if (at.channel != (i / inner) % channels || at.rem != i % inner)
            {
                std::fprintf(stderr, "cursor wrong at element %lld\n", static_cast<long long>(i));
                return 1;
            }
        }
    }
    return 0;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc == 6 && std::strcmp(argv[1], "nuquant") == 0)
    {
        auto const levels = readFile(argv[3]);
        auto const x = readFile(argv[4]);
        bool const half = std::strcmp(argv[2], "f16") == 0;
        writeCodes(argv[5], half ? nuquantCodes<__half>(levels, x) : nuquantCodes<float>(levels, x));
        return 0;
    }
    if (argc == 6 && std::strcmp(argv[1], "unpack") == 0)
    {
        int const bits = std::atoi(argv[2]);
        int64_t const numel = std::atoll(argv[3]);
        auto const packed = readFile(argv[4]);
        switch (bits)
        {
        case 2: writeCodes(argv[5], unpackCodes<2>(packed, numel)); return 0;
        case 3: writeCodes(argv[5], unpackCodes<3>(packed, numel)); return 0;
        case 4: writeCodes(argv[5], unpackCodes<4>(packed, numel)); return 0;
        case 8: writeCodes(argv[5], unpackCodes<8>(packed, numel)); return 0;
        default: break;
        }
    }
    if (argc == 7 && std::strcmp(argv[1], "cursor") == 0)
    {
        return checkCursor(
            std::atoll(argv[2]), std::atoi(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), std::atoll(argv[6]));
    }
    std::fprintf(stderr, "usage: host_check nuquant f32|f16 LEVELS X OUT | unpack BITS NUMEL CODES OUT | "
                         "cursor INNER CHANNELS FIRST STRIDE GROUPS\n");
    return 2;
}
