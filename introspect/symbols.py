"""Build (and cache) the symbol files of a kernel: ``build_isf(kernel_image, modules)``.

The result lives under ``vmroc.home.subdir("symbols")/<release>-<key>/`` where the key
hashes the kernel image, the module files and ``BUILDER_VERSION``; a second build of
the same inputs is a cache hit. Files:

- ``vmlinux.json``     volatility3 ISF 6.2.0 (also ``vmlinux.json.xz``)
- ``libvmi.json``      LibVMI copy: signed addresses + ``phys_startup_64``
- ``meta.json``        release, banner, hashes, counts and build timings

``SymbolTable.load(files)`` gives fast direct lookups (address, member offset, size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmroc import home

from .btf import Btf, parse_btf
from .errors import IntrospectError, KernelImageError, SymbolLookupError
from .isf import IsfBuilder, libvmi_variant
from .kallsyms import parse_kallsyms
from .kernel_image import ElfImage, extract_vmlinux

log = logging.getLogger(__name__)

BUILDER_VERSION = "2"  # bump when the output changes for the same inputs
ISF_NAME, ISF_XZ_NAME, LIBVMI_NAME, META_NAME = (
    "vmlinux.json", "vmlinux.json.xz", "libvmi.json", "meta.json")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SymbolFiles:
    """Paths of one kernel's symbol files, plus what ``meta.json`` says about them."""

    directory: Path
    release: str
    banner: str
    cached: bool = False
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def isf(self) -> Path:
        """volatility3 ISF (plain JSON: fastest to load)."""
        return self.directory / ISF_NAME

    @property
    def isf_xz(self) -> Path:
        return self.directory / ISF_XZ_NAME

    @property
    def libvmi(self) -> Path:
        """ISF copy for LibVMI's ``volatility_ist``."""
        return self.directory / LIBVMI_NAME

    @property
    def isf_url(self) -> str:
        return self.isf.resolve().as_uri()

    def table(self) -> "SymbolTable":
        return SymbolTable.load(self.isf)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    return data


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in (".xz", ".ko"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace("-", "_")


def cache_key(kernel_image: Path, modules: list[Path]) -> tuple[str, dict[str, str]]:
    """(key, {file name: sha256}) for the inputs of a build."""
    hashes = {Path(kernel_image).name: _sha256(kernel_image)}
    h = hashlib.sha256(f"{BUILDER_VERSION}\nkernel={hashes[Path(kernel_image).name]}\n".encode())
    for mod in sorted(modules, key=_module_name):  # the module name names its types
        hashes[Path(mod).name] = digest = _sha256(mod)
        h.update(f"{_module_name(mod)}={digest}\n".encode())
    return h.hexdigest()[:16], hashes


def build_isf(kernel_image: Path, modules: list[Path] | tuple = (), *,
              cache_dir: Path | None = None, force: bool = False,
              write_xz: bool = True, progress: Progress | None = None) -> SymbolFiles:
    """Symbol files for ``kernel_image`` (bzImage or vmlinux) and module ``.ko`` files.

    Cached by content under ``vmroc.home.subdir("symbols")`` unless ``force``.
    """
    kernel_image = Path(kernel_image)
    modules = [Path(m) for m in modules]
    for path in [kernel_image, *modules]:
        if not path.is_file():
            raise KernelImageError(f"{path}: no such file")
    say = progress or (lambda msg: None)
    root = Path(cache_dir) if cache_dir else home.subdir("symbols")
    key, hashes = cache_key(kernel_image, modules)
    for existing in root.glob(f"*-{key}"):
        meta_path = existing / META_NAME
        if not force and meta_path.is_file() and (existing / ISF_NAME).is_file():
            meta = json.loads(meta_path.read_text())
            say(f"cache hit: {existing}")
            log.info("symbols for %s: cache hit %s", kernel_image, existing)
            return SymbolFiles(existing, meta["release"], meta["banner"], True, meta)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    say(f"extracting vmlinux from {kernel_image}")
    elf = ElfImage(extract_vmlinux(kernel_image), str(kernel_image))
    if ".BTF" not in elf.sections:
        raise KernelImageError(f"{kernel_image}: no .BTF section: this kernel was built "
                               "without CONFIG_DEBUG_INFO_BTF and vmroc reads every type "
                               "from BTF; use a kernel with BTF (Debian's 6.1 kernels have it)")
    timings["extract_s"] = time.perf_counter() - t

    t = time.perf_counter()
    say("recovering symbols from kallsyms")
    ksyms = parse_kallsyms(elf)
    timings["kallsyms_s"] = time.perf_counter() - t
    say(f"  {len(ksyms)} symbols")

    t = time.perf_counter()
    say("reading BTF types")
    vmlinux_btf = parse_btf(elf.section(".BTF"), name="vmlinux")
    mod_btfs: dict[str, Btf] = {}
    for mod in modules:
        name = _module_name(mod)
        mod_elf = ElfImage(_read_module(mod), str(mod))
        mod_btfs[name] = parse_btf(mod_elf.section(".BTF"), base=vmlinux_btf, name=name)
    timings["btf_s"] = time.perf_counter() - t
    say(f"  {len(vmlinux_btf)} vmlinux types, "
        + ", ".join(f"{n}: {len(b.own_types)}" for n, b in mod_btfs.items()))

    t = time.perf_counter()
    say("converting to ISF")
    banner = _banner(elf, ksyms)
    builder = IsfBuilder(vmlinux_btf, mod_btfs)
    builder.add_all_types()
    builder.add_symbols(ksyms, banner)
    isf = builder.isf(_producer_version(), hashes)
    timings["convert_s"] = time.perf_counter() - t

    release = _release(banner)
    final = root / f"{_safe(release)}-{key}"
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        t = time.perf_counter()
        say(f"writing {final}")
        text = json.dumps(isf, separators=(",", ":"))
        (tmp / ISF_NAME).write_text(text)
        (tmp / LIBVMI_NAME).write_text(json.dumps(libvmi_variant(isf, ksyms),
                                                  separators=(",", ":")))
        timings["write_s"] = time.perf_counter() - t
        if write_xz:
            t = time.perf_counter()
            with lzma.open(tmp / ISF_XZ_NAME, "wt", preset=1) as f:
                f.write(text)
            timings["write_xz_s"] = time.perf_counter() - t
        meta = {
            "builder_version": BUILDER_VERSION,
            "kernel_image": str(kernel_image),
            "modules": [str(m) for m in modules],
            "sha256": hashes,
            "release": release,
            "banner": banner.decode("latin-1"),
            "percpu": [ksyms.address("__per_cpu_start"), ksyms.address("__per_cpu_end")]
            if "__per_cpu_start" in ksyms.index() else None,
            "counts": {"kallsyms": len(ksyms), "symbols": len(isf["symbols"]),
                       "typed_symbols": sum(1 for s in isf["symbols"].values() if "type" in s),
                       "btf_types": len(vmlinux_btf)
                                    + sum(len(b.own_types) for b in mod_btfs.values()),
                       "user_types": len(isf["user_types"]), "enums": len(isf["enums"])},
            "sizes": {p.name: p.stat().st_size for p in tmp.iterdir()},
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1))
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent build finished first: same inputs, same output
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("symbols for %s built in %s: %s", kernel_image, final, meta["timings"])
    return SymbolFiles(final, release, meta["banner"], False, meta)


def _producer_version() -> str:
    try:
        from importlib.metadata import version
        return f"{version('vmroc')}+isf{BUILDER_VERSION}"
    except Exception:  # noqa: BLE001 - not installed: running from the checkout
        return f"0+isf{BUILDER_VERSION}"


def _banner(elf: ElfImage, ksyms) -> bytes:
    try:
        return elf.read_cstring(ksyms.address("linux_banner"))
    except IntrospectError as exc:
        raise KernelImageError(f"{elf.name}: cannot read linux_banner: {exc}") from exc


def _release(banner: bytes) -> str:
    m = re.match(rb"Linux version (\S+)", banner)
    return m.group(1).decode() if m else "unknown"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


class SymbolTable:
    """Direct lookups in a built ISF: symbol addresses, member offsets, sizes.

    Addresses are link-time: add the KASLR offset for kernel addresses, but not for
    per-CPU symbols (``is_percpu``), which are offsets into each CPU's area.
    """

    def __init__(self, isf: dict, source: str = "<isf>"):
        self.source = source
        self.symbols: dict[str, dict] = isf["symbols"]
        self.user_types: dict[str, dict] = isf["user_types"]
        self.base_types: dict[str, dict] = isf["base_types"]
        self.enums: dict[str, dict] = isf["enums"]
        self._flat: dict[str, dict[str, tuple[int, dict]]] = {}
        self._constants: dict[str, int] | None = None
        banner = self.symbols.get("linux_banner", {}).get("constant_data")
        import base64
        self.banner = base64.b64decode(banner).decode("latin-1") if banner else ""

    @classmethod
    def load(cls, path: Path) -> "SymbolTable":
        path = Path(path)
        opener = lzma.open if path.suffix == ".xz" else open
        with opener(path, "rt") as f:
            return cls(json.load(f), str(path))

    def address(self, name: str) -> int:
        """Link-time address of symbol ``name``."""
        try:
            return self.symbols[name]["address"]
        except KeyError:
            raise SymbolLookupError(f"symbol {name!r} not in {self.source}") from None

    def has_symbol(self, name: str) -> bool:
        return name in self.symbols

    def is_percpu(self, name: str) -> bool:
        """True for per-CPU variables (small offsets, never KASLR-shifted)."""
        return self.address(name) < 1 << 47

    def symbol_type(self, name: str) -> dict | None:
        self.address(name)
        return self.symbols[name].get("type")

    def members(self, type_name: str) -> dict[str, tuple[int, dict]]:
        """member -> (offset, type descriptor), anonymous members flattened."""
        flat = self._flat.get(type_name)
        if flat is None:
            flat = self._flat[type_name] = {}
            self._flatten(self._user_type(type_name), 0, flat)
        return flat

    def _flatten(self, utype: dict, base: int, out: dict) -> None:
        for name, fld in utype["fields"].items():
            if fld.get("anonymous"):
                self._flatten(self._user_type(fld["type"]["name"]), base + fld["offset"], out)
            else:
                out[name] = (base + fld["offset"], fld["type"])

    def _user_type(self, type_name: str) -> dict:
        try:
            return self.user_types[type_name]
        except KeyError:
            raise SymbolLookupError(f"type {type_name!r} not in {self.source}") from None

    def offset(self, type_name: str, member: str) -> int:
        """Byte offset of ``member`` in ``type_name``; dotted paths (``se.vruntime``) and
        array indexes (``comm[0]``) are followed through embedded structs."""
        off, _ = self.member(type_name, member)
        return off

    def member(self, type_name: str, member: str) -> tuple[int, dict]:
        """(offset, type descriptor) of a possibly dotted member path."""
        total, cur = 0, type_name
        parts = member.split(".")
        desc: dict = {}
        for i, part in enumerate(parts):
            m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
            if not m:
                raise SymbolLookupError(f"bad member path {member!r}")
            try:
                off, desc = self.members(cur)[m[1]]
            except KeyError:
                raise SymbolLookupError(
                    f"type {cur!r} has no member {m[1]!r} (path {type_name}.{member})") from None
            total += off
            if m[2] is not None:
                if desc["kind"] != "array":
                    raise SymbolLookupError(f"{type_name}.{member}: {m[1]} is not an array")
                desc = desc["subtype"]
                total += int(m[2]) * self.size_of(desc)
            if i < len(parts) - 1:
                if desc["kind"] not in ("struct", "union"):
                    raise SymbolLookupError(
                        f"{type_name}.{member}: {m[1]} is a {desc['kind']}, not a struct")
                cur = desc["name"]
        return total, desc

    def size(self, type_name: str) -> int:
        """Size in bytes of a struct/union, enum or base type."""
        for table in (self.user_types, self.base_types, self.enums):
            if type_name in table:
                return table[type_name]["size"]
        raise SymbolLookupError(f"type {type_name!r} not in {self.source}")

    def size_of(self, desc: dict) -> int:
        """Size in bytes of a type descriptor."""
        kind = desc["kind"]
        if kind == "pointer":
            return self.base_types["pointer"]["size"]
        if kind == "array":
            return desc["count"] * self.size_of(desc["subtype"])
        if kind == "bitfield":
            return self.size_of(desc["type"])
        if kind == "function":
            return 0
        return self.size(desc["name"])

    def enum(self, name: str) -> dict[str, int]:
        try:
            return self.enums[name]["constants"]
        except KeyError:
            raise SymbolLookupError(f"enum {name!r} not in {self.source}") from None

    def constant(self, name: str) -> int:
        """The value of enumerator ``name`` in any enum, named or not (e.g. the
        anonymous enums of ``linux/snmp.h``)."""
        if self._constants is None:
            self._constants = {c: v for e in self.enums.values()
                               for c, v in e["constants"].items()}
        try:
            return self._constants[name]
        except KeyError:
            raise SymbolLookupError(f"enumerator {name!r} not in {self.source}") from None
