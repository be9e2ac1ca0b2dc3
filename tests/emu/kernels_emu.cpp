// Runs the real ai.i2nq kernels (built for the CPU with cuda_emu.h) on files written by
// tests/test_plugins_emu.py. Each buffer sits at a chosen element offset inside a larger allocation, so
// misaligned pointers take the kernels' scalar head paths; the slack around it is poisoned for
// AddressSanitizer (reads) and filled with a guard byte that must survive (writes). The output starts
// as all-ones bytes (a NaN pattern no level has), so an element the kernel never writes shows up.
//   kernels_emu nuquant f32|f16 LEVELS X OUT XOFF YOFF
//   kernels_emu lut f32|f16 BITS STRIDE CODES LEVELS CHANNELS NUMEL INNER OUT CODESOFF WOFF
// Exit 0: ran (outputs in OUT); 3: wrote outside its output; 2: bad arguments or launch error.
#include "i2nq_kernels.h"

#include <sanitizer/asan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{
constexpr unsigned char kGuard = 0xCD;
constexpr size_t kSlack = 64;

[[noreturn]] void die(std::string const& message)
{
    std::fprintf(stderr, "kernels_emu: %s\n", message.c_str());
    std::exit(2);
}

std::vector<unsigned char> readFile(char const* path)
{
    FILE* f = std::fopen(path, "rb");
    if (!f)
        die(std::string("cannot read ") + path);
    std::vector<unsigned char> data;
    unsigned char buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0)
        data.insert(data.end(), buf, buf + got);
    std::fclose(f);
    return data;
}

//! `bytes` bytes at byte offset `offset` of a 64-byte aligned allocation with poisoned, guarded slack.
class Placed
{
public:
    Placed(size_t bytes, size_t offset, unsigned char fill)
        : mBytes(bytes)
        , mOffset(offset)
        , mTotal(offset + bytes + kSlack)
    {
        mBase = static_cast<unsigned char*>(std::aligned_alloc(64, (mTotal + 63) / 64 * 64));
        std::memset(mBase, kGuard, mTotal);
        std::memset(data(), fill, bytes);
        ASAN_POISON_MEMORY_REGION(mBase, mOffset);
        ASAN_POISON_MEMORY_REGION(data() + bytes, kSlack);
    }
    Placed(std::vector<unsigned char> const& content, size_t offset)
        : Placed(content.size(), offset, 0)
    {
        std::memcpy(data(), content.data(), content.size());
    }
    ~Placed()
    {
        ASAN_UNPOISON_MEMORY_REGION(mBase, mTotal);
        std::free(mBase);
    }
    Placed(Placed const&) = delete;
    Placed& operator=(Placed const&) = delete;

    unsigned char* data() const
    {
        return mBase + mOffset;
    }
    //! True when the slack on both sides still holds the guard byte.
    bool guardsIntact() const
    {
        ASAN_UNPOISON_MEMORY_REGION(mBase, mTotal);
        for (size_t i = 0; i < mTotal; ++i)
        {
            bool const inside = i >= mOffset && i < mOffset + mBytes;
            if (!inside && mBase[i] != kGuard)
                return false;
        }
        return true;
    }
    void save(char const* path) const
    {
        FILE* f = std::fopen(path, "wb");
        if (!f || std::fwrite(data(), 1, mBytes, f) != mBytes || std::fclose(f) != 0)
            die(std::string("cannot write ") + path);
    }

private:
    size_t mBytes;
    size_t mOffset;
    size_t mTotal;
    unsigned char* mBase;
};

i2nq::DType dtypeOf(std::string const& name, size_t& size)
{
    if (name == "f32")
    {
        size = 4;
        return i2nq::DType::kFloat32;
    }
    if (name == "f16")
    {
        size = 2;
        return i2nq::DType::kFloat16;
    }
    die("dtype must be f32 or f16");
}

long long number(char const* text)
{
    char* end = nullptr;
    long long const v = std::strtoll(text, &end, 10);
    if (!end || *end)
        die(std::string("not a number: ") + text);
    return v;
}

int finish(cudaError_t status, Placed const& out, char const* path)
{
    if (status != cudaSuccess)
        die("launch failed: cudaError " + std::to_string(static_cast<int>(status)));
    if (!out.guardsIntact())
    {
        std::fprintf(stderr, "kernels_emu: the kernel wrote outside its output\n");
        return 3;
    }
    out.save(path);
    return 0;
}

int nuquant(char** argv)
{
    size_t size = 0;
    i2nq::DType const dtype = dtypeOf(argv[0], size);
    std::vector<unsigned char> const levels = readFile(argv[1]);
    std::vector<unsigned char> const xBytes = readFile(argv[2]);
    size_t const xOff = static_cast<size_t>(number(argv[4])) * size;
    size_t const yOff = static_cast<size_t>(number(argv[5])) * size;
    Placed const lv(levels, 0);
    Placed const x(xBytes, xOff);
    Placed const y(xBytes.size(), yOff, 0xFF);
    cudaError_t const status = i2nq::launchNuquant(dtype, x.data(), lv.data(),
        static_cast<int32_t>(levels.size() / size), y.data(), static_cast<int64_t>(xBytes.size() / size), nullptr);
    return finish(status, y, argv[3]);
}

int lut(char** argv)
{
    size_t size = 0;
    i2nq::DType const dtype = dtypeOf(argv[0], size);
    int const bits = static_cast<int>(number(argv[1]));
    int const stride = static_cast<int>(number(argv[2]));
    std::vector<unsigned char> const codes = readFile(argv[3]);
    std::vector<unsigned char> const levels = readFile(argv[4]);
    int const channels = static_cast<int>(number(argv[5]));
    long long const numel = number(argv[6]);
    long long const inner = number(argv[7]);
    Placed const c(codes, static_cast<size_t>(number(argv[9])));
    Placed const lv(levels, 0);
    Placed const w(static_cast<size_t>(numel) * size, static_cast<size_t>(number(argv[10])) * size, 0xFF);
    int const numLevels = static_cast<int>(levels.size() / size / static_cast<size_t>(channels));
    cudaError_t const status = i2nq::launchLutDequant(dtype, c.data(), static_cast<int64_t>(codes.size()) / stride,
        stride, lv.data(), channels, numLevels, bits, numel, inner, w.data(), nullptr);
    return finish(status, w, argv[8]);
}

} // namespace

int main(int argc, char** argv)
{
    std::string const op = argc > 1 ? argv[1] : "";
    if (op == "nuquant" && argc == 8)
        return nuquant(argv + 2);
    if (op == "lut" && argc == 13)
        return lut(argv + 2);
    die("usage: kernels_emu nuquant DTYPE LEVELS X OUT XOFF YOFF | lut DTYPE BITS STRIDE CODES LEVELS CHANNELS "
        "NUMEL INNER OUT CODESOFF WOFF");
}
