"""Implementation selection: forced choices, the single fallback warning, cache keys, installed builds."""
from __future__ import annotations

import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from models.ops import backend, build_config, info
from models.ops.functions import ms_deform_attn, ms_deform_attn_core_pytorch
from tests.ops.msda_cases import make_op_inputs


def _fail_build(with_cuda: bool) -> types.ModuleType:
    raise RuntimeError("simulated compiler failure")


@pytest.fixture
def no_compiled_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend no installed build exists and every compilation fails."""
    monkeypatch.setattr(backend, "_loaded", {})
    monkeypatch.setattr(backend, "_import_prebuilt", lambda with_cuda: None)
    monkeypatch.setattr(backend, "_jit_build", _fail_build)


def _run_op_three_times() -> list[warnings.WarningMessage]:
    inputs = make_op_inputs(2, 2, 4, 3, [(3, 2), (1, 2)], 2)
    expected = ms_deform_attn_core_pytorch(inputs.value, inputs.spatial_shapes, inputs.sampling_locations,
                                           inputs.attention_weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            torch.testing.assert_close(ms_deform_attn(*inputs), expected, rtol=0, atol=0)
    return [w for w in caught if issubclass(w.category, backend.MSDAFallbackWarning)]


def test_compile_failure_falls_back_with_exactly_one_warning(use_impl, no_compiled_op) -> None:
    use_impl("auto")
    fallback = _run_op_three_times()
    assert len(fallback) == 1
    assert "simulated compiler failure" in str(fallback[0].message)
    assert backend.implementation_for(torch.device("cpu")) == "pytorch"


def test_forced_pytorch_neither_builds_nor_warns(use_impl, no_compiled_op) -> None:
    use_impl("pytorch")
    assert _run_op_three_times() == []
    assert backend.get_backend().origin == "none"


def test_forced_compiled_impl_raises_instead_of_falling_back(use_impl, no_compiled_op) -> None:
    use_impl("cpu")
    with pytest.raises(RuntimeError, match="MSDA_IMPL=cpu.*simulated compiler failure"):
        backend.get_backend()


def test_forced_cpu_refuses_cuda_tensors(use_impl) -> None:
    use_impl("cpu")
    with pytest.raises(RuntimeError, match="MSDA_IMPL=cpu"):
        backend.implementation_for(torch.device("cuda"))


def test_invalid_impl_is_rejected(use_impl) -> None:
    use_impl("fast")
    with pytest.raises(ValueError, match="MSDA_IMPL='fast'.*auto, cpu, cuda, pytorch"):
        backend.get_backend()


def test_build_key_changes_when_a_source_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "cpu").mkdir(parents=True)
    (src / "cpu" / "kernel.cpp").write_text("int f() { return 1; }\n")
    monkeypatch.setattr(build_config, "SRC_DIR", src)
    before = build_config.jit_module_name(False)
    (src / "cpu" / "kernel.cpp").write_text("int f() { return 2; }\n")
    after = build_config.jit_module_name(False)
    assert before != after and before.startswith("msda_cpu_") and after.startswith("msda_cpu_")
    assert build_config.source_files(False) == [src / "cpu" / "kernel.cpp"]


def test_installed_build_is_used_only_when_built_from_these_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType(build_config.PREBUILT_MODULE_NAME)
    monkeypatch.setitem(sys.modules, build_config.PREBUILT_MODULE_NAME, fake)
    assert backend._import_prebuilt(False) is None  # the original D-DETR module: no build_info
    fake.build_info = lambda: {"sources_hash": "stale", "with_cuda": True}
    assert backend._import_prebuilt(False) is None
    fake.build_info = lambda: {"sources_hash": build_config.sources_hash(), "with_cuda": False}
    assert backend._import_prebuilt(False) is fake
    assert backend._import_prebuilt(True) is None


def test_gencode_flags_follow_the_arch_list() -> None:
    assert build_config.gencode_flags("7.5;9.0+PTX") == [
        "-gencode=arch=compute_75,code=sm_75",
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90",
    ]


def test_info_reports_the_active_implementation(use_impl, capsys: pytest.CaptureFixture[str]) -> None:
    use_impl("pytorch")
    info.main([])
    report = capsys.readouterr().out
    assert "MSDA_IMPL" in report and ": pytorch" in report
    assert "CPU tensors" in report and "forces the pure-PyTorch path" in report


def test_compiled_cpu_build_reports_itself(use_impl) -> None:
    use_impl("cpu")
    extension = backend.compiled_extension()
    build = extension.build_info()
    assert build["sources_hash"] == build_config.sources_hash()
    assert build["openmp"] == build_config.cxx_flags().count("-fopenmp") > 0


def test_import_builds_nothing() -> None:
    """Importing the public API must not compile, load the extension or import the build machinery."""
    code = ("import sys; import models.ops.modules, models.ops.functions; from models.ops import backend; "
            "assert backend.peek_backend() is None; assert 'torch.utils.cpp_extension' not in sys.modules")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
