"""The image builder's pure parts: what its cached bases are keyed by, which wheels it still needs,
and the tags the chart and the operator expect."""

from __future__ import annotations

import pytest
import yaml

from labtune import __version__
from labtune.operator.settings import OperatorSettings
from labtune_dev.image_requirements import ROOT
from labtune_dev.images import (
    IMAGE_NAMES,
    LOCKS,
    ImageError,
    debian_base_key,
    fetch_rounds,
    image_name,
    image_tag,
    missing_wheels,
    pins,
    torch_base_key,
    wanted_wheels,
    wheel_pin,
)

MIRROR = "http://deb.debian.org/debian"


def test_debian_base_key_is_its_inputs() -> None:
    key = debian_base_key("bookworm", ("python3", "git"), MIRROR)
    assert key == debian_base_key("bookworm", ("git", "python3"), MIRROR)
    assert key != debian_base_key("trixie", ("python3", "git"), MIRROR)
    assert key != debian_base_key("bookworm", ("python3",), MIRROR)
    assert key != debian_base_key("bookworm", ("python3", "git"), "http://mirror.example/debian")


def test_torch_base_key_is_its_parent_and_pins() -> None:
    key = torch_base_key("parent", "torch==2.9.1\nsympy==1.14.0\n")
    assert key == torch_base_key("parent", "# header\nsympy==1.14.0\n    # via torch\ntorch==2.9.1\n")
    assert key != torch_base_key("other parent", "torch==2.9.1\nsympy==1.14.0\n")
    assert key != torch_base_key("parent", "torch==2.9.0\nsympy==1.14.0\n")


def test_wheel_pin_reads_the_file_name() -> None:
    assert wheel_pin("typing_extensions-4.16.0-py3-none-any.whl") == ("typing-extensions", "4.16.0")
    assert wheel_pin("torch-2.9.1-cp311-cp311-manylinux_2_28_x86_64.whl") == ("torch", "2.9.1")


def test_missing_wheels_skips_what_is_there() -> None:
    wanted = {("torch", "2.9.1"), ("typing-extensions", "4.16.0"), ("pyyaml", "6.0.3")}
    present = [
        "torch-2.9.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        "PyYAML-6.0.2-cp311-cp311-linux_x86_64.whl",
    ]
    present += ["typing_extensions-4.16.0-py3-none-any.whl", ".partial", "requirements.txt"]
    assert missing_wheels(wanted, present) == {("pyyaml", "6.0.3")}


def test_every_version_an_image_pins_is_wanted() -> None:
    # A clean machine's wheelhouse had only one python-dateutil: the trainer's 2.9 replaced the
    # operator's 4.0 in a dict keyed by name, and the operator image could not be built.
    wanted = wanted_wheels()
    for lock in LOCKS:
        assert set(pins(lock.path.read_text()).items()) <= wanted, lock.path


def test_fetch_rounds_never_name_a_package_twice() -> None:
    wanted = {("python-dateutil", "4.0.0"), ("python-dateutil", "2.9.0.post0"), ("six", "1.17.0")}
    rounds = fetch_rounds(wanted)
    assert sorted((n, v) for r in rounds for n, v in r.items()) == sorted(wanted)
    assert len(rounds) == 2


def test_tags_are_what_the_operator_and_chart_default_to() -> None:
    settings = OperatorSettings()
    assert image_tag("generator") == settings.generator_image
    assert image_tag("trainer") == settings.trainer_image
    chart = yaml.safe_load((ROOT / "charts" / "labtune" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "labtune" / "values.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert image_tag("operator") == f"{values['image']['repository']}:{chart['appVersion']}"


def test_image_name_lists_the_images_when_unknown() -> None:
    assert [image_name(name) for name in IMAGE_NAMES] == ["operator", "generator", "trainer"]
    with pytest.raises(ImageError, match="choose among operator, generator, trainer"):
        image_name("vllm")
