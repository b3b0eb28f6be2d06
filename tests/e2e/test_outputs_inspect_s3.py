"""`inspect s3://BUCKET/PREFIX` reads every .avro object under a prefix, as `inspect DIR`
does a folder, or the one object a key names; against moto's S3 server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.kit.fixtures import FixtureFile, generate_fixtures

BUCKET = "acme-currents"
TYPES = ["users.behaviors.CustomEvent", "users.messages.email.Open"]


@pytest.fixture
def s3(aws: str) -> Any:
    client = boto3.client("s3", endpoint_url=aws)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def files(s3: Any, tmp_path: Path) -> list[FixtureFile]:
    """Two types, two files each, under currents/; a note beside them; a copy of one file
    outside the Currents layout under exports/."""
    made = generate_fixtures(tmp_path / "fixtures", events_per_type=12, seed=3,
                             files_per_type=2, event_types=TYPES)
    for fixture in made:
        s3.put_object(Bucket=BUCKET, Key=fixture.key, Body=fixture.path.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="currents/README.txt", Body=b"not a Currents file")
    s3.put_object(Bucket=BUCKET, Key="exports/copy.avro", Body=made[0].path.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="notes/README.txt", Body=b"nothing to inspect")
    s3.put_object(Bucket=BUCKET, Key="notes/folder/", Body=b"")  # a console "folder"
    return made


def inspect(aws: str, uri: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["inspect", uri, "--s3-endpoint-url", aws, "--samples",
                                     "1", *args])


@pytest.mark.parametrize("prefix", ["currents", "currents/", "currents/dataexport"])
def test_a_prefix_reports_every_avro_object_under_it(
    aws: str, files: list[FixtureFile], prefix: str
) -> None:
    result = inspect(aws, f"s3://{BUCKET}/{prefix}")
    assert result.exit_code == 0, result.output
    reports = orjson.loads(result.stdout)
    assert isinstance(reports, list)
    assert [r["object"] for r in reports] == sorted(f"s3://{BUCKET}/{f.key}" for f in files)
    by_object = {f"s3://{BUCKET}/{f.key}": f for f in files}
    for report in reports:
        fixture = by_object[report["object"]]
        assert report["records"] == fixture.records
        assert report["event_type"] == fixture.event_type
        assert len(report["sample_events"]) == 1


def test_a_key_reports_its_object_and_a_prefix_of_one_is_still_a_list(
    aws: str, files: list[FixtureFile]
) -> None:
    single = inspect(aws, f"s3://{BUCKET}/{files[0].key}")
    assert single.exit_code == 0, single.output
    report = orjson.loads(single.stdout)
    assert isinstance(report, dict) and report["records"] == files[0].records
    assert report["object"] == f"s3://{BUCKET}/{files[0].key}"
    # a prefix that holds one object (outside the Currents layout): a list, like a folder
    listed = inspect(aws, f"s3://{BUCKET}/exports")
    assert listed.exit_code == 0, listed.output
    [copy] = orjson.loads(listed.stdout)
    assert copy["object"] == f"s3://{BUCKET}/exports/copy.avro"
    assert copy["records"] == files[0].records


def test_a_prefix_without_avro_objects_says_what_it_holds(
    aws: str, files: list[FixtureFile]
) -> None:
    others = inspect(aws, f"s3://{BUCKET}/notes")
    assert others.exit_code == 2
    assert "no .avro object under this prefix (1 other object, e.g. " \
           f"s3://{BUCKET}/notes/README.txt)" in others.output
    empty = inspect(aws, f"s3://{BUCKET}/nowhere/")
    assert empty.exit_code == 2
    assert f"s3://{BUCKET}/nowhere/: nothing there" in empty.output
    missing_key = inspect(aws, f"s3://{BUCKET}/currents/no-such-file.avro")
    assert missing_key.exit_code == 2 and "nothing there" in missing_key.output


def test_a_missing_bucket_is_a_clear_error(aws: str) -> None:
    result = inspect(aws, "s3://no-such-bucket/currents")
    assert result.exit_code == 2
    assert "s3://no-such-bucket/currents: cannot list (NoSuchBucket)" in result.output


def test_a_bad_object_under_a_prefix_is_named(
    aws: str, s3: Any, files: list[FixtureFile]
) -> None:
    s3.put_object(Bucket=BUCKET, Key="currents/zz-broken.avro", Body=b"nope")
    result = inspect(aws, f"s3://{BUCKET}/currents")
    assert result.exit_code == 1
    assert f"s3://{BUCKET}/currents/zz-broken.avro" in result.output
    assert "not an Avro container file" in result.output
