"""Low-level Linux isolation used inside a sandbox worker (ctypes; no extra dependencies).

The worker process is started by `unshare --user --map-root-user --net --mount --pid --fork
--mount-proc` (see pool.py), so it is PID 1 of fresh user, network, mount and PID namespaces and
still holds every capability *inside* them. `lock_down` then:

  1. makes every mount read-only, nosuid and nodev (one recursive `mount_setattr`, so no
     write reaches the host filesystem and no device node can be opened),
  2. mounts a private, size-limited tmpfs on /tmp (the only writable place; wiped per task;
     code folders that live under /tmp are bound back into it, read-only),
     and empty read-only tmpfs over $HOME and /run (hides tokens, caches and host sockets);
     folders under $HOME that Python needs (e.g. ~/.pyenv) are mounted back, read-only,
  3. drops every capability for good (bounding set, securebits NOROOT, no_new_privs), so
     neither the worker nor anything it forks can undo 1-2.
"""

from __future__ import annotations

import ctypes
import os
import resource

_libc = ctypes.CDLL(None, use_errno=True)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC = 1, 2, 4, 4096, 8192, 16384
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and aarch64 (new-style syscall table)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 4, 24, 28, 38
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
# SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | ..._LOCKED | KEEP_CAPS_LOCKED
SECUREBITS_LOCKED_NOROOT = 0x01 | 0x02 | 0x04 | 0x08 | 0x20


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def readonly(path: str = "/", recursive: bool = True) -> None:
    """Make the mount at `path` (and every mount below it) read-only, nosuid, nodev (Linux >= 5.12)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE if recursive else 0,
                         ctypes.byref(attr), ctypes.sizeof(attr)), f"mount_setattr({path}, read-only)")


def hide(path: str, keep: list[str]) -> None:
    """Cover `path` with an empty read-only tmpfs, then mount the `keep` folders below it back."""
    staged = []
    for i, k in enumerate(keep):  # bind each kept folder aside before it is covered
        stage = f"/tmp/.keep{i}"
        os.mkdir(stage)
        mount(k, stage, None, MS_BIND | MS_REC)
        staged.append((stage, k))
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for stage, k in staged:
        os.makedirs(k, exist_ok=True)
        mount(stage, k, None, MS_MOVE)
        os.rmdir(stage)
    readonly(path, recursive=False)


def drop_capabilities() -> None:
    """Lose every capability for good: empty bounding set, locked NOROOT securebits, no_new_privs."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
    prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_NOROOT)
    hdr = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def lock_down(tmp_size_mb: int, hide_dirs: list[str], keep: list[str] = (), tmp_keep: list[str] = ()) -> dict:
    """Steps 1-3 of the module docstring. Returns what was done (reported to the parent).

    `tmp_keep`: folders under /tmp (code: a checkout or venv there) bound back, read-only, into
    the private /tmp at the same paths."""
    readonly("/")
    # handles on the kept folders before the new /tmp covers them, bound back from /proc/self/fd
    fds = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in tmp_keep if os.path.isdir(p)]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size_mb}m,mode=1777")
    for path, fd in fds:
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        readonly(path)
        os.close(fd)
    hidden = []
    for path in hide_dirs:
        path = os.path.realpath(path)
        if os.path.isdir(path) and path not in ("/", "/tmp"):
            kept = [os.path.realpath(k) for k in keep]
            hide(path, sorted({k for k in kept if k.startswith(path + os.sep) and os.path.isdir(k)}))
            hidden.append(path)
    drop_capabilities()
    prctl(PR_SET_DUMPABLE, 0)  # tasks (same uid) cannot ptrace or read this worker's memory
    return {"readonly_root": True, "private_tmp_mb": tmp_size_mb, "hidden": hidden,
            "tmp_kept": [p for p, _ in fds], "capabilities": "dropped"}


def set_limits(cpu_s: int, memory_mb: int, nproc: int, fsize_mb: int, nofile: int = 64) -> None:
    """rlimits for a task process (inherited by anything it forks)."""
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * mb, memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_mb * mb, fsize_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
