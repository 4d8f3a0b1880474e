// CUDA backend: driver API, NVRTC and cuBLASLt loaded with dlopen at run time.
