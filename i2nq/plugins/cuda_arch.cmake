# CUDA architectures of the i2nq GPU code when the user names none.
#
#   include(cuda_arch.cmake)             # BEFORE project(... CUDA): notes whether the user chose
#   project(... LANGUAGES CXX CUDA)
#   i2nq_default_cuda_architectures()    # AFTER project(): sets CMAKE_CUDA_ARCHITECTURES unless the user chose
#
# The user chooses with -DCMAKE_CUDA_ARCHITECTURES=... or $CUDAARCHS; that is always kept. Otherwise:
#   1. the GPU(s) of this machine (e.g. "90": SASS for sm_90 plus PTX), where this nvcc can compile for them:
#      what CMake's `native` resolves to (CMAKE_CUDA_ARCHITECTURES_NATIVE, found by running a probe on the GPU
#      while CMake tests the compiler; CMake >= 3.24), else the compute capability nvidia-smi reports;
#   2. else (no GPU visible) the documented list I2NQ_CUDA_ARCH_LIST (sm_80, sm_86, sm_89, sm_90, sm_100,
#      sm_120), each where `nvcc --list-gpu-arch` supports it: SASS for each, PTX for the last one (newer GPUs
#      JIT it).
# Why: enable_language(CUDA) fills an unset CMAKE_CUDA_ARCHITECTURES with nvcc's own default (52 before CUDA 13,
# 75 with CUDA 13), so "is it the default?" cannot be answered after project() by comparing with one number.
# The choice made here is cached with a marker, so a reconfigure redoes it (a GPU may have appeared) while a
# user's choice stays. I2NQ_CUDA_ARCH_SOURCE says which rule applied ("user", "native", "nvidia-smi", "list").

set(I2NQ_CUDA_ARCH_LIST 80 86 89 90 100 120)

if(DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT "${CMAKE_CUDA_ARCHITECTURES}" STREQUAL "${I2NQ_CUDA_ARCH_DEFAULTED}")
  set(_i2nq_arch_user TRUE)
elseif(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT "$ENV{CUDAARCHS}" STREQUAL "")
  set(_i2nq_arch_user TRUE)
else()
  set(_i2nq_arch_user FALSE)
  # Ours from an earlier configure: forget it, so that enable_language() and the rules below start afresh.
  unset(CMAKE_CUDA_ARCHITECTURES CACHE)
  unset(CMAKE_CUDA_ARCHITECTURES)
endif()

# Architectures (e.g. "90", "120") this nvcc compiles for; empty when it cannot tell.
function(_i2nq_nvcc_archs out)
  execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-arch RESULT_VARIABLE rc OUTPUT_VARIABLE text
                  ERROR_QUIET TIMEOUT 60)
  set(archs "")
  if(rc EQUAL 0)
    string(REGEX MATCHALL "compute_[0-9]+" found "${text}")
    foreach(a IN LISTS found)
      string(REPLACE "compute_" "" a "${a}")
      list(APPEND archs "${a}")
    endforeach()
  endif()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()

# Compute capabilities of this machine's GPUs as "90", "120"...; empty without nvidia-smi or a GPU.
function(_i2nq_gpu_archs out)
  execute_process(COMMAND nvidia-smi --query-gpu=compute_cap --format=csv,noheader RESULT_VARIABLE rc
                  OUTPUT_VARIABLE text ERROR_QUIET TIMEOUT 30)
  set(archs "")
  if(rc EQUAL 0)
    string(REGEX MATCHALL "[0-9]+\\.[0-9]+" caps "${text}")
    foreach(cap IN LISTS caps)
      string(REPLACE "." "" a "${cap}")
      list(APPEND archs "${a}")
    endforeach()
    list(REMOVE_DUPLICATES archs)
  endif()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()

macro(i2nq_default_cuda_architectures)
  if(_i2nq_arch_user)
    set(I2NQ_CUDA_ARCH_SOURCE "user")
  else()
    _i2nq_nvcc_archs(_i2nq_supported)
    if(NOT _i2nq_supported)  # an nvcc without --list-gpu-arch (older CUDA): go by its version
      set(_i2nq_supported 80 86)
      if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 11.8)
        list(APPEND _i2nq_supported 89 90)
      endif()
      if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.8)
        list(APPEND _i2nq_supported 100 120)
      endif()
    endif()
    if(CMAKE_CUDA_ARCHITECTURES_NATIVE)
      set(I2NQ_CUDA_ARCH_SOURCE "native")
      string(REPLACE "-real" "" _i2nq_gpu "${CMAKE_CUDA_ARCHITECTURES_NATIVE}")
    else()
      set(I2NQ_CUDA_ARCH_SOURCE "nvidia-smi")
      _i2nq_gpu_archs(_i2nq_gpu)
    endif()
    set(_i2nq_archs "")
    foreach(a IN LISTS _i2nq_gpu)
      if(a IN_LIST _i2nq_supported)
        list(APPEND _i2nq_archs "${a}")
      endif()
    endforeach()
    if(NOT _i2nq_archs)
      set(I2NQ_CUDA_ARCH_SOURCE "list")
      foreach(a IN LISTS I2NQ_CUDA_ARCH_LIST)
        if(a IN_LIST _i2nq_supported)
          list(APPEND _i2nq_archs "${a}-real")
        endif()
      endforeach()
      list(POP_BACK _i2nq_archs _i2nq_last)
      string(REPLACE "-real" "" _i2nq_last "${_i2nq_last}")
      list(APPEND _i2nq_archs "${_i2nq_last}")  # SASS + PTX: GPUs newer than the list JIT the PTX
    endif()
    set(CMAKE_CUDA_ARCHITECTURES "${_i2nq_archs}" CACHE STRING "CUDA architectures (i2nq default)" FORCE)
    set(I2NQ_CUDA_ARCH_DEFAULTED "${_i2nq_archs}" CACHE INTERNAL "the CUDA architectures i2nq chose")
  endif()
  message(STATUS "i2nq: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES} (${I2NQ_CUDA_ARCH_SOURCE})")
endmacro()
