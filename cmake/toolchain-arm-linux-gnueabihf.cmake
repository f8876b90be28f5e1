# toolchain-arm-linux-gnueabihf.cmake - 32-bit Arm devices with hardware
# floating point (Debian armhf: ARMv7-A, VFPv3-D16, Thumb-2).
#   scripts/install-cross-deps.sh
#   cmake -S . -B build/armhf --toolchain cmake/toolchain-arm-linux-gnueabihf.cmake -DFEDC_BUILD_COORDINATOR=OFF
# Programs run here under qemu-arm (ctest does it by itself).
set(FEDC_CROSS_TRIPLET arm-linux-gnueabihf)
set(FEDC_CROSS_PROCESSOR arm)
set(FEDC_CROSS_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-cross-common.cmake)
