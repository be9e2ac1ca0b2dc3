// Shared pieces of the i2nq TensorRT plugins (IPluginV3: OneCore + OneBuild + OneRuntime): logging through the
// ILoggerFinder handed to setLoggerFinder(), dtype mapping, and a base class with the boilerplate.
#pragma once

#include "i2nq_kernels.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <vector>

namespace i2nq
{
namespace trt
{
using namespace nvinfer1;

//! Remember the finder TensorRT passes to setLoggerFinder().
void setLoggerFinder(ILoggerFinder* finder) noexcept;
//! Log `message` as an error ("i2nq <op>: message") and return -1, the plugin API's failure status.
int32_t fail(char const* op, char const* message) noexcept;

//! The op's dtype for a TensorRT float type; false for any other type.
bool toDType(DataType type, DType& out) noexcept;
//! Number of elements (dimensions must be known).
int64_t volume(Dims const& dims) noexcept;

//! The plugin creators of this library (static instances).
IPluginCreatorV3One* nuquantCreator() noexcept;
IPluginCreatorV3One* lutDequantCreator() noexcept;

//! Everything both ops share: capabilities, identity, one output, no per-shape or per-context state.
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime
{
public:
    explicit PluginBase(char const* name) noexcept
        : mName(name)
    {
    }

    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override;
    AsciiChar const* getPluginName() const noexcept override { return mName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override
    {
        return 0;
    }
    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
    char const* getTimingCacheID() noexcept override { return nullptr; }

protected:
    //! Output 0 takes the dtype of input `typeInput` (the levels' dtype).
    static int32_t outputTypeOf(int32_t typeInput, DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
        int32_t nbInputs) noexcept;

    char const* mName;
};

//! A creator for plugin class P, which provides kNAME, fieldNames() and create(fc) (nullptr when invalid).
template <class P>
class Creator final : public IPluginCreatorV3One
{
public:
    IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override
    {
        return P::create(fc);
    }
    PluginFieldCollection const* getFieldNames() noexcept override { return P::fieldNames(); }
    AsciiChar const* getPluginName() const noexcept override { return P::kNAME; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
};

} // namespace trt
} // namespace i2nq
