"""The README's Python example runs as written."""

import re

from conftest import ROOT


def test_readme_python_example_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python\n", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'test': 'chi2_mahalanobis'" in printed
