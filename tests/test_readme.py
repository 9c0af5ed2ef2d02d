"""The README stays true to the code: every setting in its configuration table, every command it names."""

from __future__ import annotations

import re

from gis_ioc.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table():
    table = README[README.index("## Configuration"):README.index("## Deployment")]
    listed = set(re.findall(r"^\| `(GIS_IOC_[A-Z_]+)` \|", table, flags=re.M))
    assert {f"GIS_IOC_{name.upper()}" for name in Settings.model_fields} <= listed


def test_the_commands_the_guide_names_exist(run_cli):
    for command in ("serve", "render", "tiles export", "query stats", "keys create", "bench tiles", "db url"):
        code, out, err = run_cli(*command.split(), "--help")
        assert code == 0, (command, err)
        assert f"gis-ioc {command}" in README
