// Whether this library's CUDA kernels can run on a device. The Python loader asks before it hands the library to
// TensorRT, so that a library built for other GPUs is refused with a message naming the fix, instead of failing
// inside an engine build. Every .cu of the library is compiled for the same architectures, so a probe kernel here
// answers for the ai.i2nq kernels too.
#include <cuda_runtime_api.h>

namespace
{
__global__ void i2nqProbeKernel() {}
} // namespace

//! cudaSuccess (0) when the kernels have an image (SASS or PTX) for CUDA device `device`, else the CUDA error
//! (cudaErrorNoKernelImageForDevice = 209 for a library built for other architectures). The calling thread's
//! current device is restored.
extern "C" __attribute__((visibility("default"))) int i2nqCheckDevice(int device)
{
    int previous = 0;
    cudaError_t status = cudaGetDevice(&previous);
    if (status == cudaSuccess && previous != device)
    {
        status = cudaSetDevice(device);
    }
    if (status == cudaSuccess)
    {
        cudaFuncAttributes attributes;
        status = cudaFuncGetAttributes(&attributes, i2nqProbeKernel);
    }
    if (previous != device)
    {
        cudaSetDevice(previous);
    }
    return static_cast<int>(status);
}
