"""What the machine offers the process: the CPUs it may run on, and how to describe it."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import warnings

#: Environment variables that change OpenBLAS's kernels (and slow numpy's BLAS
#: where they are set): every benchmark figure says whether they were.
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask on Linux, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def compiled_kernels_wanted() -> bool:
    """Whether to run the Numba-compiled kernels (the ``fast`` extra).

    True when Numba is installed, unless ``GMMSEG_KERNELS=numpy`` asks for
    the NumPy implementations (same results; a way to rule the compiled code
    out).  Read when gmmseg is imported.  Numba itself is imported only
    where a kernel is first used (`import_compiled`): its import takes about
    a quarter of a second.
    """
    choice = os.environ.get("GMMSEG_KERNELS", "").strip().lower()
    if choice not in ("", "compiled", "numpy"):
        warnings.warn(f"GMMSEG_KERNELS={choice!r} is not 'compiled' or 'numpy'; "
                      "using the compiled kernels where Numba is installed", RuntimeWarning,
                      stacklevel=2)
    return choice != "numpy" and importlib.util.find_spec("numba") is not None


def import_compiled(package: str, name: str):
    """Module ``package.name`` of compiled kernels, or None if Numba fails to load.

    An installed Numba can still refuse to import (one built for another
    NumPy, say): gmmseg then says so once and runs its NumPy kernels.
    """
    try:
        return importlib.import_module(f"{package}.{name}")
    except ImportError as err:
        warnings.warn(f"gmmseg's compiled kernels are unavailable ({err}); using the NumPy "
                      "kernels (same results, slower)", RuntimeWarning, stacklevel=2)
        return None


@functools.cache
def _thread_pools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas():
    """A context manager that pins BLAS to one thread (and restores it on exit).

    threadpoolctl's ``threadpool_limits`` looks up the loaded libraries on
    every call (about 1 ms: it reads the process's memory map), which the EM
    start-up trials paid once each; the libraries are looked up once here.
    BLAS libraries are loaded with NumPy, before the first call.
    """
    return _thread_pools().limit(limits=1, user_api="blas")


def machine_description() -> dict:
    """The CPU model, its cores, the BLAS libraries, gmmseg's kernels and the OpenBLAS variables.

    What the benchmark scripts print beside their figures, so that a figure
    can be reproduced on a machine of the same kind.
    """
    from threadpoolctl import threadpool_info

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    if compiled_kernels_wanted():
        from importlib.metadata import version

        kernels = f"compiled (Numba {version('numba')})"
    else:
        kernels = "NumPy (" + ("GMMSEG_KERNELS=numpy" if importlib.util.find_spec("numba")
                               else "Numba not installed") + ")"
    return {"cpu": model, "cores": os.cpu_count(), "available_cpus": available_cpus(),
            "blas": blas, "kernels": kernels,
            "env": {k: os.environ.get(k, "not set") for k in OPENBLAS_VARIABLES}}


def machine_lines() -> list[str]:
    """:func:`machine_description` as the lines a script prints."""
    m = machine_description()
    return [f"CPU: {m['cpu']}; cores: {m['cores']} ({m['available_cpus']} available)",
            f"BLAS: {'; '.join(m['blas']) or 'none found'}",
            f"gmmseg kernels: {m['kernels']}",
            "env: " + ", ".join(f"{k} {v}" for k, v in m["env"].items())]
