"""The `--env-file` parser: KEY=VALUE lines as python-dotenv reads them."""

from __future__ import annotations

import pytest

from jupyter_colab_remote.companion.env_file import parse_env_file
from jupyter_colab_remote.companion.errors import CompanionError


def test_values_comments_export_and_quotes(tmp_path):
    """Comments and blank lines skip, `export ` is allowed, one pair of quotes comes off."""
    path = tmp_path / ".env"
    path.write_text(
        "# credentials\n"
        "\n"
        "WANDB_API_KEY=abc123\n"
        "export HF_HOME=/data/hf\n"
        "  SPACED =  padded value  \n"
        'QUOTED="two words"\n'
        "SINGLE='x=y'\n"
        "EMPTY=\n"
        'HALF="open\n'
    )
    assert parse_env_file(str(path)) == {
        "WANDB_API_KEY": "abc123",
        "HF_HOME": "/data/hf",
        "SPACED": "padded value",
        "QUOTED": "two words",
        "SINGLE": "x=y",
        "EMPTY": "",
        "HALF": '"open',
    }


@pytest.mark.parametrize("line", ["NO_EQUALS", "1BAD=x", "BAD KEY=x", "=value"])
def test_bad_line_names_file_and_line(tmp_path, line):
    """A line that is not KEY=VALUE is an error naming the file and line number."""
    path = tmp_path / "bad.env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(CompanionError, match=r"bad\.env:2: expected KEY=VALUE"):
        parse_env_file(str(path))


def test_missing_file_is_one_line_error(tmp_path):
    """A missing file: a CompanionError naming it, with the system's reason."""
    with pytest.raises(CompanionError, match="cannot read env file .*: No such file"):
        parse_env_file(str(tmp_path / "missing.env"))
