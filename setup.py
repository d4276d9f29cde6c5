"""Installs `coars_fast` and, when the folder exists, `kernels/` as `coars_fast.kernels`.

The optional C++ CPU extension (`csrc/`) is compiled against the torch that is already installed,
so install with `pip install --no-build-isolation .` after torch (scripts/setup.sh does it in order).
Set COARS_FAST_NO_EXT=1 to skip the extension; the kernels then use their pure-torch path.
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

packages = find_packages(include=["coars_fast", "coars_fast.*"])
package_dir = {"coars_fast": "coars_fast"}
if os.path.isdir(os.path.join(ROOT, "kernels")):
    kernel_packages = find_packages(where=ROOT, include=["kernels", "kernels.*"])
    packages += ["coars_fast." + name for name in kernel_packages]
    package_dir.update({"coars_fast." + name: name.replace(".", "/") for name in kernel_packages})


def cpu_extension():
    """The csrc/ ops as a torch extension, or ([], {}) when there is nothing to build.

    The library registers torch.ops.coars_fast.* and has no Python module of its own: the kernels
    load it with torch.ops.load_library. csrc/tests/ is built by CMakeLists.txt (ctest) only.
    """
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources or os.environ.get("COARS_FAST_NO_EXT") == "1":
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        sys.exit(
            "coars-fast: torch must be installed before building the C++ extension.\n"
            "  pip install torch==2.13.0 && pip install --no-build-isolation .\n"
            "(or set COARS_FAST_NO_EXT=1 to install without it)"
        )
    extension = CppExtension(
        "coars_fast.kernels._C",
        sources,
        # ATen's Vectorized<float> picks its AVX2 implementation from the CPU_CAPABILITY macros
        # (same flags as CMakeLists.txt).
        extra_compile_args=[
            "-O3",
            "-fopenmp",
            "-mavx2",
            "-mfma",
            "-mf16c",
            "-DCPU_CAPABILITY=AVX2",
            "-DCPU_CAPABILITY_AVX2",
        ],
        extra_link_args=["-fopenmp"],
    )
    return [extension], {"build_ext": BuildExtension}


ext_modules, cmdclass = cpu_extension()

setup(
    name="coars-fast",
    version="0.1.0",
    description="Fast CoARS trainer: co-evolving Recommender and User LLM agents with fused kernels",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"coars_fast": ["configs/*.yaml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        # torch itself is installed first by scripts/setup.sh (torch==2.13.0): asking for it here
        # unpinned would let pip resolve a multi-GB CUDA build on a CPU machine.
        "torch>=2.6",  # torch.nn.utils.get_total_norm / clip_grads_with_norm_, torch.distributed.tensor
        "numpy>=1.24",
        # >= 5.24: forward(cache=...) naming; < 5.25: 5.25 imports the Hugging Face `kernels`
        # package at import time, which a checkout's own kernels/ folder hides whenever the
        # repository root is on sys.path (`python -m pytest` there), see kernels/__init__.py
        "transformers>=5.24,<5.25",
        "peft>=0.21,<0.22",
        "gguf==0.19.0",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "tensorboard>=2.15",
        "matplotlib>=3.8",  # coars-fast report
    ],
    extras_require={
        # coars_fast.integrations.trl: the version its tests pin (TRL's fused head is internal API)
        "trl": ["trl==1.16.0"],
        # `coars-fast data download --dataset lastfm`: the published LastFM splits are pandas pickles
        "download": ["pandas>=2"],
        "dev": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "hypothesis>=6",
            "liger-kernel==0.8.5",
            "cut-cross-entropy==25.1.1",
            "ruff==0.17.6",  # pinned: the format check must not change with a release
            "trl==1.16.0",  # tests/test_integration_trl.py, bench/test_bench_trl.py
            "pandas>=2",  # tests/test_download.py (TRL brings it too)
        ],
        "gpu": ["flash-attn>=2.6"],
    },
    entry_points={"console_scripts": ["coars-fast=coars_fast.cli:main"]},
)
