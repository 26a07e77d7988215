"""Build the wheel folder that the offline GPU machine needs for ``benchmarks/gpu_check.sh``.

The GPU machine (``python3`` 3.12, PyTorch 2.11 for CUDA 13) reaches no package registry, and its image
lacks some of what diffkit and the GPU check import. This downloads exactly those distributions, pinned
(:data:`PINS`), as wheels for CPython 3.12 on manylinux x86-64 into ``.wheels/gpu-cp312/`` (git-ignored),
removes any other wheel there, and checks that the set is closed: every requirement of diffkit and of
every wheel (for that Python on Linux, extras left out) is met by the folder or by the GPU image
(:data:`GPU_IMAGE`, with the versions known of it checked against the requirement).

    .venv/bin/python -m benchmarks.gpu_wheels                        # .wheels/gpu-cp312 (for the GPU)
    .venv/bin/python -m benchmarks.gpu_wheels --python-version 3.11  # the same pins for this Python

The second form serves ``tests/test_gpu_check.py``: it installs that folder, and nothing beside the
image's packages, and runs the GPU check's CPU dry run from it, so an import missing from the wheels
fails here rather than on the GPU machine.
"""

from __future__ import annotations

import argparse
import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip's own copy, present wherever pip is
    from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
# What the GPU machine lacks, at the versions diffkit is tested with: diffkit's own dependencies
# (torch-fidelity, clean-fid, imagehash), diffusers for the GPU check's twin, and their requirements the
# image does not have (imagehash needs PyWavelets; diffusers needs importlib-metadata, which needs
# lazy-importer).
PINS: dict[str, str] = {
    "clean-fid": "0.1.35",
    "diffusers": "0.42.1",
    "imagehash": "4.3.2",
    "importlib-metadata": "10.2.0",
    "lazy-importer": "0.1.0",
    "pywavelets": "1.9.0",
    "torch-fidelity": "0.4.0",
}
# The GPU machine's Python packages, as the device notes list them (read on that image 2026-11-17).
_GPU_IMAGE_NAMES = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
    build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
    cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
    einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
    gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
    iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
    kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
    markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
    multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
    numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
    nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
    nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
    nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
    opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
    portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
    pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
    sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
    tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
    tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
    transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
    wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"""
GPU_IMAGE = frozenset(_GPU_IMAGE_NAMES.split())
# Versions seen on that image (its pip list in the device notes); a requirement on one is checked.
GPU_VERSIONS: dict[str, str] = {
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "triton": "3.6.0",
}
# pip matches manylinux tags exactly: these cover the GPU image's glibc (manylinux_2_28 and older).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # canonical
    version: str
    requires: tuple[str, ...]
    requires_python: str | None


def folder_for(python_version: str) -> Path:
    return ROOT / ".wheels" / f"gpu-cp{python_version.replace('.', '')}"


def download(dest: Path, python_version: str) -> None:
    """The pinned wheels for ``python_version`` into ``dest`` (pip reuses files already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pins = [f"{name}=={version}" for name, version in sorted(PINS.items())]
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
        *platforms, "--dest", str(dest), *pins,
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    for path in dest.iterdir():  # two versions of one package stop the whole install there
        if path.suffix != ".whl" or read_wheel(path).name not in PINS:
            path.unlink() if path.is_file() else shutil.rmtree(path)
        elif read_wheel(path).version != PINS[read_wheel(path).name]:
            path.unlink()


def read_wheel(path: Path) -> Wheel:
    name, version, _, _ = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as archive:
        meta_name = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode())
    return Wheel(
        path, canonicalize_name(name), str(version), tuple(meta.get_all("Requires-Dist") or ()),
        meta.get("Requires-Python"),
    )  # fmt: skip


def marker_env(python_version: str) -> dict[str, str]:
    """Marker values of CPython ``python_version`` on Linux x86-64, with no extra asked for."""
    return {
        "python_version": python_version, "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
        "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
    }  # fmt: skip


def diffkit_requirements() -> list[str]:
    import tomllib  # Python 3.11+, which this script needs (the GPU machine has 3.12)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def tag_problem(wheel: Wheel, python_version: str) -> str | None:
    """Why ``wheel`` would not install on CPython ``python_version``, Linux x86-64 (None: it would)."""
    cp = f"cp{python_version.replace('.', '')}"
    _, _, _, tags = parse_wheel_filename(wheel.path.name)
    for tag in tags:
        interpreter_ok = tag.interpreter in (cp, "py3", f"py{python_version.replace('.', '')}")
        abi_ok = tag.abi in ("none", "abi3", cp)
        platform_ok = tag.platform == "any" or (tag.platform in PLATFORMS)
        if interpreter_ok and abi_ok and platform_ok:
            break
    else:
        return f"{wheel.path.name}: no tag for {cp} on manylinux x86-64"
    if (
        wheel.requires_python
        and Version(f"{python_version}.0") not in Requirement(f"x{wheel.requires_python}").specifier
    ):
        return f"{wheel.path.name}: needs Python {wheel.requires_python}"
    return None


def closure_problems(wheels: list[Wheel], python_version: str) -> list[str]:
    """Every requirement that neither the folder nor the GPU image meets; wrong tags; missing pins."""
    env = marker_env(python_version)
    have = {wheel.name: wheel.version for wheel in wheels}
    problems = [f"{name}=={version} is pinned but not in the folder" for name, version in PINS.items()
                if have.get(name) != version]  # fmt: skip
    problems += [p for wheel in wheels if (p := tag_problem(wheel, python_version))]
    wanted = [("diffkit", text) for text in diffkit_requirements()]
    wanted += [(wheel.name, text) for wheel in wheels for text in wheel.requires]
    for owner, text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not Marker(str(requirement.marker)).evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        version = have.get(name) or GPU_VERSIONS.get(name)
        if name not in have and name not in GPU_IMAGE:
            problems.append(f"{owner} needs {text}: neither in the wheels nor on the GPU image")
        elif version is not None and not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{owner} needs {text}, but {name} is {version}")
    return problems


def build(python_version: str, dest: Path | None = None) -> Path:
    """Download the pinned wheels for ``python_version`` and check the set; the folder."""
    dest = dest or folder_for(python_version)
    download(dest, python_version)
    problems = closure_problems([read_wheel(path) for path in sorted(dest.glob("*.whl"))], python_version)
    if problems:
        raise SystemExit("the wheel set is not complete:\n  " + "\n  ".join(problems))
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--python-version", default="3.12", help="CPython X.Y the wheels are for")
    parser.add_argument("--dest", type=Path, default=None, help="default: .wheels/gpu-cpXY")
    args = parser.parse_args(argv)
    dest = build(args.python_version, args.dest)
    names = sorted(path.name for path in dest.glob("*.whl"))
    size = sum(path.stat().st_size for path in dest.glob("*.whl")) / 2**20
    print(f"{dest}: {len(names)} wheels, {size:.1f} MiB, closed over diffkit's requirements")
    for name in names:
        print(f"  {name}")


if __name__ == "__main__":
    main()
