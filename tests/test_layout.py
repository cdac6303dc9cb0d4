"""The package layout: `tokenizers/` must never shadow Hugging Face's `tokenizers` (DESIGN.md "Layout")."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_import_from_repo_root_keeps_hf_tokenizers():
    code = (
        "import tokenizers, unimask.tokenizers.text, transformers;"
        "print(tokenizers.__file__);"
        "print(unimask.tokenizers.text.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hf_path, module = out.stdout.strip().splitlines()
    assert "site-packages" in hf_path and not hf_path.startswith(str(REPO_ROOT / "tokenizers")), hf_path
    assert module == "unimask.tokenizers.text"


def test_tokenizers_folder_has_no_init():
    assert not (REPO_ROOT / "tokenizers" / "__init__.py").exists()


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "unimask.cli", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "usage: unimask" in out.stdout
