// Entry points of libi2nq_trt.so for `trtexec --dynamicPlugins` / IPluginRegistry::loadLibrary, plus a version
// probe the Python loader reads (with ctypes) before handing the library to TensorRT.
#include "trt_common.h"

#define I2NQ_EXPORT extern "C" __attribute__((visibility("default")))

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
