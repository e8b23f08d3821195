"""tiktoken's cl100k_base must load with no network and an empty cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Proxies that refuse every connection: any download attempt fails fast instead of reaching out.
_NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def _run(code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_NO_NETWORK, "TIKTOKEN_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_plain_tiktoken_cannot_load_offline_from_an_empty_cache(tmp_path: Path) -> None:
    result = _run("import tiktoken; tiktoken.get_encoding('cl100k_base')", tmp_path / "empty")
    assert result.returncode != 0


def test_our_loader_fills_an_empty_cache_and_encodes(tmp_path: Path) -> None:
    cache = tmp_path / "empty"
    code = (
        "from pathlib import Path; from index.tokens import encoding; import sys; "
        "enc = encoding(Path(sys.argv[-1])); print(enc.name, enc.encode('Karabakh peacekeepers'))"
    )
    env = {**os.environ, **_NO_NETWORK}
    result = subprocess.run(
        [sys.executable, "-c", code, str(cache)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    name, _, tokens = result.stdout.partition(" ")
    assert name == "cl100k_base"
    assert len(eval(tokens)) >= 3
    assert len(list(cache.iterdir())) == 1


def test_a_damaged_cached_file_is_replaced(tmp_path: Path) -> None:
    from index.tokens import install_offline_file

    target = install_offline_file(tmp_path)
    target.write_bytes(b"garbage")
    assert install_offline_file(tmp_path).stat().st_size > 1_000_000
