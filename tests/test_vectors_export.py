"""`ghcb vectors export`: every golden vector as a file, a manifest that agrees with the golden
files, and a C header that a C program compiles against and reads back exactly."""

from __future__ import annotations

import importlib.resources
import io
import json
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import vectors
from ghcb._vectors_c import KINDS
from ghcb.cli import main
from tests.helpers import SPEC, assemble, load_vectors, vector_bytes

if TYPE_CHECKING:
    import pathlib

CC = shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("vectors")
    return out, vectors.export(out, c_header=True)


def golden_counts() -> dict[str, int]:
    """Vectors per kind, counted in the golden files themselves (a vector added there is
    exported without a change here)."""
    info = load_vectors("exitinfo2")
    groups = ("guest_errors", "ghcb_errors", "event_injections")
    return {
        "certs": len(load_vectors("certs")["vectors"]) + 1,  # + milan_cert_table.bin
        "pages": len(load_vectors("pages_check")["vectors"]),
        "kvm_run": len(list((SPEC / "vectors").glob("kvm_run_*.bin"))),
        "exitinfo2": sum(len(info[group]) for group in groups),
        "msr": len(load_vectors("msr")["values"]),
        "psc": len(load_vectors("psc")["vectors"]),
    }


def rows(manifest: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {r["name"].split("/", 1)[1]: r for r in manifest["vectors"] if r["kind"] == kind}


def test_every_golden_vector_is_written(exported: tuple[pathlib.Path, dict[str, Any]]) -> None:
    """One file per vector of every golden file, with the golden bytes."""
    out, manifest = exported
    golden_certs = load_vectors("certs")["vectors"]
    certs = rows(manifest, "certs")
    assert list(certs) == [v["name"] for v in golden_certs] + ["milan_cert_table"]
    for v in golden_certs:
        assert (out / certs[v["name"]]["file"]).read_bytes() == assemble(v["parts"])
    milan = (out / certs["milan_cert_table"]["file"]).read_bytes()
    assert milan == vector_bytes("milan_cert_table.bin")
    pages = rows(manifest, "pages")
    golden_pages = load_vectors("pages_check")["vectors"]
    assert list(pages) == [v["name"] for v in golden_pages]
    for v in golden_pages:
        assert (out / pages[v["name"]]["file"]).read_bytes() == vector_bytes(v["file"])
    runs = rows(manifest, "kvm_run")
    assert set(runs) == {"kvm_run_req_certs_merged", "kvm_run_vmgexit_v15"}
    for name, row in runs.items():
        assert (out / row["file"]).read_bytes() == vector_bytes(f"{name}.bin")
    info = load_vectors("exitinfo2")
    exit_rows = rows(manifest, "exitinfo2")
    for group in ("guest_errors", "ghcb_errors", "event_injections"):
        for v in info[group]:
            row = exit_rows[v["name"]]
            assert row["exit_info_2"] == int(v["exitinfo2"], 16)
            assert (out / row["file"]).read_bytes() == int(v["exitinfo2"], 16).to_bytes(8, "little")
    assert len(rows(manifest, "msr")) == len(load_vectors("msr")["values"])
    psc = rows(manifest, "psc")
    for v in load_vectors("psc")["vectors"]:
        assert (out / psc[v["name"]]["file"]).read_bytes() == bytes.fromhex(v["descriptor"])
        assert (psc[v["name"]]["exit_info_2"], psc[v["name"]]["exits"]) == (
            v["exit_info_2"],
            v["exits"],
        )
    assert len(manifest["vectors"]) == sum(golden_counts().values())
    assert (manifest["format"], manifest["version"]) == ("ghcb-vectors", 1)


def test_cert_rows_agree_with_the_golden_expectations(
    exported: tuple[pathlib.Path, dict[str, Any]],
) -> None:
    """Verdict, first error, violations and entries are those certs.json expects."""
    _, manifest = exported
    certs = rows(manifest, "certs")
    milan = certs["milan_cert_table"]
    assert (milan["verdict"], milan["strict_error"], milan["rbx"]) == ("accept", None, 2)
    assert [e["name"] for e in milan["entries"]] == ["ARK", "ASK", "VCEK"]
    assert milan["violations"] == []
    for v in load_vectors("certs")["vectors"]:
        row, expect = certs[v["name"]], v["expect"]
        assert row["size"] == expect["size"]
        assert row["strict_error"] == expect["strict_error"]
        assert row["verdict"] == ("reject" if expect["strict_error"] else "accept")
        if "violations" in expect:
            got = [[x["code"], x["offset"]] for x in row["violations"]]
            assert got == expect["violations"], v["name"]
        else:
            assert sorted({x["code"] for x in row["violations"]}) == expect["violation_codes"]
        if expect["strict_error"] is None:
            assert [{k: e[k] for k in ("name", "offset", "length")} for e in row["entries"]] == [
                {k: e[k] for k in ("name", "offset", "length")} for e in expect["entries"]
            ]
            assert row["rbx"] == -(-expect["size"] // 4096)
        else:
            assert row["entries"] == []
            assert row["rbx"] is None


def test_page_rows(exported: tuple[pathlib.Path, dict[str, Any]]) -> None:
    """Pages carry KVM's answer per tree and the violations of pages_check.json, and the
    exit code, EXITINFO1/2, RBX and valid set the guest wrote (pages.json's fields)."""
    _, manifest = exported
    pages = rows(manifest, "pages")
    for v in load_vectors("pages_check")["vectors"]:
        row, expect = pages[v["name"]], v["expect"]
        assert row["expected_response"] == expect["expected_response"]
        assert row["violations"] == expect["violations"]
        merged = expect["expected_response"]["merged"]
        accepted = merged is not None and merged["stage"] in {
            "accepted",
            "answered",
            "exits-to-userspace",
        }
        assert row["verdict"] == ("accept" if accepted else "reject")
    for v in load_vectors("pages")["vectors"]:
        page, fields = pages[v["name"]]["page"], v["expect"]["fields"]
        assert page["exit_code"]["name"] == v["expect"]["exit_code_name"]
        assert page["valid"] == sorted(v["expect"]["valid"])
        for name in ("sw_exit_info_1", "sw_exit_info_2", "rbx"):
            assert page[name.removeprefix("sw_")] == fields.get(name, v["set"].get(name, 0))
    unaligned = pages["request_page_unaligned"]
    assert (unaligned["verdict"], unaligned["v15_verdict"]) == ("reject", "accept")
    assert pages["page_length"]["page"] is None


def run_command(*words: str) -> tuple[int, str]:
    """``ghcb WORDS`` in process, through the ``ghcb`` command itself: (status, stdout)."""
    out = io.StringIO()
    return main(list(words), out), out.getvalue()


cli = run_command


def test_cli(tmp_path: pathlib.Path) -> None:
    """`vectors export DIR --json` writes and says what; a folder without vectors is exit 2."""
    status, text = cli("vectors", "export", str(tmp_path / "out"), "--json")
    assert status == 0
    doc = json.loads(text)
    assert doc == {
        "ok": True,
        "dir": str(tmp_path / "out"),
        "vectors": golden_counts(),
        "files": ["manifest.json"],
    }
    assert not (tmp_path / "out" / "ghcb_vectors.h").exists()
    status, text = cli("vectors", "export", str(tmp_path / "x"), "--spec", str(tmp_path), "--json")
    assert status == 2
    assert json.loads(text)["error"]["code"] == "usage"
    assert vectors.spec_dir() == SPEC


C_PROGRAM = r"""
#include <stdio.h>
#include "ghcb_vectors.h"

int main(void)
{
    for (size_t i = 0; i < GHCB_VECTOR_COUNT; i++) {
        const struct ghcb_vector *v = &ghcb_vectors[i];
        uint32_t h = 2166136261u; /* FNV-1a over the bytes */
        for (size_t k = 0; k < v->size; k++)
            h = (h ^ v->data[k]) * 16777619u;
        printf("%s %d %d %s %d %016llx %016llx %d %d %016llx %016llx %d %llx %zu %zu %08x\n",
               v->name, (int)v->kind, (int)v->verdict, v->first_error ? v->first_error : "-",
               v->has_exit_info, (unsigned long long)v->exit_info_1,
               (unsigned long long)v->exit_info_2, v->has_v15, (int)v->v15_verdict,
               (unsigned long long)v->v15_exit_info_1, (unsigned long long)v->v15_exit_info_2,
               v->has_rbx, (unsigned long long)v->rbx, v->size, v->n_entries, h);
    }
    return 0;
}
"""


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def expected_line(out: pathlib.Path, row: dict[str, Any]) -> str:
    """What the C program prints for ``row``, from the manifest alone."""
    kind = KINDS[row["kind"]]
    first, info, v15, rbx = None, None, None, None
    if row["kind"] == "certs":
        first, rbx = row["strict_error"], row["rbx"]
    elif row["kind"] == "pages":
        errors = [v["code"] for v in row["violations"]["merged"] if v["severity"] == "error"]
        first = errors[0] if errors else None
        merged, old = row["expected_response"]["merged"], row["expected_response"]["v15"]
        info = merged and (merged["exit_info_1"], merged["exit_info_2"])
        v15 = old and (int(row["v15_verdict"] == "reject"), old["exit_info_1"], old["exit_info_2"])
        page = row["page"] or {"valid": []}
        rbx = page["rbx"] if "rbx" in page["valid"] else None
    elif row["kind"] == "psc":
        first = row["violations"][0] if row["violations"] else None
        info = (row["exit_info_1"], row["exit_info_2"])
    elif row["kind"] == "exitinfo2":
        info = (row["exit_info_1"], row["exit_info_2"])
    data = (out / row["file"]).read_bytes()
    i1, i2 = info or (0, 0)
    vv, v1, v2 = v15 or (0, 0, 0)
    return (
        f"{row['name']} {kind} {int(row['verdict'] == 'reject')} {first or '-'} "
        f"{int(info is not None)} {i1:016x} {i2:016x} {int(v15 is not None)} {vv} "
        f"{v1:016x} {v2:016x} {int(rbx is not None)} {rbx or 0:x} {len(data)} "
        f"{len(row.get('entries', []))} {fnv1a(data):08x}"
    )


@pytest.mark.skipif(CC is None, reason="no C compiler (cc or gcc) on this machine")
def test_c_header_compiles_and_reads_back(
    exported: tuple[pathlib.Path, dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    """A C program built against ghcb_vectors.h (-Wall -Wextra -Werror, C99) prints every
    vector's verdict, first error, EXITINFO1/2, RBX, size, entry count and an FNV-1a of its
    bytes: exactly what the manifest and the files say."""
    out, manifest = exported
    source = tmp_path / "main.c"
    source.write_text(C_PROGRAM)
    binary = tmp_path / "vectors"
    assert CC is not None
    subprocess.run(
        [
            CC,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(out),
            str(source),
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
    )
    result = subprocess.run([str(binary)], check=True, capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert lines == [expected_line(out, row) for row in manifest["vectors"]]
    u32 = next(line for line in lines if line.startswith("certs/u32_wrap "))
    assert u32.split()[1:4] == ["1", "1", "u32-wrap"]
    ext = next(line for line in lines if line.startswith("pages/snp_ext_guest_request "))
    assert ext.split()[2:11] == ["0", "-", "1", *[f"{0:016x}"] * 2, "1", "0", *[f"{0:016x}"] * 2]
    assert ext.split()[11:14] == ["1", "4", "4096"]
    usage = next(line for line in lines if line.startswith("pages/invalid_usage "))
    assert usage.split()[2:7] == ["1", "invalid-usage", "1", f"{2:016x}", f"{2:016x}"]


# -- the golden vectors in a wheel ------------------------------------------------------------
#: What setuptools puts in a wheel from pyproject.toml (its build_py, without building: a wheel
#: build takes seconds and needs the build backend from the registry): packages, modules and
#: package data, as paths inside the wheel.
WHEEL_FILES = r"""
import json, warnings
warnings.simplefilter("ignore")
from setuptools.dist import Distribution
from setuptools.config.pyprojecttoml import apply_configuration
dist = Distribution()
dist.script_name = "setup.py"
apply_configuration(dist, "pyproject.toml")
dist.include_package_data = False  # the declared package data only (no sdist manifest)
build = dist.get_command_obj("build_py")
build.ensure_finalized()
data = [f"{target}/{name}" for _, _, target, names in build.data_files for name in names]
modules = [f"{package}.{module}" for package, module, _ in build.find_all_modules()]
print(json.dumps({"packages": dist.packages, "data": data, "modules": modules}))
"""


def test_wheel_carries_the_golden_vectors() -> None:
    """The wheel has every ghcb package and, as ``ghcb/_spec``, exactly the golden vectors
    and tables of spec/ (no spec/tools, no README): what export and difftest read."""
    from tests.helpers import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", WHEEL_FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(proc.stdout)
    on_disk = sorted(
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ghcb").rglob("__init__.py")
    )
    assert sorted(found["packages"]) == sorted([*on_disk, "ghcb._spec"])
    shipped = sorted(f.removeprefix("build/lib/ghcb/_spec/") for f in found["data"] if "_spec" in f)
    every = [*(SPEC / "vectors").rglob("*"), *(SPEC / "tables").rglob("*")]
    wanted = sorted(str(p.relative_to(SPEC)) for p in every if p.is_file())
    assert shipped == wanted
    assert "vectors/certs.json" in shipped
    assert "tables/certs.toml" in shipped
    assert "vectors/pages/check/invalid_usage.bin" in shipped
    assert not [m for m in found["modules"] if m.startswith("ghcb._spec")]


def test_spec_dir_reads_the_installed_copy_first(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec_dir(): the package's ``_spec`` (a wheel) before the checkout's spec/ (an editable
    install); neither is a VectorsUnavailable naming both and --spec."""
    package = tmp_path / "site-packages" / "ghcb"
    package.mkdir(parents=True)
    (package / "_spec").symlink_to(SPEC)
    monkeypatch.setattr(importlib.resources, "files", lambda name: package)
    assert vectors.spec_dir() == package / "_spec"
    assert vectors.cert_vectors()[0].name == load_vectors("certs")["vectors"][0]["name"]
    (package / "_spec").unlink()
    assert vectors.spec_dir() == SPEC  # the checkout's
    monkeypatch.setattr(vectors, "CHECKOUT_SPEC", tmp_path / "spec")
    with pytest.raises(vectors.VectorsUnavailable) as e:
        vectors.spec_dir()
    assert str(e.value) == (
        "no golden vectors: the installed package has no _spec/ and there is no checkout's "
        f"{tmp_path / 'spec'}: pass --spec DIR, the spec/ folder of a ghcb checkout"
    )
    assert vectors.spec_dir(SPEC) == SPEC
