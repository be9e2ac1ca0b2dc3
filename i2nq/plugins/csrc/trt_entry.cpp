// Entry points of libi2nq_trt.so for `trtexec --dynamicPlugins` / IPluginRegistry::loadLibrary, plus the probes the
// Python loader reads (with ctypes) before handing the library to TensorRT: op version, TensorRT version of the
// headers, CUDA architectures (and i2nqCheckDevice in trt_device.cu).
#include "trt_common.h"

#define I2NQ_EXPORT extern "C" __attribute__((visibility("default")))
#define I2NQ_STRINGIFY2(x) #x
#define I2NQ_STRINGIFY(x) I2NQ_STRINGIFY2(x)
//! CMake's CUDA_ARCHITECTURES of this build, comma-separated (e.g. "80-real,86-real,90"); CMakeLists.txt sets it.
#ifndef I2NQ_CUDA_ARCHS
#define I2NQ_CUDA_ARCHS ""
#endif

I2NQ_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    i2nq::trt::setLoggerFinder(finder);
}

I2NQ_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {
        i2nq::trt::nuquantCreator(), i2nq::trt::lutDequantCreator()};
    nbCreators = 2;
    return creators;
}

//! Contract version of the ops ("1") this library implements.
I2NQ_EXPORT char const* i2nqPluginVersion()
{
    return i2nq::kPluginVersion;
}

//! TensorRT version of the headers this library was built against ("11.1.0"). The plugin interfaces are only
//! compatible within a TensorRT major version, so the loader refuses the library in a process of another major.
I2NQ_EXPORT char const* i2nqTensorRTVersion()
{
    return I2NQ_STRINGIFY(NV_TENSORRT_MAJOR) "." I2NQ_STRINGIFY(NV_TENSORRT_MINOR) "." I2NQ_STRINGIFY(NV_TENSORRT_PATCH);
}

//! CUDA architectures the kernels were built for (CMake's CUDA_ARCHITECTURES, comma-separated).
I2NQ_EXPORT char const* i2nqCudaArchs()
{
    return I2NQ_CUDA_ARCHS;
}
