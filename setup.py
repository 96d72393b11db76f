"""Builds the compiled engine (sfu._fastpath._engine) from Cython and C.

Options through the environment:
  SFU_DEBUG=1       -O0 -g, assertions on
  SFU_SANITIZE=1    AddressSanitizer + UndefinedBehaviorSanitizer (tests)
  SFU_ANNOTATE=1    write Cython's HTML annotation next to the .pyx
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

SRC = "sfu/_fastpath/src"
# every C unit of the engine (src/*.c; engine.h lists them by concern)
ENGINE_C = sorted(glob.glob(f"{SRC}/*.c"))
sources = ["sfu/_fastpath/_engine.pyx"] + ENGINE_C

extra_compile_args = ["-std=gnu11", "-Wall", "-Wno-unused-function", "-fvisibility=hidden", "-flto=auto"]
# -flto: the per-packet path crosses units (transport -> rtp_listener ->
# producer_stream -> consumer); link-time optimisation inlines across them
extra_link_args = ["-flto=auto"]
if os.environ.get("SFU_DEBUG"):
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]
else:
    extra_compile_args += ["-O2", "-DNDEBUG"]
if os.environ.get("SFU_SANITIZE"):
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_compile_args += flags
    extra_link_args += flags

extensions = [
    Extension(
        "sfu._fastpath._engine",
        sources=sources,
        include_dirs=["sfu/_fastpath"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args + ["-lpthread", "-lcrypto"],
    ),
    # The same engine with its test and benchmark hooks (tests and benchmarks only).
    Extension(
        "sfu._fastpath._testhooks",
        sources=["sfu/_fastpath/_testhooks.pyx"] + ENGINE_C,
        include_dirs=["sfu/_fastpath"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args + ["-lpthread", "-lcrypto"],
    ),
    # Test hooks of the RTCP XR (RRTR/DLRR) unit and the RTT estimator (tests only).
    Extension(
        "sfu._fastpath._rtt_hooks",
        sources=["sfu/_fastpath/_rtt_hooks.pyx", f"{SRC}/rtcp_xr.c", f"{SRC}/rtt.c", f"{SRC}/rtcp.c"],
        include_dirs=["sfu/_fastpath"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    ),
    # Test hooks of the VP8 / VP9 payload descriptor units (tests only).
    Extension(
        "sfu._fastpath._codec_hooks",
        sources=["sfu/_fastpath/_codec_hooks.pyx", f"{SRC}/vp8.c", f"{SRC}/vp9.c"],
        include_dirs=["sfu/_fastpath"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    ),
    # The SRTP unit (src/srtp.c) alone with its test and benchmark hooks.
    Extension(
        "sfu._fastpath._srtp_hooks",
        sources=["sfu/_fastpath/_srtp_hooks.pyx", f"{SRC}/srtp.c"],
        include_dirs=["sfu/_fastpath"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args + ["-lcrypto"],
    ),
    # The send history (src/twcc_send.c) and the GCC estimator (src/gcc.c), with the
    # transport-cc receiver of src/twcc.c to build real feedback (tests only).
    Extension(
        "sfu._fastpath._gcc_hooks",
        sources=["sfu/_fastpath/_gcc_hooks.pyx", f"{SRC}/twcc_send.c", f"{SRC}/gcc.c", f"{SRC}/twcc.c"],
        include_dirs=["sfu/_fastpath"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    ),
    # The benchmarks' plain-RTP load generator (C core in benchmarks/src/_loadgen.c).
    Extension(
        "benchmarks._loadgen",
        sources=["benchmarks/_loadgen.pyx", "benchmarks/src/_loadgen.c"],
        include_dirs=["benchmarks/src"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=bool(os.environ.get("SFU_ANNOTATE")),
        compiler_directives={"embedsignature": True},
    ),
)
