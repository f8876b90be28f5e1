# toolchain-aarch64-linux-gnu.cmake - 64-bit Arm devices (Debian arm64).
#   scripts/install-cross-deps.sh
#   cmake -S . -B build/arm64 --toolchain cmake/toolchain-aarch64-linux-gnu.cmake -DFEDC_BUILD_COORDINATOR=OFF
# Programs run here under qemu-aarch64 (ctest does it by itself).
set(FEDC_CROSS_TRIPLET aarch64-linux-gnu)
set(FEDC_CROSS_PROCESSOR aarch64)
set(FEDC_CROSS_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-cross-common.cmake)
