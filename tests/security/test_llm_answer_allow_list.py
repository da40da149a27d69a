"""LLM answers are checked against an allow-list: only the numpy/numba/math vocabulary a port
needs, no attribute chains beyond it, no dunders, no other imports or builtins. What the
deterministic CPU backend generates passes the same check (the allow-list is not narrower than a
port). The CUDA backend's host driver does not: its eager-compile helper walks ``globals()`` and
``py_func``, which an answer may not; a GPU answer launches its kernels directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels.engine import llm
from kernels.engine.analysis import analyse
from kernels.engine.backends.cpu import generate_cpu
from kernels.engine.pipeline import find_kernels

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (
            "import numpy as np\ndef k():\n    np.ctypeslib.ctypes.CDLL(None).system(b'id')\n",
            "np.ctypeslib",
        ),
        ("import numpy as np\ndef k():\n    np.f2py.os.system('id')\n", "np.f2py"),
        ("import numpy\ndef k():\n    numpy.lib.format.os.system('id')\n", "numpy.lib"),
        ("import numba\ndef k():\n    numba.core.serialize._numba_unpickle\n", "numba.core"),
        ("from numba import cuda\ndef k():\n    cuda.cudadrv.driver\n", "cuda.cudadrv"),
        ("import math\ndef k():\n    return math.sqrt.__self__\n", "__self__"),
        ("def k():\n    return ().__class__.__bases__[0].__subclasses__()\n", "__class__"),
        ("def k():\n    return '{0.__globals__}'.format(k)\n", "format"),
        ("def k(a):\n    return a.ctypes.data\n", ".ctypes"),
        ("def k():\n    return open('/etc/passwd').read()\n", "open"),
        ("def k():\n    return getattr(k, 'x')\n", "getattr"),
        ("def k():\n    return globals()\n", "globals"),
        ("def k():\n    return type(k)\n", "type"),
        ("def k():\n    eval('1')\n", "eval"),
        ("import os\ndef k():\n    os.system('id')\n", "import of `os`"),
        ("import numpy.ctypeslib as c\ndef k():\n    pass\n", "numpy.ctypeslib"),
        ("from numpy import ctypeslib\ndef k():\n    pass\n", "ctypeslib"),
        ("from numpy import *\ndef k():\n    pass\n", "import *"),
        ("import numpy as np\ndef k():\n    return np.load('/etc/passwd')\n", "np.load"),
        ("def k():\n    with x:\n        pass\n", "With"),
        ("class K(object):\n    def m(self): pass\ndef k():\n    pass\n", "class"),
        ("def k():\n    __builtins__['eval']('1')\n", "__builtins__"),
    ],
)
def test_answer_outside_the_allow_list_is_refused(code: str, why: str) -> None:
    with pytest.raises(llm.AnswerRejected) as info:
        llm.check_module(code, "k")
    assert why in str(info.value)


def test_a_typical_numba_answer_is_accepted() -> None:
    code = (
        "import math\nimport numpy as np\nfrom numba import njit, prange, cuda\n\n"
        "@njit(parallel=True, cache=False)\n"
        "def k(n, a, b):\n"
        "    t = np.zeros(a.shape[0], dtype=np.float64)\n"
        "    for i in prange(n):\n"
        "        t[i] = math.sqrt(abs(a[i])) + np.float64(b[i].real)\n"
        "    return t.sum()\n\n"
        "@cuda.jit\n"
        "def g(a):\n"
        "    i = cuda.threadIdx.x + cuda.blockIdx.x * cuda.blockDim.x\n"
        "    s = cuda.shared.array(32, dtype=np.float64)\n"
        "    cuda.atomic.add(a, 0, s[i % 32])\n"
    )
    llm.check_module(code, "k")


def _generated_ports() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(FIXTURES.glob("*.f90"))[:16]:
        try:
            kernels = find_kernels(path.read_text(), filename=path.name)
        except Exception:  # noqa: BLE001 - forbidden and broken fixtures have no ports
            continue
        for k in kernels:
            if k.unsupported:
                continue
            try:
                g = generate_cpu(k, analyse(k))
            except Exception:  # noqa: BLE001 - a codegen gap is not this test's subject
                continue
            out.append((f"{path.name}:{k.name}", g.code, g.entry))
    return out


def test_what_the_cpu_backend_generates_passes_the_allow_list() -> None:
    ports = _generated_ports()
    assert len(ports) >= 10
    for name, code, entry in ports:
        try:
            llm.check_module(code, entry)
        except llm.AnswerRejected as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{name}: {exc}")
