"""Misuses through the real CLI: a non-zero exit, one readable line, no traceback (issue 19)."""

import pytest

from .conftest import DEMO, run_cli


def one_line(out) -> str:
    assert out.returncode != 0, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize("spec,expected", [
    ('{"name":"phash","hash_sz":16}', "extractor 'phash' has no setting 'hash_sz' (did you mean 'hash_size'?)"),
    ('{"name":"cnn","pca":"lots"}', "bad settings for extractor 'cnn' (pca='lots')"),
    ('{"name":"cnn",', "the extractor spec is not valid JSON"),
    ("phsh", "unknown extractor 'phsh' (did you mean 'phash'?)"),
    ('{"name":"fuse","parts":[{"extractor":{"name":"cnn","foo":1}}]}', "extractor 'cnn' has no setting 'foo'"),
    ('{"name":"cnn","threads":2}', "inference threads are a runtime option"),
])
def test_a_bad_extractor_spec_is_one_line(tmp_path, spec, expected):
    line = one_line(run_cli("index", DEMO, "--index", tmp_path / "idx", "-e", spec, check=False))
    assert expected in line
    assert not (tmp_path / "idx").exists()  # nothing left behind
