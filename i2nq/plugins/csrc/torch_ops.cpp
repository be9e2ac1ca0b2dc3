// The ai.i2nq CUDA kernels as a torch extension (built by i2nq/plugins/torch_ops.py with
// torch.utils.cpp_extension.load): forward-only ops on CUDA tensors, on the current CUDA stream.
#include "i2nq_kernels.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>
#include <vector>

namespace
{

i2nq::DType dtypeOf(at::Tensor const& t, char const* what)
{
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, "i2nq: ", what,
        " must be float32 or float16, not ", t.scalar_type());
    return t.scalar_type() == at::kFloat ? i2nq::DType::kFloat32 : i2nq::DType::kFloat16;
}

//! `out` when given (checked: contiguous, right dtype, device and size; may start at any offset), else new.
at::Tensor output(std::optional<at::Tensor> const& out, at::Tensor const& like, at::IntArrayRef shape)
{
    if (!out.has_value())
    {
        return at::empty(shape, like.options());
    }
    TORCH_CHECK(out->is_contiguous() && out->scalar_type() == like.scalar_type() && out->device() == like.device()
                    && out->sizes() == shape,
        "i2nq: out must be a contiguous ", like.scalar_type(), " tensor of shape ", shape, " on ", like.device());
    return *out;
}

void checkLaunch(cudaError_t status, char const* op)
{
    TORCH_CHECK(status == cudaSuccess, "i2nq ", op, ": ", cudaGetErrorString(status));
}

at::Tensor nuquant(at::Tensor const& x, at::Tensor const& levels, std::optional<at::Tensor> out)
{
    TORCH_CHECK(x.is_cuda() && levels.device() == x.device(), "i2nq nuquant: x and levels must be on one CUDA device");
    TORCH_CHECK(levels.dim() == 1 && levels.numel() >= 1 && levels.numel() <= i2nq::kMaxLevels,
        "i2nq nuquant: levels must be 1-D with 1 to 256 values");
    TORCH_CHECK(levels.scalar_type() == x.scalar_type(), "i2nq nuquant: levels must have the dtype of x");
    i2nq::DType const dtype = dtypeOf(x, "x");
    c10::cuda::CUDAGuard const guard(x.device());
    at::Tensor const xc = x.contiguous();
    at::Tensor const lc = levels.contiguous();
    at::Tensor y = output(out, xc, xc.sizes());
    checkLaunch(i2nq::launchNuquant(dtype, xc.data_ptr(), lc.data_ptr(), static_cast<int32_t>(lc.numel()), y.data_ptr(),
                    xc.numel(), c10::cuda::getCurrentCUDAStream()),
        "nuquant");
    return y;
}

at::Tensor lutDequant(at::Tensor const& codes, at::Tensor const& levels, int64_t bits, std::vector<int64_t> shape,
    int64_t axis, std::optional<at::Tensor> out)
{
    TORCH_CHECK(codes.is_cuda() && levels.device() == codes.device(),
        "i2nq lut_dequant: codes and levels must be on one CUDA device");
    TORCH_CHECK(codes.scalar_type() == at::kByte, "i2nq lut_dequant: codes must be uint8");
    TORCH_CHECK(!shape.empty(), "i2nq lut_dequant: shape must not be empty");
    int64_t const rank = static_cast<int64_t>(shape.size());
    axis = axis < 0 ? axis + rank : axis;
    TORCH_CHECK(axis >= 0 && axis < rank, "i2nq lut_dequant: axis out of range");
    TORCH_CHECK(levels.dim() == 1 || (levels.dim() == 2 && (levels.size(0) == 1 || levels.size(0) == shape[axis])),
        "i2nq lut_dequant: levels must be [K] or [shape[axis], K]");
    i2nq::DType const dtype = dtypeOf(levels, "levels");
    int64_t inner = 1;
    for (int64_t i = axis + 1; i < rank; ++i)
    {
        inner *= shape[i];
    }
    c10::cuda::CUDAGuard const guard(codes.device());
    at::Tensor const cc = codes.contiguous();
    at::Tensor const lc = levels.contiguous();
    at::Tensor w = output(out, lc, shape);
    int32_t const channels = lc.dim() == 2 ? static_cast<int32_t>(lc.size(0)) : 1;
    checkLaunch(i2nq::launchLutDequant(dtype, cc.data_ptr(), cc.numel(), 1, lc.data_ptr(), channels,
                    static_cast<int32_t>(lc.size(-1)), static_cast<int32_t>(bits), w.numel(), inner, w.data_ptr(),
                    c10::cuda::getCurrentCUDAStream()),
        "lut_dequant (check bits, the code byte count and the number of levels)");
    return w;
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("nuquant", &nuquant, "NUQuant(x, levels) -> y", pybind11::arg("x"), pybind11::arg("levels"),
        pybind11::arg("out") = pybind11::none());
    m.def("lut_dequant", &lutDequant, "LUTDequant(codes, levels, bits, shape, axis) -> w", pybind11::arg("codes"),
        pybind11::arg("levels"), pybind11::arg("bits"), pybind11::arg("shape"), pybind11::arg("axis") = 0,
        pybind11::arg("out") = pybind11::none());
}
