"""The SageMaker instance table (``deployers/sagemaker/instances.json``): every accepted type, the
figures of the source it cites."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import moto
import pytest

from deployers.sagemaker import instances
from deployers.sagemaker.settings import INSTANCE_TYPES

MOTO_TYPES = Path(moto.__file__).parent / "ec2" / "resources" / "instance_types.json.gz"


def test_every_accepted_instance_type_has_a_row_and_nothing_else_does() -> None:
    assert sorted(instances.table().shapes) == sorted(INSTANCE_TYPES)


def test_the_table_says_when_and_where_its_figures_come_from() -> None:
    table = instances.table()
    assert table.as_of[:4].isdigit() and "instance_types.json.gz" in table.source


def test_field_notes_figures_c5_m5_g4dn() -> None:
    got = {t: (s.vcpus, s.cores, s.threads_per_core, s.memory_gib, s.gpus)
           for t, s in instances.table().shapes.items()}
    assert got["ml.c5.large"] == (2, 1, 2, 4, 0)
    assert got["ml.c5.xlarge"] == (4, 2, 2, 8, 0)
    assert got["ml.c5.2xlarge"] == (8, 4, 2, 16, 0)
    assert [got[f"ml.m5.{size}"][3] for size in ("large", "xlarge")] == [8, 16]
    assert got["ml.g4dn.xlarge"] == (4, 2, 2, 16, 1)
    assert got["ml.g4dn.2xlarge"] == (8, 4, 2, 32, 1)
    assert instances.instance_shape("ml.g4dn.xlarge").gpu_model == "NVIDIA T4"


@pytest.mark.skipif(not MOTO_TYPES.is_file(), reason=f"{MOTO_TYPES} is not installed")
def test_every_row_matches_the_describe_instance_types_data_it_cites() -> None:
    ec2 = json.loads(gzip.decompress(MOTO_TYPES.read_bytes()))
    for name, shape in instances.table().shapes.items():
        row = ec2[name.removeprefix("ml.")]
        cpu = row["VCpuInfo"]
        gpus = sum(g["Count"] for g in row.get("GpuInfo", {}).get("Gpus", []))
        assert (shape.vcpus, shape.cores, shape.threads_per_core, shape.memory_mb, shape.gpus) == (
            cpu["DefaultVCpus"], cpu["DefaultCores"], cpu["DefaultThreadsPerCore"],
            row["MemoryInfo"]["SizeInMiB"], gpus), name


def test_unknown_instance_type_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"'ml\.x9\.huge'.*ml\.c5\.large"):
        instances.instance_shape("ml.x9.huge")


def test_a_row_whose_vcpus_are_not_cores_times_threads_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps({"as_of": "2026-12-02", "source": "test", "instances": {
        "ml.c5.large": {"vcpus": 3, "cores": 1, "threads_per_core": 2, "memory_gib": 4}}}))
    with pytest.raises(ValueError, match=r"ml\.c5\.large: vcpus=3 .* 1 x 2"):
        instances.load(bad)


def test_fitting_lists_the_types_of_at_most_n_vcpus_smallest_first() -> None:
    assert instances.fitting(2) == ["ml.c5.large", "ml.m5.large"]
    assert instances.fitting(1) == []

