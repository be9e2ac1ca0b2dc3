// TensorRT plugin LUTDequant (namespace i2nq, version 1): W = LUTDequant(codes, levels) with fields bits,
// shape, axis (serialized with the engine); levels T[K] or T[C, K] with C = shape[axis]; W: T of `shape`.
// codes: TensorRT plugins take no UINT8 tensors, and its ONNX parser widens a uint8 initializer to INT32 (one
// byte per element). So codes are accepted as INT32 (one byte each, the low byte is used), as INT8 (the packed
// bytes reinterpreted, 4x smaller in the engine) or as UINT8 where a TensorRT release allows it.
#include "trt_common.h"

#include <algorithm>
#include <string>
#include <vector>

namespace i2nq
{
namespace trt
{
namespace
{

class LUTDequantPlugin final : public PluginBase
{
public:
    static constexpr char const* kNAME = "LUTDequant";

    static PluginFieldCollection const* fieldNames() noexcept
    {
        static PluginField const fields[] = {
            PluginField("bits", nullptr, PluginFieldType::kINT32, 1),
            PluginField("shape", nullptr, PluginFieldType::kINT32, 0),
            PluginField("axis", nullptr, PluginFieldType::kINT32, 1),
        };
        static PluginFieldCollection const collection{3, fields};
        return &collection;
    }

    //! A plugin from its fields (the ONNX attributes, or the serialized fields), or nullptr if they are invalid.
    static IPluginV3* create(PluginFieldCollection const* fc) noexcept
    {
        try
        {
            int32_t bits = 0;
            int32_t axis = 0;
            std::vector<int32_t> shape;
            for (int32_t i = 0; fc && i < fc->nbFields; ++i)
            {
                PluginField const& f = fc->fields[i];
                std::vector<int32_t> const values = readInts(f);
                std::string const name = f.name ? f.name : "";
                if (name == "shape")
                    shape = values;
                else if (name == "bits" && values.size() == 1)
                    bits = values[0];
                else if (name == "axis" && values.size() == 1)
                    axis = values[0];
            }
            int32_t const rank = static_cast<int32_t>(shape.size());
            axis = axis < 0 ? axis + rank : axis;
            bool const shapeOk = rank >= 1 && rank <= Dims::MAX_DIMS
                                 && std::all_of(shape.begin(), shape.end(), [](int32_t d) { return d >= 1; });
            if (!(bits == 2 || bits == 3 || bits == 4 || bits == 8) || !shapeOk || axis < 0 || axis >= rank)
            {
                fail(kNAME, "needs int fields bits in {2, 3, 4, 8}, shape (1 to 8 positive ints) and axis in range");
                return nullptr;
            }
            return new LUTDequantPlugin(bits, std::move(shape), axis);
        }
        catch (...)
        {
            fail(kNAME, "out of memory");
            return nullptr;
        }
    }

    IPluginV3* clone() noexcept override
    {
        try
        {
            return new LUTDequantPlugin(mBits, mShape, mAxis);
        }
        catch (...)
        {
            return nullptr;
        }
    }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        return nbInputs == 2 ? outputTypeOf(1, outputTypes, nbOutputs, inputTypes, nbInputs) : -1;
    }

    int32_t getOutputShapes(DimsExprs const*, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
        int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1)
        {
            return fail(kNAME, "takes two inputs (codes, levels) and has one output");
        }
        outputs[0].nbDims = static_cast<int32_t>(mShape.size());
        for (size_t i = 0; i < mShape.size(); ++i)
        {
            outputs[0].d[i] = exprBuilder.constant(mShape[i]);
        }
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
        if (pos == 0)
        {
            return desc.type == DataType::kINT32 || desc.type == DataType::kINT8 || desc.type == DataType::kUINT8;
        }
        return pos == 1 ? toDType(desc.type, unused) : desc.type == inOut[1].desc.type;
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1)
        {
            return fail(kNAME, "takes two inputs (codes, levels) and has one output");
        }
        Dims const& codes = in[0].max;
        Dims const& levels = in[1].max;
        if (codes.nbDims != 1 || codes.d[0] < (numel() * mBits + 7) / 8)
        {
            return fail(kNAME, "codes must be a 1-D tensor of ceil(numel(shape) * bits / 8) bytes");
        }
        int64_t const numLevels = levels.nbDims >= 1 ? levels.d[levels.nbDims - 1] : 0;
        int64_t const channels = levels.nbDims == 2 ? levels.d[0] : 1;
        if (levels.nbDims < 1 || levels.nbDims > 2 || numLevels < 1 || numLevels > kMaxLevels
            || (channels != 1 && channels != mShape[mAxis]))
        {
            return fail(kNAME, "levels must be [K] or [shape[axis], K] with 1 <= K <= 256");
        }
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        DType dtype;
        if (!toDType(inputDesc[1].type, dtype))
        {
            return fail(kNAME, "levels must be float32 or float16");
        }
        Dims const& levels = inputDesc[1].dims;
        int32_t const numLevels = static_cast<int32_t>(levels.d[levels.nbDims - 1]);
        int32_t const channels = levels.nbDims == 2 ? static_cast<int32_t>(levels.d[0]) : 1;
        int64_t inner = 1;
        for (size_t i = static_cast<size_t>(mAxis) + 1; i < mShape.size(); ++i)
        {
            inner *= mShape[i];
        }
        int32_t const byteStride = inputDesc[0].type == DataType::kINT32 ? 4 : 1;
        cudaError_t const status = launchLutDequant(dtype, inputs[0], volume(inputDesc[0].dims), byteStride, inputs[1],
            channels, numLevels, mBits, numel(), inner, outputs[0], stream);
        return status == cudaSuccess ? 0 : fail(kNAME, cudaGetErrorString(status));
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        mFields[0] = PluginField("bits", &mBits, PluginFieldType::kINT32, 1);
        mFields[1] = PluginField("shape", mShape.data(), PluginFieldType::kINT32, static_cast<int32_t>(mShape.size()));
        mFields[2] = PluginField("axis", &mAxis, PluginFieldType::kINT32, 1);
        mCollection = PluginFieldCollection{3, mFields};
        return &mCollection;
    }

private:
    LUTDequantPlugin(int32_t bits, std::vector<int32_t> shape, int32_t axis)
        : PluginBase(kNAME)
        , mBits(bits)
        , mShape(std::move(shape))
        , mAxis(axis)
    {
    }

    //! Integer field values (the ONNX parser passes INT/INTS attributes as kINT32; kINT64 is accepted too).
    static std::vector<int32_t> readInts(PluginField const& f)
    {
        std::vector<int32_t> values;
        for (int32_t i = 0; f.data && i < f.length; ++i)
        {
            if (f.type == PluginFieldType::kINT32)
                values.push_back(static_cast<int32_t const*>(f.data)[i]);
            else if (f.type == PluginFieldType::kINT64)
                values.push_back(static_cast<int32_t>(static_cast<int64_t const*>(f.data)[i]));
        }
        return values;
    }

    int64_t numel() const noexcept
    {
        int64_t n = 1;
        for (int32_t d : mShape)
        {
            n *= d;
        }
        return n;
    }

    int32_t mBits;
    std::vector<int32_t> mShape;
    int32_t mAxis;
    PluginField mFields[3];
    PluginFieldCollection mCollection{};
};

} // namespace

IPluginCreatorV3One* lutDequantCreator() noexcept
{
    static Creator<LUTDequantPlugin> creator;
    return &creator;
}

} // namespace trt
} // namespace i2nq
