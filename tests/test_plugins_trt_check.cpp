// Loads libi2nq_trt.so the way trtexec --dynamicPlugins does (dlopen, setLoggerFinder, getCreators) and drives
// the plugins' build-time and serialization logic without a TensorRT runtime or a GPU.
//   trt_check path/to/libi2nq_trt.so [--enqueue]   -> prints "OK", exit 0; a failed check prints it and exits 1
// --enqueue: also run both plugins' enqueue on host buffers against a reference. Only for a library whose
// kernels were built for the CPU with tests/emu/cuda_emu.h (a CUDA build needs device pointers).
#include <NvInferRuntime.h>
#include <cuda_fp16.h>

#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
int gFailures = 0;
int gLoggedErrors = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAILED line %d: %s\n", __LINE__, #cond);                                                      \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

class CountingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const*) noexcept override { gLoggedErrors += severity == Severity::kERROR; }
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override { return &mLogger; }

private:
    CountingLogger mLogger;
};

Dims dims(std::vector<int64_t> const& d)
{
    Dims out{};
    out.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        out.d[i] = d[i];
    }
    return out;
}

DynamicPluginTensorDesc tensor(DataType type, std::vector<int64_t> const& shape)
{
    DynamicPluginTensorDesc t{};
    t.desc.dims = t.min = t.opt = t.max = dims(shape);
    t.desc.type = type;
    t.desc.format = TensorFormat::kLINEAR;
    return t;
}

//! supportsFormatCombination for every position of io, as a string of 0/1.
std::string support(IPluginV3OneBuild* build, std::vector<DynamicPluginTensorDesc> const& io)
{
    std::string out;
    for (int32_t pos = 0; pos < static_cast<int32_t>(io.size()); ++pos)
    {
        out += build->supportsFormatCombination(pos, io.data(), 2, 1) ? '1' : '0';
    }
    return out;
}

IPluginCreatorV3One* findCreator(IPluginCreatorInterface* const* creators, int32_t n, char const* name)
{
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0
            && std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

void checkNuquant(IPluginCreatorV3One* creator)
{
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "i2nq") == 0);
    IPluginV3* plugin = creator->createPlugin("q", creator->getFieldNames(), TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(std::strcmp(core->getPluginName(), "NUQuant") == 0 && std::strcmp(core->getPluginNamespace(), "i2nq") == 0);
    CHECK(build->getNbOutputs() == 1);
    DataType out{};
    DataType const in[] = {DataType::kHALF, DataType::kHALF};
    CHECK(build->getOutputDataTypes(&out, 1, in, 2) == 0 && out == DataType::kHALF);
    auto const x = tensor(DataType::kHALF, {-1, 64, 32, 32});
    CHECK(support(build, {x, tensor(DataType::kHALF, {16}), tensor(DataType::kHALF, {-1, 64, 32, 32})}) == "111");
    CHECK(support(build, {x, tensor(DataType::kFLOAT, {16}), x})[1] == '0');
    CHECK(support(build, {tensor(DataType::kINT32, {4}), x, x})[0] == '0');
    CHECK(
        build->configurePlugin(std::vector<DynamicPluginTensorDesc>{x, tensor(DataType::kHALF, {256})}.data(), 2, &x, 1)
        == 0);
    int const errors = gLoggedErrors;
    CHECK(
        build->configurePlugin(std::vector<DynamicPluginTensorDesc>{x, tensor(DataType::kHALF, {257})}.data(), 2, &x, 1)
        != 0);
    CHECK(gLoggedErrors == errors + 1);
    CHECK(runtime->getFieldsToSerialize()->nbFields == 0);
    IPluginV3* attached = runtime->attachToContext(nullptr);
    CHECK(attached != nullptr && attached != plugin);
    delete attached;
    delete plugin;
}

void checkLutDequant(IPluginCreatorV3One* creator)
{
    // Fields as TensorRT's ONNX parser passes ONNX INT/INTS attributes: kINT32 values.
    int32_t const bits = 3, axis = 0, badBits = 5;
    int32_t const shape[] = {4, 3, 3, 3};
    std::vector<PluginField> fields{PluginField("bits", &bits, PluginFieldType::kINT32, 1),
        PluginField("shape", shape, PluginFieldType::kINT32, 4),
        PluginField("axis", &axis, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fc{3, fields.data()};
    IPluginV3* plugin = creator->createPlugin("w", &fc, TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));

    // Serialized fields recreate the same plugin in the runtime phase.
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    CHECK(saved->nbFields == 3);
    IPluginV3* restored = creator->createPlugin("w", saved, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    PluginFieldCollection const* again =
        static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
            ->getFieldsToSerialize();
    for (int32_t i = 0; i < 3 && again->nbFields == 3; ++i)
    {
        CHECK(std::strcmp(saved->fields[i].name, again->fields[i].name) == 0);
        CHECK(saved->fields[i].length == again->fields[i].length);
        CHECK(std::memcmp(saved->fields[i].data, again->fields[i].data, 4 * saved->fields[i].length) == 0);
    }
    delete restored;

    DataType out{};
    DataType const in[] = {DataType::kINT32, DataType::kHALF};
    CHECK(build->getOutputDataTypes(&out, 1, in, 2) == 0 && out == DataType::kHALF);
    auto const w = tensor(DataType::kHALF, {4, 3, 3, 3});
    auto const levels = tensor(DataType::kHALF, {4, 8});
    CHECK(support(build, {tensor(DataType::kINT32, {41}), levels, w}) == "111");
    CHECK(support(build, {tensor(DataType::kINT8, {41}), levels, w})[0] == '1');
    CHECK(support(build, {tensor(DataType::kFLOAT, {41}), levels, w})[0] == '0');
    CHECK(support(build, {tensor(DataType::kINT8, {41}), levels, tensor(DataType::kFLOAT, {4, 3, 3, 3})})[2] == '0');
    auto configure = [&](std::vector<int64_t> codes, std::vector<int64_t> lv)
    {
        std::vector<DynamicPluginTensorDesc> io{tensor(DataType::kINT8, codes), tensor(DataType::kHALF, lv)};
        return build->configurePlugin(io.data(), 2, &w, 1);
    };
    CHECK(configure({41}, {4, 8}) == 0); // ceil(108 * 3 / 8) = 41 bytes, per-channel levels
    CHECK(configure({41}, {8}) == 0);    // per-tensor levels
    CHECK(configure({41}, {1, 8}) == 0);
    CHECK(configure({40}, {8}) != 0);    // too few code bytes
    CHECK(configure({41}, {3, 8}) != 0); // channels != shape[axis]
    CHECK(configure({41}, {4, 257}) != 0);
    delete plugin;

    int const errors = gLoggedErrors;
    fields[0] = PluginField("bits", &badBits, PluginFieldType::kINT32, 1);
    CHECK(creator->createPlugin("w", &fc, TensorRTPhase::kBUILD) == nullptr);
    fields[0] = PluginField("bits", &bits, PluginFieldType::kINT32, 1);
    PluginFieldCollection noShape{1, fields.data()};
    CHECK(creator->createPlugin("w", &noShape, TensorRTPhase::kBUILD) == nullptr);
    CHECK(gLoggedErrors == errors + 2);
}

PluginTensorDesc plain(DataType type, std::vector<int64_t> const& shape)
{
    return tensor(type, shape).desc;
}

float toFloat(float v)
{
    return v;
}
float toFloat(__half v)
{
    return __half2float(v);
}

//! NUQuant enqueue on a [2, 3, 5, 7] tensor: the nearest of 4 levels (inputs are kept off the thresholds).
template <typename T>
void checkNuquantEnqueue(IPluginCreatorV3One* creator, DataType type)
{
    IPluginV3* plugin = creator->createPlugin("q", creator->getFieldNames(), TensorRTPhase::kRUNTIME);
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::vector<T> const levels{T(-1.0f), T(-0.25f), T(0.5f), T(2.0f)};
    std::vector<T> x(2 * 3 * 5 * 7);
    std::vector<T> y(x.size(), T(NAN));
    for (size_t i = 0; i < x.size(); ++i)
    {
        x[i] = T(3.0f * std::sin(0.7f * static_cast<float>(i)) + 0.01f);
    }
    PluginTensorDesc const in[] = {plain(type, {2, 3, 5, 7}), plain(type, {4})};
    PluginTensorDesc const out[] = {plain(type, {2, 3, 5, 7})};
    void const* inputs[] = {x.data(), levels.data()};
    void* outputs[] = {y.data()};
    CHECK(runtime->onShapeChange(in, 2, out, 1) == 0);
    CHECK(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) == 0);
    int wrong = 0;
    for (size_t i = 0; i < x.size(); ++i)
    {
        float best = toFloat(levels[0]);
        for (T const& l : levels)
        {
            best = std::fabs(toFloat(x[i]) - toFloat(l)) < std::fabs(toFloat(x[i]) - best) ? toFloat(l) : best;
        }
        wrong += toFloat(y[i]) != best;
    }
    CHECK(wrong == 0);
    delete plugin;
}

//! LUTDequant enqueue, 3-bit codes of a [5, 4, 3, 3] weight with per-channel levels [4, 8] on axis 1, codes as
//! INT8 (packed bytes) and as INT32 (one byte per element, what the ONNX parser makes of a uint8 initializer).
template <typename T>
void checkLutDequantEnqueue(IPluginCreatorV3One* creator, DataType type, DataType codesType)
{
    int32_t const bits = 3, axis = 1;
    int32_t const shape[] = {5, 4, 3, 3};
    int const numel = 5 * 4 * 3 * 3, channels = 4, k = 8, inner = 9;
    PluginField fields[] = {PluginField("bits", &bits, PluginFieldType::kINT32, 1),
        PluginField("shape", shape, PluginFieldType::kINT32, 4), PluginField("axis", &axis, PluginFieldType::kINT32, 1)};
    PluginFieldCollection const fc{3, fields};
    IPluginV3* plugin = creator->createPlugin("w", &fc, TensorRTPhase::kRUNTIME);
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::vector<int> codes(numel);
    std::vector<uint8_t> packed((numel * bits + 7) / 8, 0);
    for (int i = 0; i < numel; ++i)
    {
        codes[i] = (i * 5 + i / 7) % k;
        for (int b = 0; b < bits; ++b)
        {
            int const bit = i * bits + b;
            packed[bit / 8] |= static_cast<uint8_t>(((codes[i] >> b) & 1) << (bit % 8));
        }
    }
    std::vector<T> levels(channels * k);
    for (int c = 0; c < channels; ++c)
    {
        for (int j = 0; j < k; ++j)
        {
            levels[c * k + j] = T(static_cast<float>(c) * 10.0f + static_cast<float>(j) * 0.5f);
        }
    }
    std::vector<int32_t> widened(packed.begin(), packed.end());
    void const* codeData = codesType == DataType::kINT32 ? static_cast<void const*>(widened.data()) : packed.data();
    std::vector<T> w(numel, T(NAN));
    PluginTensorDesc const in[] = {plain(codesType, {static_cast<int64_t>(packed.size())}), plain(type, {channels, k})};
    PluginTensorDesc const out[] = {plain(type, {5, 4, 3, 3})};
    void const* inputs[] = {codeData, levels.data()};
    void* outputs[] = {w.data()};
    CHECK(runtime->onShapeChange(in, 2, out, 1) == 0);
    CHECK(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) == 0);
    int wrong = 0;
    for (int i = 0; i < numel; ++i)
    {
        wrong += toFloat(w[i]) != toFloat(levels[((i / inner) % channels) * k + codes[i]]);
    }
    CHECK(wrong == 0);
    delete plugin;
}
} // namespace

int main(int argc, char** argv)
{
    bool const enqueue = argc == 3 && std::strcmp(argv[2], "--enqueue") == 0;
    void* lib = argc == 2 || enqueue ? dlopen(argv[1], RTLD_NOW | RTLD_LOCAL) : nullptr;
    if (!lib)
    {
        std::printf("cannot load %s: %s\n", argc >= 2 ? argv[1] : "(no path)", dlerror());
        return 2;
    }
    auto setFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(lib, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(lib, "getCreators"));
    auto version = reinterpret_cast<char const* (*)()>(dlsym(lib, "i2nqPluginVersion"));
    CHECK(setFinder && getCreators && version);
    if (gFailures)
    {
        return 1;
    }
    static Finder finder;
    setFinder(&finder);
    CHECK(std::strcmp(version(), "1") == 0);
    // The probes the Python loader reads: TensorRT version of the headers, CUDA architectures, device check.
    auto trtVersion = reinterpret_cast<char const* (*)()>(dlsym(lib, "i2nqTensorRTVersion"));
    auto archs = reinterpret_cast<char const* (*)()>(dlsym(lib, "i2nqCudaArchs"));
    auto checkDevice = reinterpret_cast<int (*)(int)>(dlsym(lib, "i2nqCheckDevice"));
    CHECK(trtVersion && archs && checkDevice);
    if (trtVersion)
    {
        std::string const headers = std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "."
            + std::to_string(NV_TENSORRT_PATCH);
        CHECK(headers == trtVersion());
    }
    if (checkDevice && enqueue)
    {
        CHECK(checkDevice(0) == 0); // the CPU emulation has one device, on which every kernel has an image
    }
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    CHECK(n == 2);
    IPluginCreatorV3One* nuquant = findCreator(creators, n, "NUQuant");
    IPluginCreatorV3One* lut = findCreator(creators, n, "LUTDequant");
    CHECK(nuquant && lut);
    if (nuquant && lut)
    {
        checkNuquant(nuquant);
        checkLutDequant(lut);
    }
    if (nuquant && lut && enqueue)
    {
        checkNuquantEnqueue<float>(nuquant, DataType::kFLOAT);
        checkNuquantEnqueue<__half>(nuquant, DataType::kHALF);
        for (DataType codesType : {DataType::kINT8, DataType::kINT32})
        {
            checkLutDequantEnqueue<float>(lut, DataType::kFLOAT, codesType);
            checkLutDequantEnqueue<__half>(lut, DataType::kHALF, codesType);
        }
    }
    std::printf(gFailures ? "%d FAILED\n" : "OK\n", gFailures);
    return gFailures ? 1 : 0;
}
