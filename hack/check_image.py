"""Checks the image hack/build-image.sh wrote, then runs it.

Reads the OCI archive and fails, naming what is wrong, unless it holds exactly linux/amd64 and
linux/arm64, each with the user, entrypoint, command and OCI labels the Dockerfile sets, its
binary an ELF for that platform's machine with no interpreter (static), and a base that carries
the non-root user and the CA bundle. Then unpacks this machine's platform and runs the image's
entrypoint with runc as the image's user, which must print the version: the image starts with
no shell and no libc.

Usage: python3 hack/check_image.py ARCHIVE VERSION RUNC
"""

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile

BINARY = "usr/local/bin/stoker"
# ELF e_machine of each platform's binary.
MACHINES = {"amd64": 0x3E, "arm64": 0xB7}
LABELS = ("title", "description", "licenses", "version", "revision")
PT_INTERP = 3


def fail(message):
    sys.exit(f"image check failed: {message}")


class Archive:
    def __init__(self, path):
        self.tar = tarfile.open(path)

    def blob(self, digest):
        algorithm, hex_digest = digest.split(":", 1)
        member = self.tar.extractfile(f"blobs/{algorithm}/{hex_digest}")
        if member is None:
            fail(f"blob {digest} is missing")
        return member.read()

    def json(self, digest):
        return json.loads(self.blob(digest))

    def platforms(self):
        """Each platform's manifest, by architecture, from the index (nested or not)."""
        top = json.loads(self.tar.extractfile("index.json").read())
        manifests = top["manifests"]
        if len(manifests) == 1 and manifests[0]["mediaType"].endswith("image.index.v1+json"):
            manifests = self.json(manifests[0]["digest"])["manifests"]
        found = {}
        for descriptor in manifests:
            platform = descriptor.get("platform", {})
            # BuildKit adds attestation manifests for platform "unknown"; they are not images.
            if platform.get("os") == "unknown":
                continue
            name = f"{platform.get('os')}/{platform.get('architecture')}"
            found[name] = self.json(descriptor["digest"])
        return found

    def layers(self, manifest):
        for layer in manifest["layers"]:
            yield tarfile.open(fileobj=io.BytesIO(self.blob(layer["digest"])))


def check_elf(data, arch):
    if data[:4] != b"\x7fELF" or data[4] != 2:
        fail(f"{arch}: {BINARY} is not a 64-bit ELF file")
    (machine,) = struct.unpack_from("<H", data, 18)
    if machine != MACHINES[arch]:
        fail(f"{arch}: {BINARY} is built for ELF machine {machine:#x}, not {MACHINES[arch]:#x}")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for index in range(phnum):
        (kind,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if kind == PT_INTERP:
            fail(f"{arch}: {BINARY} asks for a dynamic loader; the image has no libc")


def check_platform(archive, arch, manifest, version):
    config = archive.json(manifest["config"]["digest"])
    if config.get("architecture") != arch:
        fail(f"{arch}: the config says architecture {config.get('architecture')}")
    settings = config.get("config", {})
    expected = {"User": "65532:65532", "Entrypoint": ["/usr/local/bin/stoker"], "Cmd": ["controller"]}
    for key, value in expected.items():
        if settings.get(key) != value:
            fail(f"{arch}: {key} is {settings.get(key)!r}, not {value!r}")
    labels = settings.get("Labels") or {}
    for name in LABELS:
        if not labels.get(f"org.opencontainers.image.{name}"):
            fail(f"{arch}: the label org.opencontainers.image.{name} is missing")
    if labels["org.opencontainers.image.version"] != version:
        fail(f"{arch}: the version label is {labels['org.opencontainers.image.version']}, not {version}")
    files = {}
    for layer in archive.layers(manifest):
        for member in layer.getmembers():
            if member.isfile():
                files[member.name.lstrip("./")] = layer.extractfile(member).read()
    if BINARY not in files:
        fail(f"{arch}: no {BINARY} in the image")
    check_elf(files[BINARY], arch)
    passwd = files.get("etc/passwd", b"").decode()
    if not any(line.split(":")[2:4] == ["65532", "65532"] for line in passwd.splitlines() if line.count(":") >= 3):
        fail(f"{arch}: the base has no user 65532 in /etc/passwd")
    if b"BEGIN CERTIFICATE" not in files.get("etc/ssl/certs/ca-certificates.crt", b""):
        fail(f"{arch}: the base has no CA bundle at /etc/ssl/certs/ca-certificates.crt")
    return settings


def run(archive, manifest, settings, runc, version):
    """Unpacks the image and runs its entrypoint with --version under runc as the image's user."""
    with tempfile.TemporaryDirectory() as bundle:
        rootfs = os.path.join(bundle, "rootfs")
        os.mkdir(rootfs)
        for layer in archive.layers(manifest):
            layer.extractall(rootfs, filter="tar")
        subprocess.run([runc, "spec", "--bundle", bundle], check=True)
        with open(os.path.join(bundle, "config.json")) as file:
            spec = json.load(file)
        uid, gid = (int(part) for part in settings["User"].split(":"))
        spec["process"].update(
            terminal=False, args=settings["Entrypoint"] + ["--version"], user={"uid": uid, "gid": gid}, cwd="/"
        )
        spec["root"] = {"path": "rootfs", "readonly": True}
        with open(os.path.join(bundle, "config.json"), "w") as file:
            json.dump(spec, file)
        state = os.path.join(bundle, "state")
        result = subprocess.run(
            [runc, "--root", state, "run", "--bundle", bundle, f"stoker-image-check-{os.getpid()}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0 or result.stdout.strip() != f"stoker {version}":
            fail(f"running the image printed {result.stdout!r} {result.stderr!r} (exit {result.returncode})")
        return result.stdout.strip()


def main():
    path, version, runc = sys.argv[1:4]
    archive = Archive(path)
    platforms = archive.platforms()
    if sorted(platforms) != ["linux/amd64", "linux/arm64"]:
        fail(f"the image is for {sorted(platforms)}, not linux/amd64 and linux/arm64")
    settings = {arch: check_platform(archive, arch, platforms[f"linux/{arch}"], version) for arch in MACHINES}
    here = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    printed = run(archive, platforms[f"linux/{here}"], settings[here], runc, version)
    print(f"image checked: linux/amd64 and linux/arm64, user 65532, labels set; linux/{here} ran: {printed}")


if __name__ == "__main__":
    main()
