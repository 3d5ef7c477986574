"""Unit tests for loading the device registry: the fast block-style reader, its libyaml
fallback, the bulk entry check, and errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sensord._cli import main
from sensord._errors import ConfigError
from sensord._registry import load_registry, parse_registry
from sensord._registry_text import read_registry_text
from sensord._types import Family

ROOT = Path(__file__).resolve().parents[2]

# Block style with the things people write: comments, flow mappings, quotes, YAML 1.1
# implicit types (yes, 0o-less octal, ~), nested blocks and a grids section after.
BLOCK = """\
# a comment before
devices:
  wb-0007:                # inline comment
    family: wristband
    community: maple-court
    grid: g3
    building: "3"
    unit: '3-402'
    floor: 4
    location: {lat: 31.2304, lon: 121.4737}
    contacts: {family: +86 138 0000 0000}
    params: {hr_high: 110}      # this resident's doctor set a lower limit

  bin-01:
    family: bin
    community: it's
    grid: g1
    floor: 012
    labels:
      zone: north
    params:
      night_mode: yes
    unit: ~
  'quoted-1': {family: fire, community: c, grid: g}
grids:
  g3:
    workers:
      - {name: 张伟, phone: "+86 138 0000 0001"}
"""


class TestReader:
    @pytest.mark.parametrize("text", [BLOCK, (ROOT / "config" / "devices.yaml").read_text()])
    def test_fast_reader_equals_safe_load(self, text: str) -> None:
        """The block-style reader returns exactly the document yaml.safe_load returns."""
        data, _ = read_registry_text(text)
        assert data == yaml.safe_load(text)

    @pytest.mark.parametrize(
        "text",
        [
            "devices:\n  a: &x {family: bin, community: c, grid: g}\n  b: *x\n",
            "devices:\n  a:\n    family: bin\n    community: |\n      c\n    grid: g\n",
            "devices:\n  a:\n    - family\n",
            'devices:\n  a: {family: bin, community: "c\\u0041", grid: g}\n',
            "devices: {a: {family: bin, community: c, grid: g}}\n",
            "devices:\n\ta: 1\n",
            "devices:\n",
            "devices:\n  a:\n    family: bin\n      community: c\n",
        ],
    )
    def test_other_yaml_goes_to_libyaml(self, text: str) -> None:
        """Anchors, block scalars, sequences, escapes, flow style, tabs, an empty block:
        the same document as yaml.safe_load (or the same YAML error)."""
        try:
            expected = yaml.safe_load(text)
        except yaml.YAMLError:
            with pytest.raises(yaml.YAMLError):
                read_registry_text(text)
            return
        assert read_registry_text(text)[0] == expected

    def test_lines_of_devices(self) -> None:
        """Each device id maps to its 1-based line, on both paths."""
        _, lines = read_registry_text(BLOCK)
        assert lines == {"wb-0007": 3, "bin-01": 14, "quoted-1": 24}
        _, lines = read_registry_text("devices:\n  a: &x {family: bin}\n  b: *x\n")
        assert lines == {"a": 2, "b": 3}


class TestEntries:
    def test_values_as_pydantic_made_them(self) -> None:
        """Ints in params and location become floats; absent mappings are empty."""
        reg = parse_registry(yaml.safe_load(BLOCK), source="t")
        wb = reg.get("wb-0007")
        assert wb is not None
        assert wb.entry.params == {"hr_high": 110.0}
        assert isinstance(wb.entry.params["hr_high"], float)
        assert wb.place() == {"building": "3", "unit": "3-402", "floor": 4, "lat": 31.2304, "lon": 121.4737}
        bin01 = reg.get("bin-01")
        assert bin01 is not None
        assert bin01.entry.floor == 10  # YAML 1.1: a leading 0 is octal
        assert bin01.entry.labels == {"zone": "north"}
        assert bin01.entry.params == {"night_mode": 1.0}  # a YAML bool, coerced by the model
        assert dict(bin01.entry.contacts) == {}

    def test_coercible_entry_goes_through_the_model(self) -> None:
        """A floor written as text ("4") is coerced as the pydantic model does."""
        reg = parse_registry(
            {"devices": {"a": {"family": "lift", "community": "c", "grid": "g", "floor": "4"}}}, source="t"
        )
        device = reg.get("a")
        assert device is not None
        assert device.entry.floor == 4
        assert device.family is Family.LIFT

    def test_bad_entry_names_file_line_and_key(self, tmp_path: Path) -> None:
        """An unknown family names the file, the device's line and the dotted key."""
        path = tmp_path / "devices.yaml"
        path.write_text("devices:\n  ok-1: {family: bin, community: c, grid: g}\n  x-1:\n    family: oven\n")
        with pytest.raises(ConfigError, match=rf"^{path}:3:devices\.x-1\.family: Input should be"):
            load_registry(path)

    def test_bad_entry_on_libyaml_path_names_line(self, tmp_path: Path) -> None:
        """The fallback path gives the same file:line for a bad entry."""
        path = tmp_path / "devices.yaml"
        path.write_text("devices:\n  a: &x {family: bin, community: c, grid: g}\n  x-1: {grid: g}\n")
        with pytest.raises(ConfigError, match=rf"^{path}:3:devices\.x-1\.family: Field required"):
            load_registry(path)

    def test_bad_id_names_line(self, tmp_path: Path) -> None:
        """A device id YAML reads as a number is refused with its line."""
        path = tmp_path / "devices.yaml"
        path.write_text("devices:\n  1234:\n    family: bin\n    community: c\n    grid: g\n")
        with pytest.raises(ConfigError, match=rf"^{path}:2:1234: device ids must be"):
            load_registry(path)


def test_check_reports_registry_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sensord check` prints the registry problem with file:line and exits 1."""
    (tmp_path / "devices.yaml").write_text("devices:\n  x-1: {family: toaster, community: c, grid: g}\n")
    cfg = tmp_path / "sensord.yaml"
    cfg.write_text(f"registry: devices.yaml\nrules_dir: {ROOT / 'rules'}\nstate_dir: {tmp_path / 's'}\n")
    assert main(["check", "-c", str(cfg)]) == 1
    assert "devices.yaml:2:devices.x-1.family" in capsys.readouterr().err
