#!/usr/bin/env python3
"""Regenerate the embedded data of the `catalog` crate.

Writes two CSV files under crates/catalog/data/:

* instance-types.csv: one row per EC2 instance type, taken from moto's
  moto/ec2/resources/instance_types.json.gz (Apache-2.0), with header
  instance_type,vcpus,memory_mib,gpus,gpu_manufacturer,gpu_model,gpu_memory_mib,arch
  sorted by instance type. Only GPUs are recorded (not Neuron, Inferentia,
  FPGA or media accelerators). `arch` is spelt as Kubernetes' kubernetes.io/arch
  label spells it (amd64 or arm64). EC2 Mac types are left out: they run macOS
  on Dedicated Hosts and cannot be Kubernetes nodes.
* on-demand-prices-us-east-1.csv: a verbatim copy of the shared price list
  (header region,instance_type,on_demand_usd_per_hour), after checking it.

Usage: scripts/gen-catalog.py [PRICES_CSV]

The repository root is the parent of this script's folder. PRICES_CSV defaults
to <repo>/../shared/data/ec2-on-demand-prices.csv. moto must be importable (for
example run this with a virtualenv's python that has moto installed); the
instance types differ between moto releases, so note the version printed when
committing regenerated data (the committed data came from moto 5.2.5).
Standard library only.
"""

import csv
import gzip
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO, "crates", "catalog", "data")
DEFAULT_PRICES = os.path.join(REPO, "..", "shared", "data", "ec2-on-demand-prices.csv")

HEADER = [
    "instance_type",
    "vcpus",
    "memory_mib",
    "gpus",
    "gpu_manufacturer",
    "gpu_model",
    "gpu_memory_mib",
    "arch",
]
PRICES_HEADER = ["region", "instance_type", "on_demand_usd_per_hour"]

# EC2's ProcessorInfo.SupportedArchitectures -> kubernetes.io/arch.
ARCH = {"x86_64": "amd64", "i386": "amd64", "arm64": "arm64"}
# macOS-only architectures: such types are skipped.
MAC_ARCHES = {"arm64_mac", "x86_64_mac"}


def moto_instance_types():
    """Return (moto version, path of moto's instance_types.json.gz)."""
    import moto  # noqa: PLC0415 (only this step needs moto)

    path = os.path.join(
        os.path.dirname(moto.__file__), "ec2", "resources", "instance_types.json.gz"
    )
    return moto.__version__, path


def check_field(value, what):
    text = str(value)
    if not text or any(c in text for c in ',"\n\r'):
        raise SystemExit(f"gen-catalog: unusable {what}: {text!r}")
    return text


def shape_row(name, info):
    """Return the CSV row for one instance type, or None to skip it."""
    arches = set(info["ProcessorInfo"]["SupportedArchitectures"])
    if arches & MAC_ARCHES:
        return None
    normalised = {ARCH[a] for a in arches if a in ARCH}
    if arches - set(ARCH) or len(normalised) != 1:
        raise SystemExit(f"gen-catalog: {name}: unexpected architectures {sorted(arches)}")
    (arch,) = normalised

    vcpus = info["VCpuInfo"]["DefaultVCpus"]
    memory_mib = info["MemoryInfo"]["SizeInMiB"]
    if vcpus <= 0 or memory_mib <= 0:
        raise SystemExit(f"gen-catalog: {name}: {vcpus} vCPUs, {memory_mib} MiB")

    # `Count` is whole GPUs. Fractional-GPU types (g6f, gr6f) report Count 0 and a
    # GpuPartitionSize < 1; they keep gpus = 0 but still name the GPU and give
    # the memory of their share.
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    count = sum(g.get("Count", 0) for g in gpus)
    manufacturers = sorted({g["Manufacturer"] for g in gpus if g.get("Manufacturer")})
    models = sorted({g["Name"] for g in gpus if g.get("Name")})
    if len(manufacturers) > 1 or len(models) > 1:
        raise SystemExit(f"gen-catalog: {name}: mixed GPUs {gpus}")
    gpu_memory = info.get("GpuInfo", {}).get("TotalGpuMemoryInMiB")
    if gpu_memory is None:
        gpu_memory = sum(
            max(g.get("Count", 0), 1) * g.get("MemoryInfo", {}).get("SizeInMiB", 0)
            for g in gpus
        )

    return [
        check_field(name, "instance type"),
        str(vcpus),
        str(memory_mib),
        str(count),
        check_field(manufacturers[0], "GPU manufacturer") if manufacturers else "",
        check_field(models[0], "GPU model") if models else "",
        str(gpu_memory),
        arch,
    ]


def write_instance_types():
    moto_version, source = moto_instance_types()
    with gzip.open(source, "rt", encoding="utf-8") as f:
        types = json.load(f)
    rows, skipped = [], []
    for name in sorted(types):
        info = types[name]
        if info.get("InstanceType", name) != name:
            raise SystemExit(f"gen-catalog: key {name} names {info['InstanceType']}")
        row = shape_row(name, info)
        if row is None:
            skipped.append(name)
        else:
            rows.append(row)
    out = os.path.join(DATA_DIR, "instance-types.csv")
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)
    print(f"{os.path.relpath(out, REPO)}: {len(rows)} types from moto {moto_version} "
          f"({len(skipped)} skipped: {' '.join(skipped)})")


def copy_prices(path):
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    reader = csv.reader(text.splitlines())
    if next(reader) != PRICES_HEADER:
        raise SystemExit(f"gen-catalog: {path}: header is not {','.join(PRICES_HEADER)}")
    seen = set()
    for region, name, price in reader:
        if region != "us-east-1" or name in seen or not float(price) > 0:
            raise SystemExit(f"gen-catalog: {path}: bad row {region},{name},{price}")
        seen.add(name)
    if not text.endswith("\n"):
        text += "\n"
    out = os.path.join(DATA_DIR, "on-demand-prices-us-east-1.csv")
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"{os.path.relpath(out, REPO)}: {len(seen)} prices")


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        raise SystemExit(f"usage: {argv[0]} [PRICES_CSV]")
    prices = argv[1] if len(argv) == 2 else DEFAULT_PRICES
    os.makedirs(DATA_DIR, exist_ok=True)
    write_instance_types()
    copy_prices(prices)


if __name__ == "__main__":
    main(sys.argv)
