"""The README stays true: every setting is documented, and the two commands exist where it says."""

import re
from pathlib import Path

from workers.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented():
    documented = set(re.findall(r"`MEDVOICE_([A-Z0-9_]+)`", README))
    missing = [f"MEDVOICE_{name.upper()}" for name in Settings.model_fields if name.upper() not in documented]
    assert not missing, f"add these to the README's settings table: {missing}"


def test_the_two_commands_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in README and "make test" in README
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
