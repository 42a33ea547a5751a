"""Storage end to end (docs/storage.md): ``flux-pipeline run`` (a subprocess) against the
simulator and a real S3 API on loopback (moto behind a recording proxy, tests/storage/
support.py), both over HTTP.

PUTs are counted by the proxy (moto has no counters): a rerun that finds its reference images
in the bucket sends HEADs only. Expiry is the proxy's (moto does not enforce it): it answers
an expired presigned URL 403, as S3 does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from ..manifest.helpers import png, write
from ..run.support import (
    clean_env,
    db_execute,
    lock_file,
    quick_sim,
    report_tasks,
    run_argv,
    sim_tasks,
    state_path,
    wait_for,
)
from .support import S3, SECRET_KEY, SESSION_TOKEN, aws_env

KEY = "storage-test-key"
MUG, CAP = png((10, 120, 30)), png((240, 200, 10), size=12)
SHA = {name: hashlib.sha256(content).hexdigest() for name, content in (("mug", MUG), ("cap", CAP))}
PREFIX = "team/flux"


def _manifest(
    tmp: Path,
    s3: S3,
    *,
    prompt: str = "{{ item.name }} on a table",
    extra: str = "",
    storage: str = "",
) -> Path:
    text = f"""
version: 1
name: stored
defaults: {{input: {{output_format: png}}}}
image_sets:
  things: {{files: "refs/*.png"}}
storage:
  bucket: {s3.bucket}
  prefix: {PREFIX}
  endpoint_url: {s3.endpoint}
  region: us-east-1
{storage}
steps:
  - id: hero
    matrix: {{item: {{image_set: things}}}}
    prompt: "{prompt}"
    images: ["{{{{ item.url }}}}"]
{extra}
"""
    return write(tmp, text, {"refs/mug.png": MUG, "refs/cap.png": CAP})


def _run(manifest: Path, out: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=base_url, **aws_env(manifest.parent))
    return subprocess.run(
        run_argv(manifest, out, *extra),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _ref_key(name: str) -> str:
    return f"{PREFIX}/refs/sha256/{SHA[name]}.png"


def _image_urls(tasks: list[dict[str, Any]]) -> list[str]:
    return [url for t in tasks for url in t["request"]["input"].get("image_urls", [])]


def _no_secret_anywhere(root: Path, *texts: str) -> None:
    for text in texts:
        assert SECRET_KEY not in text
        assert SESSION_TOKEN not in text
    for path in root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in (SECRET_KEY, SESSION_TOKEN):
                assert secret.encode() not in content, f"{secret} in {path}"


def test_reference_images_go_through_the_bucket_once(tmp_path: Path, s3: S3) -> None:
    """Local references are uploaded under content-addressed keys before the first create,
    sent as presigned URLs the simulator fetches; a rerun with new tasks uploads nothing."""
    manifest = _manifest(tmp_path, s3)
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        first = _run(manifest, out, sim.base_url)
        assert first.returncode == 0, first.stdout + first.stderr
        tasks = sim_tasks(sim)
        urls = _image_urls(tasks)
        assert len(tasks) == 2
        assert len(urls) == 2
        paths = sorted(httpx.URL(u).path for u in urls)
        assert paths == sorted(f"/{s3.bucket}/{_ref_key(n)}" for n in SHA)
        assert all(u.startswith(s3.endpoint) and "X-Amz-Signature=" in u for u in urls)
        fetched = [s for s in s3.proxy.requests("GET", "/refs/") if s.status == 200]
        assert sorted({s.path for s in fetched}) == paths  # the simulator fetched each one
        assert s3.keys(f"{PREFIX}/refs/") == sorted(_ref_key(n) for n in SHA)
        assert s3.get(_ref_key("mug")) == MUG
        assert len(s3.proxy.requests("PUT", "/refs/")) == 2
        assert "data:" not in json.dumps(tasks)

        s3.proxy.clear()
        changed = _manifest(tmp_path, s3, prompt="{{ item.name }} on a shelf")
        second = _run(changed, out, sim.base_url)
        assert second.returncode == 0, second.stdout + second.stderr
        later = sim_tasks(sim)[2:]
        assert len(later) == 2
        assert sorted(httpx.URL(u).path for u in _image_urls(later)) == paths
        assert s3.proxy.requests("PUT", "/refs/") == []  # nothing uploaded again
        assert len(s3.proxy.requests("HEAD", "/refs/")) == 2
    _no_secret_anywhere(tmp_path, first.stdout, first.stderr, second.stdout, second.stderr)


def test_expired_presigned_urls_are_renewed_on_resume(tmp_path: Path, s3: S3) -> None:
    """url_lifetime 3s: the URL the first run sent expires; the resumed run presigns again,
    and the simulator's fetch of the new URL succeeds."""
    manifest = _manifest(tmp_path, s3, storage="  url_lifetime: 3s")
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        first = _run(manifest, out, sim.base_url, "--max-new-tasks", "1")
        assert first.returncode == 3, first.stdout + first.stderr
        [old] = _image_urls(sim_tasks(sim))
        wait_for(lambda: httpx.get(old).status_code == 403, timeout=15, what="the URL to expire")
        second = _run(manifest, out, sim.base_url)
        assert second.returncode == 0, second.stdout + second.stderr
        [new] = _image_urls(sim_tasks(sim)[1:])
    assert httpx.URL(new).params["X-Amz-Date"] != httpx.URL(old).params["X-Amz-Date"]
    assert httpx.URL(new).params["X-Amz-Expires"] == "3"
    assert [s.status for s in s3.proxy.requests("GET", httpx.URL(new).path)] == [200]


def test_a_stale_parent_is_served_from_the_bucket(tmp_path: Path, s3: S3) -> None:
    """A chained step added after its parents' result URLs aged past their life: each
    parent's output is uploaded content-addressed and sent as a presigned URL."""
    manifest = _manifest(tmp_path, s3)
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        first = _run(manifest, out, sim.base_url)
        assert first.returncode == 0, first.stdout + first.stderr
        month_ago = time.time() - 30 * 24 * 3600
        db_execute(state_path(out), "UPDATE tasks SET finished_at = ?", (month_ago,))
        edit = '  - id: edit\n    from: hero\n    prompt: "the {{ parent.item.name }} in red"\n'
        chained = _manifest(tmp_path, s3, extra=edit)
        second = _run(chained, out, sim.base_url, "--no-lock")
        assert second.returncode == 0, second.stdout + second.stderr
        edits = sim_tasks(sim)[2:]
    outputs = {t["readable_id"]: t["outputs"][0] for t in report_tasks(out).values()}
    parents = {o["sha256"] for rid, o in outputs.items() if "/" not in rid}
    expected = sorted(f"/{s3.bucket}/{PREFIX}/refs/sha256/{sha}.png" for sha in parents)
    assert sorted(httpx.URL(u).path for u in _image_urls(edits)) == expected
    assert len(edits) == 2


def test_publish_then_restore_from_lock_and_bucket(tmp_path: Path, s3: S3) -> None:
    """--publish puts every output and the reports in the bucket, the lock records each
    output's object; with the output directory (and its state DB) gone and the API
    unreachable, a rerun restores every image from the bucket and creates nothing."""
    manifest = _manifest(tmp_path, s3)
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        first = _run(manifest, out, sim.base_url, "--publish")
        assert first.returncode == 0, first.stdout + first.stderr
        created = len(sim_tasks(sim))
        dead = sim.base_url
    tasks = report_tasks(out)
    shas = {o["sha256"]: o["path"] for t in tasks.values() for o in t["outputs"]}
    assert len(shas) == 2
    expected = sorted(f"{PREFIX}/outputs/sha256/{sha}.png" for sha in shas)
    assert s3.keys(f"{PREFIX}/outputs/") == expected
    for sha, path in shas.items():
        assert s3.get(f"{PREFIX}/outputs/sha256/{sha}.png") == (out / path).read_bytes()
    reports = s3.keys(f"{PREFIX}/reports/stored/")
    names = ["index.html", "junit.xml", "m.lock.json", "report.json", "report.md"]
    assert reports == [f"{PREFIX}/reports/stored/{name}" for name in names]
    lock = json.loads(lock_file(manifest).read_text(encoding="utf-8"))
    assert lock["format"] == 2
    objects = sorted(o["object"] for e in lock["tasks"].values() for o in e["outputs"])
    assert objects == expected
    assert s3.get(f"{PREFIX}/reports/stored/m.lock.json") == lock_file(manifest).read_bytes()

    s3.proxy.clear()
    shutil.rmtree(out)
    again = _run(manifest, out, dead)  # the simulator is gone: nothing may need it
    assert again.returncode == 0, again.stdout + again.stderr
    assert "restored 2 output(s)" in again.stdout + again.stderr, again.stderr
    for sha, path in shas.items():
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == sha
    assert "would create 0 task(s)" in again.stdout + again.stderr
    assert created == 2
    assert s3.proxy.requests("PUT", "/outputs/") == []  # published already: not written again
    _no_secret_anywhere(tmp_path, first.stdout, first.stderr, again.stdout, again.stderr)


def test_an_unwritable_bucket_stops_the_run_before_any_create(tmp_path: Path, s3: S3) -> None:
    manifest = _manifest(tmp_path, s3)
    text = manifest.read_text(encoding="utf-8").replace(s3.bucket, "no-such-bucket-here")
    manifest.write_text(text, encoding="utf-8")
    with quick_sim(KEY) as sim:
        done = _run(manifest, tmp_path / "out", sim.base_url)
        assert sim_tasks(sim) == []
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no-such-bucket-here" in lines[0]
    assert "NoSuchBucket" in lines[0]


def test_without_boto3_a_storage_manifest_says_which_extra(tmp_path: Path, s3: S3) -> None:
    manifest = _manifest(tmp_path, s3)
    hidden = tmp_path / "hide"
    (hidden / "boto3").mkdir(parents=True)
    (hidden / "boto3" / "__init__.py").write_text("raise ImportError('no boto3 here')\n")
    env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL="http://127.0.0.1:9")
    env["PYTHONPATH"] = f"{hidden}:{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        run_argv(manifest, tmp_path / "out"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "flux-pipeline: error: storage needs the s3 extra: pip install 'flux-kontext-pipeline[s3]'"
    ), done.stderr
