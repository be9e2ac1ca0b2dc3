// TensorRT plugin NUQuant (namespace i2nq, version 1): Y = NUQuant(X, levels), X fp32/fp16 of any rank,
// levels T[K] (K <= 256), Y like X. No attributes; nothing to serialize.
#include "trt_common.h"

#include <new>

namespace i2nq
{
namespace trt
{
namespace
{

class NUQuantPlugin final : public PluginBase
{
public:
    static constexpr char const* kNAME = "NUQuant";

    NUQuantPlugin() noexcept
        : PluginBase(kNAME)
    {
    }

    static PluginFieldCollection const* fieldNames() noexcept
    {
        static PluginFieldCollection const none{0, nullptr};
        return &none;
    }
    static IPluginV3* create(PluginFieldCollection const*) noexcept { return new (std::nothrow) NUQuantPlugin(); }

    IPluginV3* clone() noexcept override { return new (std::nothrow) NUQuantPlugin(*this); }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        return nbInputs == 2 ? outputTypeOf(0, outputTypes, nbOutputs, inputTypes, nbInputs) : -1;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
        int32_t nbOutputs, IExprBuilder&) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1)
        {
            return fail(kNAME, "takes two inputs (X, levels) and has one output");
        }
        outputs[0] = inputs[0];
        return 0;
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t, int32_t) noexcept override
    {
        PluginTensorDesc const& desc = inOut[pos].desc;
        DType unused;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        return pos == 0 ? toDType(desc.type, unused) : desc.type == inOut[0].desc.type;
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1)
        {
            return fail(kNAME, "takes two inputs (X, levels) and has one output");
        }
        Dims const& levels = in[1].max;
        if (levels.nbDims != 1 || levels.d[0] < 1 || levels.d[0] > kMaxLevels)
        {
            return fail(kNAME, "levels must be a 1-D tensor of 1 to 256 sorted values");
        }
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        DType dtype;
        if (!toDType(inputDesc[0].type, dtype))
        {
            return fail(kNAME, "X must be float32 or float16");
        }
        cudaError_t const status = launchNuquant(dtype, inputs[0], inputs[1],
            static_cast<int32_t>(inputDesc[1].dims.d[0]), outputs[0], volume(inputDesc[0].dims), stream);
        return status == cudaSuccess ? 0 : fail(kNAME, cudaGetErrorString(status));
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return fieldNames(); }
};

} // namespace

IPluginCreatorV3One* nuquantCreator() noexcept
{
    static Creator<NUQuantPlugin> creator;
    return &creator;
}

} // namespace trt
} // namespace i2nq
