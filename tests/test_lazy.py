"""The lazy names of ``ncmse`` and ``ncmse.ufm`` (:mod:`ncmse.lazy`)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from ncmse.lazy import lazy_names


def test_a_name_is_imported_on_first_use_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("fakepkg")
    monkeypatch.setitem(sys.modules, "fakepkg", package)
    getattr_, dir_ = lazy_names("fakepkg", {"sqrt": "math", "dumps": "json"})
    package.__getattr__ = getattr_
    assert "sqrt" in dir_() and "dumps" in dir_() and "sqrt" not in vars(package)
    assert package.sqrt(9.0) == 3.0
    assert "sqrt" in vars(package) and "dumps" not in vars(package)  # kept once used
    with pytest.raises(AttributeError, match="module 'fakepkg' has no attribute 'nothere'"):
        package.nothere  # noqa: B018


def test_ncmse_and_ufm_serve_their_names_without_torch() -> None:
    code = (
        "import sys, ncmse, ncmse.ufm\n"
        "assert 'torch' not in sys.modules\n"
        "assert set(ncmse.__all__) - {'__version__'} <= set(dir(ncmse))\n"
        "assert set(ncmse.ufm.__all__) <= set(dir(ncmse.ufm))\n"
        "try:\n    ncmse.nothere\nexcept AttributeError as e:\n    print(e)\n"
        "try:\n    ncmse.ufm.nothere\nexcept AttributeError as e:\n    print(e)\n"
        "assert ncmse.lambda_for is ncmse.collapse.lstsq.lambda_for\n"
        "assert ncmse.ufm.UFMConfig is ncmse.ufm.config.UFMConfig\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "module 'ncmse' has no attribute 'nothere'",
        "module 'ncmse.ufm' has no attribute 'nothere'",
    ]
