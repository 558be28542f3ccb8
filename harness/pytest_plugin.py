"""pytest plugin: `--kernel`/`--accel` options and kernel, kmod_build, image and vm fixtures.

Registered as a `pytest11` entry point, so any project's tests can boot our
guests.  Every test that uses a guest is parametrized by kernel (the id reads
`[6.1]`), and fails if the guest's console shows a new splat during the test,
or its boot showed one (the guest was broken before the test began), unless
it is marked `expect_splat` and looks at them itself.  On a kernel with
lockdep a passing test also needs lockdep still on (`debug_locks` 1): a
lockdep-clean result from a lockdep that had turned itself off means nothing.
The session's shared guest is replaced after any splat.  `--guest-packages`
(or the `guest_packages` ini line) puts Debian packages in every guest;
`vm_factory(guest_packages=...)` adds more for one guest.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from . import kernels
from .errors import HarnessError
from .exitcodes import ExitStatus
from .guest.image import GuestExtra, Image, build_image
from .guest.packages import parse_names as parse_package_names
from .guest.splat import new_splats
from .guest.vm import ACCELS, Vm, VmConfig

_VM_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "kernel-module harness")
    group.addoption(
        "--kernel",
        default=kernels.DEFAULT_KERNEL,
        help=f"kernel spec(s) for VM tests: comma list of {', '.join(kernels.ROWS)} or PATHs of "
        "kernel build trees or installed roots, or all",
    )
    group.addoption("--accel", default="auto", choices=ACCELS, help="QEMU accelerator (auto checks KVM)")
    group.addoption(
        "--cold-boot",
        action="store_true",
        help="boot every guest instead of restoring its kernel's saved base guest (and save none)",
    )
    group.addoption(
        "--keep-console-logs",
        action="store_true",
        help="keep the console logs of passing tests too (the claims matrix page links them)",
    )
    group.addoption(
        "--guest-packages",
        action="append",
        default=None,
        metavar="PKG,PKG",
        help="Debian packages (with their dependencies) in every guest; overrides the guest_packages ini line",
    )
    group.addoption(
        "--kcidb",
        default=None,
        metavar="FILE",
        help="write a KCIDB submission of the session's tests at its end (needs kcidb-io)",
    )
    group.addoption(
        "--kcidb-origin",
        default="harness",
        metavar="NAME",
        help="the KCIDB origin (lower-case letters, digits, _; default harness)",
    )
    group.addoption(
        "--kcidb-log-url",
        default=None,
        metavar="PREFIX",
        help="console logs' URLs in the KCIDB submission: PREFIX/NAME (default: file:// URLs)",
    )
    group.addoption(
        "--kconfig",
        action="append",
        default=None,
        metavar="CONFIG_X=V|FRAGMENT",
        help="a config option or fragment on each kernel built from source; overrides the kconfig ini line",
    )
    group.addoption(
        "--patch",
        action="append",
        default=None,
        metavar="FILE|DIR",
        help="a patch (or a folder of them) on each kernel built from source; overrides the patches ini line",
    )
    parser.addini("kconfig", type="args", default=[], help="config options or fragments: CONFIG_UHID=m my.config")
    parser.addini("patches", type="args", default=[], help="patches (or folders of them) in order, ini-relative")
    parser.addini(
        "guest_packages",
        type="args",
        default=[],
        help="Debian packages (with their dependencies) in every guest: bash python3-minimal",
    )


def _kernel_rows(config: pytest.Config) -> list[kernels.KernelRow]:
    """--kernel, each row derived by the options and patches (command line over ini)."""
    from .kernels import derive

    asked_k, asked_p = config.getoption("--kconfig"), config.getoption("--patch")
    base = config.inipath.parent if config.inipath else Path.cwd()
    options = derive.read_options(asked_k if asked_k is not None else config.getini("kconfig"))
    patches = asked_p if asked_p is not None else [str(base / p) for p in config.getini("patches")]
    rows = derive.parse_kernels(config.getoption("--kernel"), base)
    return derive.derive_all(rows, options, derive.read_patches(patches))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner cancelling the job): the session stops as on
    Ctrl-C, every fixture's guest is torn down, and it exits 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
    if not _IN_WORKER:
        _forward_to_workers(signum)
    raise Terminated()


def _on_sigint(signum: int, frame: object) -> None:
    _forward_to_workers(signum)
    raise KeyboardInterrupt()


def _die_with_controller() -> None:
    """An xdist worker gets SIGTERM (and so tears its guests down) the moment
    its controller dies, even by SIGKILL; else it notices seconds later.
    xdist starts its workers from the controller's main thread, which lives
    as long as the controller does (PR_SET_PDEATHSIG follows the thread)."""
    from .guest.qemu import die_with_parent

    parent = os.getppid()
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the controller died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _forward_to_workers(signum: int) -> None:
    """xdist's workers are this process's children and get no signal of their
    own: without it they tear their guests down only when the controller's
    shutdown reaches them, seconds later.  Each gets the signal now."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        comm, fields = head.partition("(")[2], rest.split()
        # The workers only (python): the controller's own children under a
        # plain session are its guests' QEMUs, which their fixtures tear down.
        if fields[1] == me and comm.startswith("python"):
            try:
                os.kill(int(stat.parent.name), signum)
            except (ProcessLookupError, PermissionError):
                pass


def pytest_configure(config: pytest.Config) -> None:
    global _IN_WORKER
    _IN_WORKER = hasattr(config, "workerinput")
    # A KeyboardInterrupt stops the session where a test would only fail on
    # an exception (pytest's default SIGTERM death leaves the next tests to boot).
    _TERMINATED.clear()
    _INTERRUPTED.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        if _IN_WORKER:
            _die_with_controller()
        elif signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    for line in (
        "vm: boots a real kernel in QEMU",
        "fresh_vm: the test gets a guest of its own",
        "expect_splat: the test provokes splats and checks them itself",
    ):
        config.addinivalue_line("markers", line)
    try:
        config._harness_specs = _kernel_rows(config)  # type: ignore[attr-defined]
        asked = config.getoption("--guest-packages")
        config._harness_packages = parse_package_names(  # type: ignore[attr-defined]
            config.getini("guest_packages") if asked is None else asked
        )
        _check_workers(config)
        _KCIDB_RECORDS.clear()  # one session's (pytest run in-process again)
        if config.getoption("--kcidb"):
            _check_kcidb(config)
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from e


def _check_workers(config: pytest.Config) -> None:
    """pytest-xdist's -n N: N workers boot guests at once (the controller only)."""
    from .guest.vmconfig import check_parallel

    asked = getattr(config.option, "numprocesses", None)
    if _IN_WORKER or not asked:
        return
    n = (os.cpu_count() or 1) if asked in ("auto", "logical") else int(asked)
    warning = check_parallel(n)
    if warning:
        print(f"harness: {warning}", file=sys.stderr)


def _check_kcidb(config: pytest.Config) -> None:
    from .reports import kcidb

    path = Path(config.getoption("--kcidb"))
    if path.is_dir():
        raise HarnessError(f"--kcidb {path} is a folder; give a file name")
    try:  # its folder is made, as --junitxml's is (make matrix on a clean clone has no build/matrix yet)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"--kcidb {path}: cannot make its folder ({e.strerror})") from e
    kcidb.check_origin(config.getoption("--kcidb-origin"))
    kcidb.require_kcidb()


_KCIDB_RECORDS: list[dict] = []


class _JsonDict(dict):
    """A property's dict that prints as JSON: pytest's --junitxml writes each
    property as str(value), which for a plain dict is Python text."""

    def __str__(self) -> str:
        return json.dumps(self, sort_keys=True, default=str)


class _JsonList(list):
    def __str__(self) -> str:
        return json.dumps(self, default=str)


_AS_JSON: dict[type, type] = {dict: _JsonDict, list: _JsonList}
_IN_WORKER = False


@pytest.hookimpl(tryfirst=True)  # before junitxml's hook reads the properties
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """The report phases for --kcidb (the xdist controller gets every worker's);
    dict and list properties made to print as JSON in --junitxml."""
    if not _IN_WORKER:  # an xdist worker sends its reports with execnet, which knows no subclasses
        report.user_properties = [
            (k, _AS_JSON[type(v)](v) if type(v) in _AS_JSON else v) for k, v in report.user_properties
        ]
    _KCIDB_RECORDS.append(
        {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
            "user_properties": [list(p) for p in report.user_properties],
            "longrepr": str(report.longrepr)[-2000:] if report.failed else "",
        }
    )


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    (_TERMINATED if isinstance(excinfo.value, Terminated) else _INTERRUPTED).set()


_TERMINATED = threading.Event()
_INTERRUPTED = threading.Event()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every fixture's teardown: a session stopped by SIGTERM exits
    143 and one stopped by Ctrl-C 130, as the harness's commands do, where
    pytest would say 2 for both (and for a usage error)."""
    _write_kcidb(session)
    if _TERMINATED.is_set():
        session.exitstatus = ExitStatus.TERMINATED
    elif _INTERRUPTED.is_set():
        session.exitstatus = ExitStatus.INTERRUPTED


def _write_kcidb(session: pytest.Session) -> None:
    config = session.config
    out = config.getoption("--kcidb")
    if not out or hasattr(config, "workerinput"):
        return
    from .reports import kcidb

    known = (*kernels.ROWS, *(s.name for s in getattr(config, "_harness_specs", ())))
    doc = kcidb.pytest_submission(
        _KCIDB_RECORDS, known, config.getoption("--kcidb-origin"), config.getoption("--kcidb-log-url")
    )
    kcidb.write(doc, Path(out))


def kernel_properties(kfiles: kernels.KernelFiles) -> list[tuple[str, Any]]:
    """What a test's report says of its kernel (JUnit properties, the matrix, KCIDB's build)."""
    try:
        lockdep, kasan = kfiles.lockdep, kfiles.kasan
    except OSError:  # a tree without boot/config-RELEASE
        lockdep = kasan = False
    return [
        ("kernel_release", kfiles.release),
        ("kernel_describe", kfiles.describe),
        (
            "kernel_config",
            {"config_name": f"config-{kfiles.release}", "version": kfiles.version, "lockdep": lockdep, "kasan": kasan},
        ),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_spec" in metafunc.fixturenames:
        specs = metafunc.config._harness_specs  # type: ignore[attr-defined]
        metafunc.parametrize("kernel_spec", specs, ids=[s.name for s in specs], scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kernel_spec" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def kernel(kernel_spec: kernels.KernelRow) -> kernels.KernelFiles:
    """The unpacked kernel (fetched on first use)."""
    return _or_fail(lambda: kernels.fetch(kernel_spec, quiet=True))


@pytest.fixture(scope="session")
def guest_packages(pytestconfig: pytest.Config) -> tuple[str, ...]:
    """The session's guest packages (`--guest-packages`, else the ini's `guest_packages`)."""
    return pytestconfig._harness_packages  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def image(kernel: kernels.KernelFiles, guest_packages: tuple[str, ...]) -> Image:
    """The guest image of that kernel: the base with the session's guest packages."""
    return _or_fail(lambda: build_image(kernel, packages=guest_packages))


@pytest.fixture(scope="session")
def kmod_build(request: pytest.FixtureRequest, kernel: kernels.KernelFiles) -> Callable[..., tuple[Path, ...]]:
    """`kmod_build(DIR)`: the .ko files of a kbuild module directory (a
    relative DIR is taken from the rootdir), built for the test's kernel in
    its build root and cached by content; a compile error fails the test with
    its first error and the log's path."""
    from .kernels import modbuild

    def build(src: str | Path) -> tuple[Path, ...]:
        path = request.config.rootpath / src
        return _or_fail(lambda: modbuild.build_dir(kernel, path)).ko_files

    return build


@pytest.fixture(scope="session")
def vm_config(pytestconfig: pytest.Config) -> VmConfig:
    return VmConfig(accel=pytestconfig.getoption("--accel"), cold_boot=pytestconfig.getoption("--cold-boot"))


@pytest.fixture(scope="session")
def _session_vms() -> Iterator[dict]:
    vms: dict = {}
    yield vms
    for vm in vms.values():
        vm.kill()


@pytest.fixture
def vm_factory(
    request: pytest.FixtureRequest, kernel: kernels.KernelFiles, vm_config: VmConfig, guest_packages: tuple[str, ...]
) -> Iterator[Callable[..., Vm]]:
    """Boot a guest with extra modules/files/config/packages (on top of the
    session's); torn down after the test."""
    booted: list[Vm] = []
    session_packages = guest_packages

    def make(
        modules: Sequence[Path] = (),
        extras: tuple[GuestExtra, ...] = (),
        config: VmConfig | None = None,
        name: str | None = None,
        kmods: tuple[str, ...] = (),
        guest_packages: tuple[str, ...] = (),
    ) -> Vm:
        img = _or_fail(
            lambda: build_image(
                kernel,
                tuple(modules),
                tuple(extras),
                tuple(kmods),
                parse_package_names((*session_packages, *guest_packages)),
            )
        )
        # A test's own config keeps the session's --cold-boot.
        config = replace(config, cold_boot=config.cold_boot or vm_config.cold_boot) if config else vm_config
        vm = Vm(img, config, name=name or request.node.name.replace("/", "_")[:40])
        booted.append(vm)
        _or_fail(vm.boot)
        _watch(request.node, vm)
        return vm

    yield make
    for vm in booted:
        vm.kill()
        _drop_log_if_passed(request.node, vm)


@pytest.fixture
def vm(request: pytest.FixtureRequest, image: Image, vm_config: VmConfig, _session_vms: dict) -> Iterator[Vm]:
    """A booted guest: shared by the session unless the test is `fresh_vm`."""
    if request.node.get_closest_marker("fresh_vm"):
        guest = Vm(image, vm_config, name=request.node.name[:40])
        _or_fail(guest.boot)
        _watch(request.node, guest)
        yield guest
        guest.kill()
        _drop_log_if_passed(request.node, guest)
        return
    key = image.kernel.name  # unique per kernel of the session (two local trees may share a release)
    shared: Vm | None = _session_vms.get(key)
    if shared is None or not shared.alive():
        shared = Vm(image, vm_config, name="session")
        _or_fail(shared.boot)
        _session_vms[key] = shared
    offset = _watch(request.node, shared)
    yield shared
    # A test that killed the guest, or left a splat in it (a sanitiser that
    # reported may not report again), spoils it for nobody else.
    if not shared.alive() or shared.boot_splats or new_splats(shared.console_text(), offset):
        shared.kill()
        _session_vms.pop(key, None)


def _or_fail(fn: Callable):
    try:
        return fn()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)


def _watch(item: pytest.Item, vm: Vm) -> int:
    """Remember where the console stood when the test started."""
    offset = vm.console_size()
    item.stash.setdefault(_VM_KEY, []).append((vm, offset))
    return offset


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    kfiles = getattr(item, "funcargs", {}).get("kernel")
    if call.when == "call" and isinstance(kfiles, kernels.KernelFiles):
        # The kernel as JUnit properties (--junitxml) and for the claims matrix and --kcidb.
        have = {k for k, _ in item.user_properties}
        if "kernel" not in have:
            item.user_properties.append(("kernel", kfiles.name))
        item.user_properties += [p for p in kernel_properties(kfiles) if p[0] not in have]
    if call.when == "call" and item.stash.get(_VM_KEY, []):
        # A report's user properties travel to the xdist controller: the claims matrix links the logs.
        logs = [str(vm.log_path) for vm, _ in item.stash[_VM_KEY]]
        item.user_properties.append(("console_logs", logs))
        item.user_properties.append(
            ("guest_starts", [vm.start.to_json() if vm.start else None for vm, _ in item.stash[_VM_KEY]])
        )
    outcome: Any = yield
    report = outcome.get_result()
    if call.when != "call":
        return
    item.stash[_LAST_KEY] = report
    for vm, offset in item.stash.get(_VM_KEY, []):
        report.sections.append((f"console log ({vm.name})", str(vm.log_path)))
        if item.get_closest_marker("expect_splat") or not report.passed:
            continue
        why = _guest_problem(vm, offset)
        if why:
            report.outcome = "failed"
            report.longrepr = f"{why}\n\nconsole log: {vm.log_path}"


def _guest_problem(vm: Vm, offset: int) -> str:
    """Why a passing test's guest cannot vouch for it ("" if it can)."""
    if vm.boot_splats:
        return "the guest was broken before the test began: its boot showed splat(s):\n\n" + "\n\n".join(
            "\n".join(s.lines) for s in vm.boot_splats
        )
    splats = new_splats(vm.console_text(), offset)
    if splats:
        return "new console splat(s) during the test:\n\n" + "\n\n".join("\n".join(s.lines) for s in splats)
    from .race.engine import debug_locks  # not on import: other projects load this plugin

    if vm.alive() and vm.image.kernel.lockdep and debug_locks(vm) is False:
        return (
            "lockdep was off at the end of the test (debug_locks 0) with no report on the console: "
            "its lockdep-clean result means nothing"
        )
    return ""


_LAST_KEY = pytest.StashKey[pytest.TestReport]()


def _drop_log_if_passed(item: pytest.Item, vm: Vm) -> None:
    """Console logs are kept for failing tests only (fresh guests)."""
    report = item.stash.get(_LAST_KEY, None)
    if item.config.getoption("--keep-console-logs"):
        return
    if report is not None and report.passed and vm.log_path.is_file():
        vm.log_path.unlink()
