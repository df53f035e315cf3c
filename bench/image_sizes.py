"""Sizes of gpuhub's images: uncompressed, compressed (what a first pull transfers), per layer.

A benchmark, not a test: it prints a Markdown report (for images/README.md) and exits 0 even
when an image misses its size target. Images that are not built are listed as skipped.

Measures, for each tag of each gpuhub repository present in the local Docker:
  * uncompressed size: `docker image inspect` .Size;
  * compressed size: the image is streamed out with `docker save` and each layer tar is
    compressed with gzip level 1 (zlib, the same deflate as `gzip -1`) and counted, as a
    registry stores and serves each layer as its own gzip blob; the total is their sum
    (`docker save IMAGE | gzip -1 | wc -c` gives the same within a fraction of a percent).
    Pushes made with the default gzip level are a few percent smaller;
  * per layer: the instruction that made it (the image's history, as `docker history
    --no-trunc` shows it), its size as a tar and gzip -1, and whether it is shared with
    gpuhub/singleuser-base (then a user who has the base image does not pull it again).
Sizes are decimal: 1 GB = 1e9 bytes, 1 MB = 1e6 bytes.

Needs the docker CLI and the images built; nothing else (standard library only).

    python3 -m bench.image_sizes                 # all gpuhub images, top 6 layers each
    python3 -m bench.image_sizes --layers 10 gpuhub/singleuser-cuda:latest
    python3 -m bench.image_sizes --no-compressed # fast: uncompressed sizes only
    python3 -m bench.image_sizes --build-times   # also `docker compose build` per image, warm cache

(from the repository's root, as every script of bench/)
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import subprocess
import sys
import tarfile
import time
import zlib

from bench.common import REPO
from bench.docs_section import record

# gpuhub's image repositories, each with the compose service that builds it (for --build-times).
SERVICES = {"gpuhub/singleuser-base": "singleuser-base", "gpuhub/singleuser-opencl": "singleuser-opencl",
            "gpuhub/singleuser-cuda": "singleuser-cuda", "gpuhub/hub": "hub", "gpuhub/gpu-monitor": "gpu-monitor",
            "gpuhub/netpolicy": "netpolicy", "gpuhub/docker-api-filter": "monitor-docker",
            "gpuhub/demo-oidc": "demo-oidc"}
REPOSITORIES = list(SERVICES)
# Targets (decimal GB) from the image-size issue; repositories not listed have none.
TARGETS_GB = {"gpuhub/singleuser-cuda": 6.2, "gpuhub/singleuser-opencl": 1.0}
BASE = "gpuhub/singleuser-base"
GB, MB = 1e9, 1e6


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def local_tags(repository: str) -> list[str]:
    out = docker("images", repository, "--format", "{{.Repository}}:{{.Tag}}")
    return sorted({t for t in out.split() if not t.endswith(":<none>")},
                  key=lambda t: (not t.endswith(":latest"), t))


def clean_command(created_by: str) -> str:
    """The Dockerfile instruction, as docker history shows it, without the shell noise."""
    c = " ".join(created_by.split())
    if not c:
        return "FROM (the base image's root filesystem)"
    c = c.removesuffix(" # buildkit")
    if c.startswith("RUN "):                    # BuildKit: "RUN [|1 CUDA_MAJOR=13] /bin/sh -c ..."
        c = c[4:]
    for marker in ("/bin/sh -c #(nop) ", "/bin/sh -c "):
        if marker in c:
            head, _, rest = c.partition(marker)
            if marker.endswith("#(nop) "):
                return rest                     # classic builder: ENV, COPY, ...
            args = head.strip()                 # "|1 CUDA_MAJOR=13": the build args it saw
            return "RUN " + (f"[{args.split(' ', 1)[-1]}] " if args.startswith("|") else "") + rest
    return c if c.split(" ", 1)[0].isupper() else "RUN " + c


CA_PREAMBLE = re.compile(r'if grep -qs "BEGIN CERTIFICATE" \S+; then export \w+=\S+; fi && ')


def short_command(created_by: str) -> str:
    """clean_command without the CA-secret preamble every download step starts with."""
    return CA_PREAMBLE.sub("", clean_command(created_by))


def save_layers(image: str, compress: bool) -> tuple[list[dict], dict]:
    """Stream `docker save` once; return the layers (oldest first) and the image config."""
    proc = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    sizes: dict[str, tuple[int, int]] = {}        # member name -> (tar bytes, gzip -1 bytes)
    small: dict[str, bytes] = {}                  # manifest.json, the image config (any layout)
    links: dict[str, str] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if member.issym() or member.islnk():      # a layer repeated in the image
                links[member.name] = member.linkname
                continue
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            if member.size < 1 << 20 and not member.name.endswith("layer.tar"):
                small[member.name] = data = f.read()
                sizes[member.name] = (len(data), len(zlib.compress(data, 1)))
                continue
            raw = packed = 0
            z = zlib.compressobj(1, zlib.DEFLATED, 31) if compress else None   # gzip -1
            while chunk := f.read(1 << 22):
                raw += len(chunk)
                if z:
                    packed += len(z.compress(chunk))
            if z:
                packed += len(z.flush())
            sizes[member.name] = (raw, packed)
    if proc.wait() != 0:
        raise RuntimeError(f"docker save {image} failed")
    for name, target in links.items():               # symlinks are relative to the link's folder
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        sizes[name] = sizes.get(resolved, sizes.get(target, (0, 0)))
    manifest = json.loads(small["manifest.json"])
    entry = manifest[0]
    config = json.loads(small[entry["Config"]])
    diff_ids = config["rootfs"]["diff_ids"]
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    layers = []
    for i, name in enumerate(entry["Layers"]):
        raw, packed = sizes[name]
        layers.append({"diff_id": diff_ids[i], "tar": raw, "gz": packed,
                       "command": short_command(history[i].get("created_by", "")) if i < len(history) else "?"})
    return layers, config


def base_diff_ids() -> set[str]:
    try:
        return set(json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", BASE)))
    except subprocess.CalledProcessError:
        return set()


def md_cell(text: str, width: int) -> str:
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="*", help="image:tag to measure (default: every tag of the gpuhub repositories)")
    ap.add_argument("--layers", type=int, default=6, help="biggest layers listed per image (default 6)")
    ap.add_argument("--no-compressed", action="store_true", help="skip docker save + gzip (fast)")
    ap.add_argument("--width", type=int, default=110, help="characters of each layer's command shown")
    ap.add_argument("--tag", help="only this tag of each repository (default: every tag present)")
    ap.add_argument("--build-times", action="store_true",
                    help="first time `docker compose build SERVICE` for each image (warm cache: every layer cached)")
    args = ap.parse_args()

    compress = not args.no_compressed
    if args.images:
        todo = [(img.rsplit(":", 1)[0] if ":" in img.split("/")[-1] else img, img) for img in args.images]
        skipped = []
    else:
        todo, skipped = [], []
        for repo in REPOSITORIES:
            tags = [t for t in local_tags(repo) if not args.tag or t.endswith(f":{args.tag}")]
            todo += [(repo, t) for t in tags]
            if not tags:
                skipped.append(repo)
    build_seconds: dict[str, float] = {}
    if args.build_times:
        for repo in REPOSITORIES:
            t0 = time.monotonic()
            subprocess.run(["docker", "compose", "--project-directory", str(REPO), "build", "--quiet", SERVICES[repo]],
                           cwd=REPO, check=True, capture_output=True, text=True)
            build_seconds[repo] = time.monotonic() - t0
            print(f"built {repo} (warm cache) in {build_seconds[repo]:.1f} s", file=sys.stderr)
    shared = base_diff_ids()

    rows, details = [], []
    for repo, image in todo:
        t0 = time.monotonic()
        size = int(docker("image", "inspect", "--format", "{{.Size}}", image))
        layers, config = save_layers(image, compress) if (compress or args.layers) else ([], {})
        for layer in layers:
            layer["base"] = layer["diff_id"] in shared and repo != BASE
        gz = sum(layer["gz"] for layer in layers)
        gz_new = sum(layer["gz"] for layer in layers if not layer["base"])
        target = TARGETS_GB.get(repo)
        verdict = ("—" if target is None
                   else "pass" if size <= target * GB else f"**miss** (+{(size - target * GB) / GB:.2f} GB)")
        label = (config.get("config") or {}).get("Labels") or {}
        record("6. Images", f"`{image}` uncompressed"
               + (f"; `docker compose build {SERVICES.get(repo)}`, warm cache" if repo in build_seconds else ""),
               f"{size / GB:.2f} GB" + (f"; {build_seconds[repo]:.1f} s" if repo in build_seconds else ""),
               goal=f"≤ {target:.1f} GB" if target else "–", met=None if target is None else size <= target * GB)
        rows.append([image, f"{size / GB:.2f}",
                     f"{gz / GB:.2f}" if compress else "n/m",
                     f"{gz_new / GB:.2f}" if compress and repo != BASE and shared else "—",
                     f"{target:.1f}" if target else "—", verdict,
                     label.get("org.gpuhub.cuda-major", "")])
        details.append((image, layers))
        print(f"measured {image} in {time.monotonic() - t0:.0f} s", file=sys.stderr)

    print("## gpuhub image sizes\n")
    print("Decimal units (1 GB = 10⁹ bytes). *Uncompressed*: `docker image inspect` .Size. "
          "*Pull (gzip -1)*: every layer of `docker save` compressed with gzip level 1 and summed, "
          "≈ what a first pull transfers. *Pull after base*: the same without the layers shared "
          f"with {BASE}.\n")
    print("| image | uncompressed GB | pull (gzip -1) GB | pull after base GB | target GB | result | CUDA major |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if skipped:
        print(f"\nNot built here, skipped: {', '.join(skipped)}.")

    for image, layers in details:
        if not layers or not args.layers:
            continue
        print(f"\n### {image}: the {min(args.layers, len(layers))} biggest of {len(layers)} layers\n")
        print("| layer | tar MB | gzip -1 MB | in base | made by |")
        print("| ---: | ---: | ---: | --- | --- |")
        biggest = sorted(range(len(layers)), key=lambda i: layers[i]["tar"], reverse=True)[: args.layers]
        for i in sorted(biggest):
            layer = layers[i]
            print(f"| {i + 1} | {layer['tar'] / MB:,.0f} | {layer['gz'] / MB:,.0f} | {'yes' if layer['base'] else ''} | "
                  f"`{md_cell(layer['command'], args.width)}` |")
        rest = [layer for j, layer in enumerate(layers) if j not in biggest]
        if rest:
            print(f"| others ({len(rest)}) | {sum(layer['tar'] for layer in rest) / MB:,.0f} | "
                  f"{sum(layer['gz'] for layer in rest) / MB:,.0f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
