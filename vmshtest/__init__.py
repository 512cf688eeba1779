"""vmshtest - what vmsh's end-to-end tests, benchmarks and demo share: the
KVM host (direct, or the emulated L1) and guests (harness), the agent that
runs on that host (hostagent), `vmsh serve` sessions and disks (devices),
the tools image (tools_image). Import it from the repository's root:
pytest does (pytest.ini: pythonpath), scripts run as `python3 -m`."""
