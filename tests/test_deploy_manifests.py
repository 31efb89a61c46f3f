"""deploy/: the Kubernetes manifests validate against the schemas kubernetes-validate ships
(strict: unknown fields are errors; no network), the pieces refer to each other correctly,
and the systemd unit passes `systemd-analyze verify` and stays hardened.

Each validator is also shown a broken input it must reject, so a pass means it really ran.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
UNIT = DEPLOY / "systemd" / "shakedown-agent.service"
# The oldest Kubernetes the manifests claim (appArmorProfile is 1.30's), and the newest schema.
VERSIONS = ("1.30", kubernetes_validate.latest_version())
EXPOSURE_MAX = 50  # systemd-analyze security, tenths: 5.0 "MEDIUM"; the unit scores 4.5 today


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in _docs(p)}


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_strictly(path: Path, version: str) -> None:
    docs = _docs(path)
    assert docs, f"{path}: no documents"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    ds = _all()[("DaemonSet", "shakedown-agent")]
    typo = copy.deepcopy(ds)
    _pod(typo)["hostPid"] = True  # not a field (hostPID is)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[0], strict=True)
    wrong_type = copy.deepcopy(_all()[("Deployment", "shakedown-scheduler")])
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[0], strict=True)


def test_the_pieces_refer_to_each_other() -> None:
    objs = _all()
    config = objs[("ConfigMap", "shakedown-config")]["data"]
    for kind, name in (("DaemonSet", "shakedown-agent"), ("Deployment", "shakedown-scheduler")):
        obj = objs[(kind, name)]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        pod = _pod(obj)
        assert "fsGroup" not in pod.get("securityContext", {}), "fsGroup makes keys group-readable"
        (certs,) = [v for v in pod["volumes"] if v["name"] == "certs"]
        assert certs["projected"]["defaultMode"] == 0o400, "keys must be owner-only"
        for src in certs["projected"]["sources"]:
            ref_kind, ref = ("ConfigMap", src["configMap"]) if "configMap" in src \
                else ("Secret", src["secret"])
            assert (ref_kind, ref["name"]) in objs, f"{name} mounts a missing {ref_kind}"
        (container,) = pod["containers"]
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                assert ref["name"] == "shakedown-config" and ref["key"] in config, env
    agent = _pod(objs[("DaemonSet", "shakedown-agent")])
    assert agent["hostPID"], "nsenter -t PID needs the host's PIDs"
    host_paths = {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
    assert host_paths == {"/var/run/docker.sock", "/var/lib/shakedown-agent"}
    deploy = objs[("Deployment", "shakedown-scheduler")]
    assert deploy["spec"]["replicas"] == 2
    service = objs[("Service", "shakedown-scheduler")]
    assert service["spec"]["selector"].items() <= \
        deploy["spec"]["template"]["metadata"]["labels"].items()


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return path


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)


def _installable(tmp_path: Path, text: str) -> Path:
    """The unit as installed on a node: verify checks that ExecStart exists and is executable,
    so point it at this checkout's agent, and at the example settings."""
    agent = Path(sys.executable).with_name("shakedown-agent")  # this venv's entry point
    assert agent.is_file(), agent
    text = text.replace("ExecStart=/usr/local/bin/shakedown-agent", f"ExecStart={agent}")
    text = text.replace("EnvironmentFile=/etc/shakedown/agent.env",
                        f"EnvironmentFile={DEPLOY / 'systemd' / 'agent.env.example'}")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


def test_the_systemd_unit_verifies_cleanly_and_stays_hardened(tmp_path: Path) -> None:
    unit = _installable(tmp_path, UNIT.read_text())
    out = _verify(unit)
    # verify exits 0 on unknown keys and bad values, printing a warning: none is allowed.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), out
    sec = subprocess.run([_analyze(), "security", "--offline=true", f"--threshold={EXPOSURE_MAX}",
                          str(unit)], capture_output=True, text=True, timeout=60)
    assert sec.returncode == 0, sec.stdout[-2000:]


def test_systemd_analyze_rejects_a_broken_unit(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "\nProtectSystem=strict\n" in text
    unit = _installable(tmp_path, text.replace("\nProtectSystem=", "\nProtectSytem="))
    out = _verify(unit)
    assert "ProtectSytem" in out.stderr, out
