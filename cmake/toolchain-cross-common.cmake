# toolchain-cross-common.cmake - the part the device toolchain files share
# (docs/operations.md, "Builds for device CPUs"). The including file sets
# FEDC_CROSS_TRIPLET (e.g. aarch64-linux-gnu), FEDC_CROSS_PROCESSOR and
# FEDC_CROSS_QEMU before including this file.
#
# What was learned the hard way:
#  - pkg-config must be the cross one, reading only the target's .pc files,
#    or the host's abseil/OpenBLAS flags end up in the link;
#  - protoc-c is a host program (CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER);
#  - the emulator is qemu-<arch> WITHOUT -L: the target's libraries come from
#    the multiarch directories the host's /lib already holds, and with
#    -L /usr/<triplet> programs hang at their first pthread_create (the cross
#    package's ld.so does not match the multiarch libc);
#  - binfmt_misc may be absent, so ctest and the integration tests call the
#    emulator explicitly (CMAKE_CROSSCOMPILING_EMULATOR, FEDC_EMULATOR).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${FEDC_CROSS_PROCESSOR})
set(CMAKE_C_COMPILER ${FEDC_CROSS_TRIPLET}-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/${FEDC_CROSS_TRIPLET} /usr/lib/${FEDC_CROSS_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_LIBRARY_ARCHITECTURE ${FEDC_CROSS_TRIPLET})

set(PKG_CONFIG_EXECUTABLE ${FEDC_CROSS_TRIPLET}-pkg-config CACHE FILEPATH "cross pkg-config")
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${FEDC_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

find_program(FEDC_CROSS_QEMU_PATH ${FEDC_CROSS_QEMU})
if(FEDC_CROSS_QEMU_PATH)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${FEDC_CROSS_QEMU_PATH})
endif()
