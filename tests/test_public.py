"""The package's public face: every name `alignment.__all__` lists resolves, `import alignment` loads none of
the pipeline until a name is used, and the example in its docstring runs."""
import doctest
import subprocess
import sys

import alignment


def test_every_public_name_resolves():
    for name in alignment.__all__:
        assert getattr(alignment, name) is not None, name
    assert alignment.Pipeline.__module__ == "alignment.run.pipeline" and alignment.study.plots.__name__ == "alignment.study.plots"
    assert "distill" in alignment.LOSSES


def test_unknown_names_say_what_there_is():
    try:
        alignment.Pipelin  # noqa: B018
    except AttributeError as e:
        assert "Pipeline" in str(e) and "public names" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_import_is_light():
    code = "import sys, alignment; print(sorted(m for m in sys.modules if m.startswith('alignment.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_docstring_example_runs():
    result = doctest.testmod(alignment, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
