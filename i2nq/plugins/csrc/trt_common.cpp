// Logging, dtype mapping and the shared plugin base of the i2nq TensorRT plugins.
#include "trt_common.h"

#include <atomic>
#include <string>

namespace i2nq
{
namespace trt
{
namespace
{
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setLoggerFinder(ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

int32_t fail(char const* op, char const* message) noexcept
{
    try
    {
        ILoggerFinder* finder = gLoggerFinder.load();
        ILogger* logger = finder ? finder->findLogger() : nullptr;
        if (logger)
        {
            std::string const text = std::string("i2nq ") + op + ": " + message;
            logger->log(ILogger::Severity::kERROR, text.c_str());
        }
    }
    catch (...)
    {
    }
    return -1;
}

bool toDType(DataType type, DType& out) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: out = DType::kFloat32; return true;
    case DataType::kHALF: out = DType::kFloat16; return true;
    default: return false;
    }
}

int64_t volume(Dims const& dims) noexcept
{
    int64_t n = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        n *= dims.d[i];
    }
    return n;
}

IPluginCapability* PluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

int32_t PluginBase::outputTypeOf(
    int32_t typeInput, DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) noexcept
{
    DType unused;
    if (nbOutputs != 1 || nbInputs <= typeInput || !toDType(inputTypes[typeInput], unused))
    {
        return -1;
    }
    outputTypes[0] = inputTypes[typeInput];
    return 0;
}

} // namespace trt
} // namespace i2nq
