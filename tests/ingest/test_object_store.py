"""Ingest from an object store: a real S3-compatible server (moto in server mode) on 127.0.0.1."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.episode_store.index import list_episodes
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.ingest.datasets import write_robomimic
from tests.ingest.logs import recording
from tests.ingest.ros_logs import episode_messages, write_ros2_bag


@pytest.fixture
def s3(monkeypatch):
    """(boto3 client, endpoint host:port) of a moto S3 server in this process, stopped after."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(key, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield boto3.client("s3", endpoint_url=f"http://{host}:{port}"), f"{host}:{port}"
    server.stop()


def upload(client, bucket: str, folder: Path, prefix: str) -> dict[str, bytes]:
    objects = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        objects[key] = path.read_bytes()
    return objects


def test_logs_in_an_s3_bucket_are_ingested_like_a_folder(settings, tmp_path, s3):
    client, endpoint = s3
    logs = tmp_path / "logs"
    write_episode_mcap(recording(), logs / "robot-00/e1.mcap")
    write_ros2_bag(episode_messages(steps=12), logs / "robot-01/bag")
    write_robomimic(logs / "demos/lift.hdf5", lengths=(8, 6), state=(2, 2), action_dim=2)
    (logs / "robot-00/broken.mcap").write_bytes(b"\x89MCAP0\r\n truncated")
    (logs / "robot-00/.uploading.mcap").write_bytes(b"in flight")
    client.create_bucket(Bucket="fleet")
    objects = upload(client, "fleet", logs, "nightly")
    uri = f"s3://fleet/nightly?endpoint_override={endpoint}&scheme=http"

    summary = ingest_logs(settings, source=uri)

    assert (summary.ingested, summary.quarantined) == (4, 1)
    [(bad_uri, reason)] = summary.quarantined_files
    assert bad_uri == "s3://fleet/nightly/robot-00/broken.mcap" and "truncated" in reason
    uris = sorted(e.source_uri for e in list_episodes(settings, status="ok"))
    assert uris == [
        "s3://fleet/nightly/demos/lift.hdf5#demo_0",
        "s3://fleet/nightly/demos/lift.hdf5#demo_1",
        "s3://fleet/nightly/robot-00/e1.mcap",
        "s3://fleet/nightly/robot-01/bag",
    ]
    again = ingest_logs(settings, source=uri)  # three logs skipped by hash, two demos by theirs
    assert (again.ingested, again.quarantined, again.skipped) == (0, 0, 5)
    listed = client.list_objects_v2(Bucket="fleet")["Contents"]
    assert {o["Key"] for o in listed} == set(objects)  # nothing added, nothing removed
    for key, body in objects.items():
        assert client.get_object(Bucket="fleet", Key=key)["Body"].read() == body
