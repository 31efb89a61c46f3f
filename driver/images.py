"""Small images built locally, for tests and demos: `docker import` of a rootfs, no registry.

The rootfs holds Debian's static busybox and its applet links, which is
enough for sh, sleep, echo, cat, nc and friends.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import docker

BUSYBOX_IMAGE = "shakedown/busybox:test"
APPLETS = (
    "sh",
    "sleep",
    "echo",
    "cat",
    "ls",
    "true",
    "false",
    "env",
    "nc",
    "yes",
    "head",
    "kill",
    "ps",
    "wc",
    "date",
    "hostname",
    "printenv",
    "trap",
    "id",
    "seq",
)


def busybox_path() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("busybox")
    if not found:
        raise RuntimeError("busybox is not installed (apt-get install busybox-static)")
    return Path(found)


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox_path()), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def ensure_busybox_image(client: docker.DockerClient | None = None) -> str:
    """Build (once per engine) and return the busybox test image tag."""
    client = client or docker.from_env()
    try:
        client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    repo, tag = BUSYBOX_IMAGE.split(":")
    client.api.import_image_from_data(
        _rootfs_tar(),
        repository=repo,
        tag=tag,
        changes=['CMD ["/bin/sh"]', "LABEL io.shakedown.test-image=busybox"],
    )
    client.images.get(BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE


def main() -> None:
    print(ensure_busybox_image())


if __name__ == "__main__":
    main()
