"""The test harness: real processes for the tests and benchmarks, each started and stopped by PID.

- processes: the one `free_port`, the one process stopper (`stop_process`, `stop_processes`),
  bounded commands, file locks, process lookups.
- sshd, ssh_client, accounts, netns: real OpenSSH servers, client keys/known_hosts/ssh_config,
  a password account, network namespaces as remote hosts.
- runtime, runtime_api, kernel_client: `jupyter colabremote serve` as a subprocess, its REST and
  kernel WebSocket.
- companion: the companion CLI as real processes.
- browser: headless Chromium posing as Colab. gateway, enterprise_gateway (+ eg_launcher):
  kernel gateways. container: a private podman with a minimal image. load: the load driver.
  install_env: offline pip, the wheelhouse. foreign_os: Windows-/macOS-like interpreter states.
- fixtures: the pytest fixtures (tests/conftest.py registers them).

Benchmarks import it as `tests.harness` (`python -m bench.NAME` from the repository root).
"""

from pathlib import Path

#: The repository's root directory (where `tests` and `bench` are importable from).
ROOT = Path(__file__).resolve().parents[2]
