"""config: profiles, paths read when asked for, and an import that does not start TensorFlow."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import config


def test_short_path_never_prints_a_machine_path_inside_the_repository_or_the_work_dir(tmp_path, monkeypatch):
    """Notebook outputs name folders relative to the repository or as $CXR_WORK_DIR/..., not /home/... paths."""
    assert config.short_path(config.ROOT / "data" / "runs") == "data/runs"
    monkeypatch.setenv("CXR_WORK_DIR", str(tmp_path))
    assert config.short_path(tmp_path / "runs" / "quick") == "$CXR_WORK_DIR/runs/quick"
    elsewhere = tmp_path.parent / "elsewhere"
    assert config.short_path(elsewhere) == str(elsewhere)


def test_the_work_folder_is_read_when_asked_for_not_when_imported(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_WORK_DIR", str(tmp_path / "one"))
    assert config.PROFILES["quick"].runs_dir == tmp_path / "one" / "runs" / "quick"
    monkeypatch.setenv("CXR_WORK_DIR", str(tmp_path / "two"))
    assert config.data_dir() == tmp_path / "two"
    assert config.PROFILES["cpu"].splits_dir == tmp_path / "two" / "splits"
    monkeypatch.delenv("CXR_WORK_DIR")
    assert config.data_dir() == config.ROOT / "data"


def test_installed_helpers_work_in_the_current_folder_not_in_site_packages(tmp_path, monkeypatch):
    monkeypatch.delenv("CXR_WORK_DIR")
    monkeypatch.setattr(config, "ROOT", tmp_path / "site-packages")  # no pyproject.toml beside the package
    monkeypatch.chdir(tmp_path)
    assert config.data_dir() == tmp_path / "data"


def test_an_unknown_profile_names_itself_and_the_choices(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast'.*quick, cpu, full"):
        config.current()
    monkeypatch.setenv("CXR_PROFILE", " Quick ")
    assert config.current(set_seed=False).name == "quick"


def test_on_a_gpu_the_fast_precision_is_float16_and_the_header_names_the_gpu(monkeypatch):
    monkeypatch.setattr(config, "gpu_name", lambda: "NVIDIA H200")
    monkeypatch.setattr(config, "bfloat16_supported", lambda: True)
    assert config.resolve_precision(config.FAST_PRECISION) == "mixed_float16"
    assert "| device: GPU (NVIDIA H200) |" in config.PROFILES["full"].summary()
    monkeypatch.setattr(config, "gpu_name", lambda: None)
    assert "| device: CPU (" in config.PROFILES["cpu"].summary()


def test_the_fast_precision_is_float16_on_a_gpu_and_float32_on_any_cpu_by_default(monkeypatch):
    monkeypatch.delenv("CXR_PRECISION", raising=False)
    monkeypatch.setattr(config, "gpu_name", lambda: "NVIDIA H200")
    assert config.resolve_precision(config.FAST_PRECISION) == "mixed_float16"
    monkeypatch.setattr(config, "gpu_name", lambda: None)
    monkeypatch.setattr(config, "bfloat16_supported", lambda: True)
    assert config.resolve_precision(config.FAST_PRECISION) == "float32"  # even where bfloat16 is native
    assert config.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"  # asked for by name: kept


def test_importing_helpers_reads_no_cpu_flags_and_imports_no_tensorflow(tmp_path):
    """``import helpers`` (and so ``python -m helpers.evaluate --help``) must stay quick; importing config still
    works and imports Keras quietly, with no TensorFlow start-up lines on stderr."""
    script = ("import builtins, io, pathlib, sys\n"
              "real_open, real_read = io.open, pathlib.Path.read_text\n"
              "def check(file):\n"
              "    assert 'cpuinfo' not in str(file), 'read at import: ' + str(file)\n"
              "builtins.open = io.open = lambda file, *a, **k: check(file) or real_open(file, *a, **k)\n"
              "pathlib.Path.read_text = lambda self, *a, **k: check(self) or real_read(self, *a, **k)\n"
              "import helpers\n"
              "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
              "from helpers import config, training\n"
              "builtins.open = io.open = real_open\n"
              "pathlib.Path.read_text = real_read\n"
              "print('keras', 'keras' in sys.modules)\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(config.ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "keras True"
    assert result.stderr == "", result.stderr[-2000:]
