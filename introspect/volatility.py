"""volatility3 as a library on a live RAM file: the reference task list and kernel log.

Setup (automagic: layer stacking, banner -> symbol table) costs ~2 s once; after that
each sample clears volatility's read and translation caches, which would otherwise
serve a frozen picture of a running guest. Works on guests below 2816 MiB of RAM:
above that, q35 splits RAM in the file and volatility's raw-file layer does not know.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import IntrospectError
from .symbols import SymbolFiles

log = logging.getLogger(__name__)


class VolatilityReader:
    """volatility3 ``linux.pslist`` and ``linux.kmsg`` on one guest's RAM file."""

    def __init__(self, ram_path: Path, files: SymbolFiles, guest: str):
        try:
            import volatility3.plugins
            from volatility3 import framework
            from volatility3.framework import automagic, constants, contexts, plugins
            from volatility3.plugins.linux import kmsg, pslist
        except ImportError as exc:
            raise IntrospectError("volatility3 missing: pip install 'vmroc[volatility]'") from exc
        self.guest = guest
        self._pslist, self._kmsg = pslist, kmsg
        symdir = files.isf.parent / "volatility"
        link = symdir / "linux" / "vmlinux.json"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(files.isf)
        if str(symdir) not in constants.SYMBOL_BASEPATHS:
            constants.SYMBOL_BASEPATHS.insert(0, str(symdir))
        framework.import_files(volatility3.plugins, True)
        self.ctx = contexts.Context()
        self.ctx.config["automagic.LayerStacker.single_location"] = \
            Path(ram_path).resolve().as_uri()
        autos = automagic.choose_automagic(automagic.available(self.ctx), pslist.PsList)
        try:
            plugin = plugins.construct_plugin(self.ctx, autos, pslist.PsList, "plugins", None, None)
        except Exception as exc:  # volatility raises its own unrelated types
            raise IntrospectError(f"guest {guest}: volatility3 could not stack {ram_path} "
                                  f"with the vmroc symbols ({exc})") from exc
        self.config = plugin.config
        self.kernel = plugin.config["kernel"]
        self.seen_lines = 0

    def _clear_caches(self) -> None:
        for layer in self.ctx.layers.values():
            for cls in type(layer).__mro__:
                for attr in vars(cls).values():
                    clear = getattr(attr, "cache_clear", None)
                    if clear is not None:
                        clear()

    def tasks(self) -> list[dict]:
        """Processes as ``linux.pslist`` lists them: pid, ppid, comm."""
        self._clear_caches()
        out = []
        for task in self._pslist.PsList.list_tasks(self.ctx, self.kernel):
            out.append({"pid": int(task.tgid), "ppid": int(task.get_parent_pid()),
                        "comm": task.comm.cast("string", max_length=16, errors="replace")})
        return out

    def log_lines(self) -> list[str]:
        """Every record of the kernel log, as ``linux.kmsg`` renders it."""
        self._clear_caches()
        return [f"[{ts}] {text}" for _fac, _lvl, ts, _caller, text in
                self._kmsg.ABCKmsg.run_all(self.ctx, self.config)]

    def new_log_lines(self) -> list[str]:
        lines = self.log_lines()
        new = lines[self.seen_lines:] if len(lines) >= self.seen_lines else lines
        self.seen_lines = len(lines)
        return new
