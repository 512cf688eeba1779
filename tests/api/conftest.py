"""pytest fixtures for API tests: testvmm processes on this machine's /dev/kvm.

    testvmm            default layout (sparse slot ids, shared mapping, memfd, ROM, holes), 2 vCPUs
    testvmm_identity   one anonymous slot at gpa 0 with offset == gpa, like qemu's low RAM
    testvmm_two_vms    two VMs in one process
    testvmm_long       default layout, guest in 64-bit long mode with 4-level page tables
    testvmm_named      started with --name; .name holds it
    testvmm_sandboxed  a seccomp filter kills the process on any syscall outside its list
    testvmm_factory    start(args) -> TestVMM with any arguments; all stopped at teardown

No KVM is a failure, never a skip: these tests are the cheap check that vmsh
works against real KVM, and silently skipping them would hide that.
"""

import os
import subprocess
import uuid

import pytest

from testvmm import REPO, TestVMM, TestVMMError, testvmm_path


def _fail_without_kvm():
    if not os.path.exists("/dev/kvm"):
        pytest.fail("/dev/kvm does not exist: the API tests need KVM (hardware or KVM-PVM). "
                    "Run them through vmshtest/kvm_tier.py (make check-api), which boots the "
                    "emulated KVM host on such a machine.", pytrace=False)
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        pytest.fail(f"cannot open /dev/kvm read-write: {e}: the API tests need KVM", pytrace=False)


@pytest.fixture(scope="session")
def testvmm_binary():
    """build/testvmm, brought up to date unless VMSH_TESTVMM names a prebuilt one."""
    _fail_without_kvm()
    if "VMSH_TESTVMM" not in os.environ:
        r = subprocess.run(["make", "-s", "-f", "tests/fixtures/fixtures.mk", "build/testvmm"],
                           cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"building build/testvmm failed:\n{r.stdout}{r.stderr}", pytrace=False)
    path = testvmm_path()
    if not path.exists():
        pytest.fail(f"{path} does not exist (VMSH_TESTVMM={os.environ.get('VMSH_TESTVMM')})", pytrace=False)
    return path


@pytest.fixture
def testvmm_factory(testvmm_binary):
    started = []

    def start(args=()):
        try:
            vmm = TestVMM(args, binary=testvmm_binary)
        except TestVMMError as e:
            if "not in an AddressSanitizer build" in str(e):
                pytest.skip("testvmm is an ASan build, which cannot run --sandbox")
            # KVM_CREATE_VM failing, a guest that does not run: loud, not skipped
            pytest.fail(f"testvmm did not start: {e}", pytrace=False)
        started.append(vmm)
        return vmm

    yield start
    for vmm in started:
        vmm.stop()


@pytest.fixture
def testvmm(testvmm_factory):
    return testvmm_factory(["--vcpus", "2"])


@pytest.fixture
def testvmm_identity(testvmm_factory):
    return testvmm_factory(["--layout", "identity"])


@pytest.fixture
def testvmm_two_vms(testvmm_factory):
    return testvmm_factory(["--vms", "2"])


@pytest.fixture
def testvmm_long(testvmm_factory):
    return testvmm_factory(["--long-mode"])


@pytest.fixture
def testvmm_named(testvmm_factory):
    return testvmm_factory(["--name", f"vmsh-test-{uuid.uuid4().hex[:8]}"])


@pytest.fixture
def testvmm_sandboxed(testvmm_factory):
    return testvmm_factory(["--sandbox"])


def pytest_collection_modifyitems(config, items):
    """A test that starts testvmm needs KVM: it must carry the `kvm` marker,
    or kvm_tier.py would leave it on a machine without /dev/kvm."""
    unmarked = [i.nodeid for i in items
                if any(f.startswith("testvmm") for f in getattr(i, "fixturenames", ()))
                and i.get_closest_marker("kvm") is None]
    if unmarked:
        raise pytest.UsageError("tests that use testvmm without the kvm marker (pytestmark = "
                                "pytest.mark.kvm):\n  " + "\n  ".join(unmarked))
